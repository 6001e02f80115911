//! The control endpoint of `sluice run`: `sluice deploy`, `rollback` and
//! `status` reach a running process through it. Every request must carry
//! the run's token (`Authorization: Bearer …`, see [`super::token`]); a
//! request from a web page (it has an `Origin`, or a `Sec-Fetch-Site` other
//! than `none`) or naming another host (DNS rebinding) is refused, so only
//! the user who started sluice can change what it runs.
//!
//! | request | does |
//! |---|---|
//! | `GET /status` | every stage's live version, probation, earlier versions, recent events (JSON) |
//! | `POST /deploy/{pipeline}/{stage}?name=FILE.wasm` with the `.wasm` as body | compiles, checks, `init`s it; live at the next batch (`200`), or why not (`422`); `name` labels the version |
//! | `POST /rollback/{pipeline}/{stage}` | puts the previous version back at the next batch |
//!
//! Errors are `{"error": "…"}`: `401` without the token, `403` from a
//! browser or for another host, `404` for an unknown stage, `413` for a
//! plugin over 64 MiB.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::http::{ApiError, BodyBudget};
use crate::plugin::{MAX_PLUGIN_BYTES, PluginHost};
use crate::reload::{self, StageEntry};
use crate::stage::StageStatus;
use crate::supervisor::{PipelineKey, Supervisor};

/// A pipeline in `GET /status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub pipeline: String,
    /// Its stages, in order.
    pub stages: Vec<serde_json::Value>,
    /// A partitioned pipeline's tasks in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<crate::tasks::TaskStatus>>,
}

/// What the endpoint's handlers share.
#[derive(Clone)]
struct Local {
    supervisor: Arc<Supervisor>,
    token: Arc<str>,
    /// `host:port` values a request's `Host` may name.
    hosts: Arc<[String]>,
    budget: BodyBudget,
}

/// The router of the endpoint listening on `address`, asking for `token`.
pub fn router(supervisor: Arc<Supervisor>, token: &str, address: std::net::SocketAddr) -> Router {
    let port = address.port();
    let mut hosts = vec![
        address.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    hosts.dedup();
    let local = Local {
        supervisor,
        token: token.into(),
        hosts: hosts.into(),
        // Two plugins of the largest size being received at once.
        budget: BodyBudget::new(2 * MAX_PLUGIN_BYTES as usize),
    };
    Router::new()
        .route("/status", get(status))
        .route("/deploy/{pipeline}/{stage}", post(deploy))
        .route("/rollback/{pipeline}/{stage}", post(rollback))
        .fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {} {}", request.method(), request.uri()),
            )
        })
        .layer(middleware::from_fn_with_state(local.clone(), guard))
        .with_state(local)
}

/// Only the user who started sluice, from outside a browser, at this host.
async fn guard(State(local): State<Local>, request: Request, next: Next) -> Response {
    if let Err(e) = check(&local, request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

fn check(local: &Local, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() != b"none")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from web pages are refused",
        ));
    }
    match text(header::HOST.as_str()) {
        Some(host) if local.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) => {}
        Some(host) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("`Host: {host}` is not this endpoint"),
            ));
        }
        None => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "no `Host` header"));
        }
    }
    let given = text(header::AUTHORIZATION.as_str()).and_then(super::token::bearer);
    match given {
        Some(token) if super::token::same(token.trim(), &local.token) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no token: `Authorization: Bearer TOKEN` is required (sluice deploy/status/rollback \
             read it from the file sluice run names in its log)",
        )),
    }
}

async fn status(State(local): State<Local>) -> Response {
    let pipelines: Vec<PipelineStatus> = local
        .supervisor
        .pipelines(None)
        .into_iter()
        .map(|p| PipelineStatus {
            pipeline: p.key.name,
            stages: p
                .stages
                .iter()
                .map(|e| {
                    let status: StageStatus = e.handle.status();
                    serde_json::to_value(&status).unwrap_or_default()
                })
                .collect(),
            tasks: p.tasks.map(|board| board.snapshot()),
        })
        .collect();
    axum::Json(pipelines).into_response()
}

#[derive(Deserialize)]
struct DeployQuery {
    name: Option<String>,
}

async fn deploy(
    State(local): State<Local>,
    Path((pipeline, stage)): Path<(String, String)>,
    Query(query): Query<DeployQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _held) = local
        .budget
        .read(body, MAX_PLUGIN_BYTES as usize, Duration::from_secs(120))
        .await?;
    let origin = query
        .name
        .filter(|n| !n.is_empty() && !n.contains('/') && n.len() <= 255)
        .map(PathBuf::from);
    change_version(local.supervisor, pipeline, stage, move |host, entry| {
        let stage = &entry.settings.name;
        let origin = origin.unwrap_or_else(|| PathBuf::from(format!("deployed-to-{stage}.wasm")));
        reload::deploy(host, entry, &origin, &bytes, "deploy")
            .map_err(|reason| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason))
    })
    .await
}

async fn rollback(
    State(local): State<Local>,
    Path((pipeline, stage)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    change_version(local.supervisor, pipeline, stage, |_, entry| {
        reload::rollback(entry).map_err(|reason| ApiError::new(StatusCode::CONFLICT, reason))
    })
    .await
}

/// Runs a change of one stage's version on a blocking thread (it compiles
/// or instantiates) and answers with the version that goes live next.
async fn change_version(
    supervisor: Arc<Supervisor>,
    pipeline: String,
    stage: String,
    change: impl FnOnce(&PluginHost, &StageEntry) -> Result<String, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let label = tokio::task::spawn_blocking(move || {
        let key = PipelineKey {
            tenant: None,
            name: pipeline.clone(),
        };
        let Some(entry) = supervisor.stage(&key, &stage) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no stage `{stage}` in pipeline `{pipeline}`"),
            ));
        };
        change(supervisor.host(), &entry)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request panicked: {e}"),
        ))
    })?;
    Ok(
        axum::Json(serde_json::json!({ "version": label, "live": "at the next batch" }))
            .into_response(),
    )
}
