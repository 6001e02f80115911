//! The service's HTTP API: JSON over HTTP with bearer tokens, documented in
//! `openapi.json` beside this file (served at `/v1/openapi.json`). Who may
//! do what: the admin token manages tenants; a tenant's token reaches only
//! that tenant's plugins and pipelines, and anything else looks missing
//! (`404`), so one tenant cannot even learn another's names. Errors are
//! `{"error": "…"}`: `401` without a valid token, `403` for the admin's
//! calls with a tenant's token (and the reverse) or past a quota (named),
//! `404`, `400` for bad input (pipeline files get `sluice check`'s
//! file:line:column messages), `409`, `413` over a size limit, `429` with
//! `Retry-After` when a rate is reached or a pipeline's queue is full.

mod observe;
mod pipelines;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use super::{Caller, Service, ServiceError};
use crate::control::http::{ApiError, BodyBudget};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    service: Arc<Service>,
    budget: BodyBudget,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match &e {
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::Quota(_) => StatusCode::FORBIDDEN,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The router of the whole API.
pub fn router(service: Arc<Service>) -> Router {
    let api = Api {
        service,
        // Four of the largest plugins being received at once.
        budget: BodyBudget::new(4 * super::MAX_UPLOAD as usize),
    };
    let guarded = Router::new()
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/v1/tenants/{tenant}",
            axum::routing::patch(tenants::patch).delete(tenants::delete),
        )
        .route("/v1/tenants/{tenant}/token", post(tenants::rotate))
        .route("/v1/plugins", get(tenants::plugins))
        .route(
            "/v1/plugins/{name}",
            put(tenants::push_plugin).get(tenants::plugin),
        )
        .route("/v1/pipelines", get(pipelines::list))
        .route(
            "/v1/pipelines/{name}",
            put(pipelines::apply)
                .get(pipelines::get)
                .delete(pipelines::delete),
        )
        .route("/v1/pipelines/{name}/stop", post(pipelines::stop))
        .route("/v1/pipelines/{name}/start", post(pipelines::start))
        .route(
            "/v1/pipelines/{name}/stages/{stage}/deploy",
            post(pipelines::deploy),
        )
        .route(
            "/v1/pipelines/{name}/stages/{stage}/rollback",
            post(pipelines::rollback),
        )
        .route("/v1/pipelines/{name}/ingest", post(pipelines::ingest))
        .route(
            "/v1/pipelines/{name}/dead-letters",
            get(pipelines::dead_letters),
        )
        .route("/metrics", get(observe::metrics))
        .route("/ui/api/pipelines", get(observe::list))
        .route("/ui/api/pipelines/{name}", get(observe::detail))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate));
    Router::new()
        .route(
            "/v1/health",
            get(|| async { axum::Json(serde_json::json!({ "ok": true })) }),
        )
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(crate::dashboard::assets())
        .merge(guarded)
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
        .with_state(api)
}

/// Finds the caller from its bearer token (else `401`), and holds a
/// tenant to its API call rate (else `429`).
async fn authenticate(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::control::token::bearer);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no token: send `Authorization: Bearer TOKEN`",
        )
        .into_response();
    };
    let Some(caller) = api.service.caller(token) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "the token is not valid").into_response();
    };
    if let Caller::Tenant(tenant) = &caller {
        let meters = api.service.meters(tenant);
        let rate = meters.api_rate.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(wait) = meters.api.take(1, rate) {
            return too_many(
                format!("quota `api_rate` of {rate} API calls per second reached"),
                wait,
            );
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `429` with `Retry-After: wait`.
fn too_many(message: String, wait: u64) -> Response {
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The tenant making a tenant's call (the admin gets `403`).
fn tenant_of(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::Tenant(t) => Ok(t),
        Caller::Admin => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this is a tenant's call: use a tenant's token",
        )),
    }
}

/// Only the admin (a tenant gets `403`).
fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Tenant(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the admin may manage tenants",
        )),
    }
}

/// Runs service work that blocks (it compiles plugins, waits for batches,
/// writes files) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// How long a request body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(120);

/// A JSON body of at most 64 KiB.
async fn json_body(api: &Api, body: axum::body::Body) -> Result<serde_json::Value, ApiError> {
    let (bytes, _held) = api.budget.read(body, 64 << 10, BODY_TIME).await?;
    if bytes.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}
