//! `/metrics` and the dashboard's data on the service's listener: the
//! admin token sees every tenant's pipelines and the process's figures, a
//! tenant's token its own pipelines and series only (another tenant's
//! pipeline looks missing). The routes themselves are `dashboard`'s.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::Api;
use crate::control::http::ApiError;
use crate::dashboard::{self, DetailQuery, ListQuery, Scope};
use crate::service::Caller;

fn scope(caller: &Caller) -> Scope {
    match caller {
        Caller::Admin => Scope::All,
        Caller::Tenant(t) => Scope::Tenant(t.clone()),
    }
}

/// `GET /metrics`.
pub async fn metrics(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    dashboard::metrics(api.service.supervisor(), &scope(&caller))
}

/// `GET /ui/api/pipelines`.
pub async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Response {
    dashboard::list(api.service.supervisor(), &scope(&caller), &query)
}

/// `GET /ui/api/pipelines/{name}`.
pub async fn detail(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Response, ApiError> {
    dashboard::detail(api.service.supervisor(), &scope(&caller), &name, &query)
}
