//! `/metrics` and the dashboard (`/ui/`), on `sluice serve`'s listener and
//! on the one `sluice run --metrics ADDR` opens.
//!
//! | route | serves |
//! |---|---|
//! | `GET /metrics` | the Prometheus text format of the pipelines in scope |
//! | `GET /ui/`, `/ui/app.js`, `/ui/style.css` | the page, every asset in the binary |
//! | `GET /ui/api/pipelines?q=&sort=&offset=&limit=` | a page of the pipeline list, with aggregates over all |
//! | `GET /ui/api/pipelines/{name}?tenant=T` | one pipeline's detail |
//!
//! Who sees what: under `sluice serve`, the admin token sees every tenant's
//! pipelines and the process's figures, a tenant's token only its own
//! pipelines and series (another's look missing), and no token gets `401`
//! (the API's own middleware decides; see `service::api`). Under `sluice
//! run`, `/metrics` needs no token — it holds figures and names only, and a
//! Prometheus server must be able to scrape it — while the page's data
//! (which shows plugin errors and dead-letter reasons, records' contents
//! among them) needs the run's control token, which the page asks for once
//! (or takes from `#token=…` in its address) and keeps in the tab's
//! session storage. The page and its assets themselves hold no data.
//!
//! The page draws its charts itself (SVG, no library) and polls every
//! second; the figures are summed up on the server ([`data`]).

pub mod data;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::control::http::ApiError;
use crate::supervisor::{PipelineKey, Supervisor};
use crate::telemetry::expose::{self, Exposed};
pub use data::{ListQuery, Scope};

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// What the page may load: itself, nothing from anywhere else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The page and its assets (no token: they hold no data).
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

/// Bytes of the page and its assets.
pub fn page_bytes() -> usize {
    INDEX.len() + APP.len() + STYLE.len()
}

/// `GET /metrics` for `scope`; the process's own figures only for
/// [`Scope::All`].
pub fn metrics(supervisor: &Supervisor, scope: &Scope) -> Response {
    let pipelines = scope.pipelines(supervisor);
    let exposed: Vec<Exposed<'_>> = pipelines
        .iter()
        .map(|p| Exposed {
            metrics: &p.metrics,
            up: matches!(p.state, crate::supervisor::RunState::Running),
        })
        .collect();
    let text = expose::render(&exposed, *scope == Scope::All);
    ([(header::CONTENT_TYPE, expose::CONTENT_TYPE)], text).into_response()
}

fn json(value: serde_json::Value) -> Response {
    let mut response = axum::Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /ui/api/pipelines` for `scope`.
pub fn list(supervisor: &Supervisor, scope: &Scope, query: &ListQuery) -> Response {
    json(data::list(&scope.pipelines(supervisor), query))
}

/// `GET /ui/api/pipelines/{name}` query.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    /// The pipeline's tenant (the service's admin names one; a tenant's
    /// own is implied).
    pub tenant: Option<String>,
}

/// `GET /ui/api/pipelines/{name}` for `scope`: `404` for a pipeline out of
/// scope, as for one that does not exist.
pub fn detail(
    supervisor: &Supervisor,
    scope: &Scope,
    name: &str,
    query: &DetailQuery,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no pipeline `{name}`"));
    let tenant = match scope {
        Scope::All => query.tenant.clone().filter(|t| !t.is_empty()),
        Scope::Tenant(own) => match &query.tenant {
            Some(t) if !t.is_empty() && t != own => return Err(missing()),
            _ => Some(own.clone()),
        },
    };
    let key = PipelineKey {
        tenant,
        name: name.to_string(),
    };
    let info = supervisor.pipeline(&key).ok_or_else(missing)?;
    Ok(json(data::detail(&info)))
}

/// What `sluice run`'s metrics listener shares.
#[derive(Clone)]
struct Local {
    supervisor: Arc<Supervisor>,
    token: Arc<str>,
}

/// The router of `sluice run --metrics ADDR`: `/metrics` open, the page's
/// data behind `token` (the run's control token).
pub fn run_router(supervisor: Arc<Supervisor>, token: &str) -> Router {
    let local = Local {
        supervisor,
        token: token.into(),
    };
    let data =
        Router::new()
            .route(
                "/ui/api/pipelines",
                get(
                    |State(l): State<Local>, Query(q): Query<ListQuery>| async move {
                        list(&l.supervisor, &Scope::All, &q)
                    },
                ),
            )
            .route(
                "/ui/api/pipelines/{name}",
                get(
                    |State(l): State<Local>,
                     Path(name): Path<String>,
                     Query(q): Query<DetailQuery>| async move {
                        detail(&l.supervisor, &Scope::All, &name, &q)
                    },
                ),
            )
            .layer(middleware::from_fn_with_state(local.clone(), guard));
    Router::new()
        .route(
            "/metrics",
            get(|State(l): State<Local>| async move { metrics(&l.supervisor, &Scope::All) }),
        )
        .merge(assets())
        .merge(data)
        .fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint: {} {}",
                    request.method(),
                    request.uri().path()
                ),
            )
        })
        .with_state(local)
}

/// The page's data needs the run's token.
async fn guard(State(local): State<Local>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::control::token::bearer);
    match given {
        Some(token) if crate::control::token::same(token, &local.token) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no token: the dashboard's data needs the run's control token \
             (`Authorization: Bearer TOKEN`; sluice run names its file in its log)",
        )
        .into_response(),
    }
}
