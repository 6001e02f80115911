//! `/v1/pipelines`: a tenant's pipelines, their lifecycle, new plugin
//! versions for their stages, ingest and dead letters.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Api, BODY_TIME, blocking, json_body, tenant_of, too_many};
use crate::control::http::ApiError;
use crate::service::{Caller, Service, ServiceError};

/// Largest pipeline file.
const MAX_PIPELINE: usize = 1 << 20;

/// Most dead-lettered records one answer lists.
const DEAD_LETTERS: usize = 1000;

/// `GET /v1/pipelines`.
pub async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let list = blocking(move || service.statuses(&tenant)).await?;
    Ok(axum::Json(list).into_response())
}

/// `PUT /v1/pipelines/{name}` with the pipeline file: checked as `sluice
/// check` does, then created (`201`) or replaced (`200`) and started.
pub async fn apply(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let (bytes, _held) = api.budget.read(body, MAX_PIPELINE, BODY_TIME).await?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the pipeline file is not UTF-8"))?;
    let meters = api.service.meters(&tenant);
    let _compile = meters.compiles.acquire().await;
    let service = api.service.clone();
    let (t, n) = (tenant.clone(), name.clone());
    let created = blocking(move || service.apply(&t, &n, &text)).await?;
    let service = api.service.clone();
    let status = blocking(move || service.status(&tenant, &name)).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(status)).into_response())
}

/// `GET /v1/pipelines/{name}`.
pub async fn get(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let status = blocking(move || service.status(&tenant, &name)).await?;
    Ok(axum::Json(status).into_response())
}

/// `DELETE /v1/pipelines/{name}`: stopped, forgotten, its state deleted.
pub async fn delete(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    blocking(move || service.delete(&tenant, &name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/pipelines/{name}/stop`: the batches in flight finish and are
/// checkpointed; it stays stopped across restarts.
pub async fn stop(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    then_status(api, &caller, name, |service, tenant, name| {
        service.stop(tenant, name)
    })
    .await
}

/// `POST /v1/pipelines/{name}/start`: from its checkpoint.
pub async fn start(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    then_status(api, &caller, name, |service, tenant, name| {
        service.start(tenant, name)
    })
    .await
}

/// Does `action` to the caller's pipeline `name`, then answers with its
/// status.
async fn then_status(
    api: Api,
    caller: &Caller,
    name: String,
    action: impl FnOnce(&Service, &str, &str) -> Result<(), ServiceError> + Send + 'static,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(caller)?.to_string();
    let service = api.service.clone();
    let status = blocking(move || {
        action(&service, &tenant, &name)?;
        service.status(&tenant, &name)
    })
    .await?;
    Ok(axum::Json(status).into_response())
}

/// `POST …/stages/{stage}/deploy` `{"plugin": "name"}` or
/// `{"plugin": "name@sha256:…"}`: live at the next batch, on probation.
pub async fn deploy(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((name, stage)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let body = json_body(&api, body).await?;
    let plugin = body["plugin"]
        .as_str()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "expected {\"plugin\": \"name\"} or {\"plugin\": \"name@sha256:…\"}",
            )
        })?
        .to_string();
    let meters = api.service.meters(&tenant);
    let _compile = meters.compiles.acquire().await;
    let service = api.service.clone();
    let label = blocking(move || service.deploy(&tenant, &name, &stage, &plugin)).await?;
    Ok(
        axum::Json(serde_json::json!({ "version": label, "live": "at the next batch" }))
            .into_response(),
    )
}

/// `POST …/stages/{stage}/rollback`: the previous version, at the next
/// batch.
pub async fn rollback(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((name, stage)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let label = blocking(move || service.rollback(&tenant, &name, &stage)).await?;
    Ok(
        axum::Json(serde_json::json!({ "version": label, "live": "at the next batch" }))
            .into_response(),
    )
}

/// `POST /v1/pipelines/{name}/ingest` with records (lines, JSON lines, or
/// a JSON array: see the `http` source): `200 {"accepted": N}`, or `429`
/// with `Retry-After` when the tenant's ingest rate is reached or the
/// pipeline's queue is full. Nothing of a refused body is taken.
pub async fn ingest(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let (t, n) = (tenant.clone(), name.clone());
    let limit = blocking(move || service.ingest_limit(&t, &n)).await?;
    let (bytes, _held) = api.budget.read(body, limit, BODY_TIME).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Count first, so the rate is charged for what would be taken.
    let records = crate::source::http::body::parse(
        crate::source::http::BodyFormat::of(content_type.as_deref()),
        &bytes,
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let rate = api
        .service
        .quotas(&tenant)
        .map_err(ApiError::from)?
        .ingest_rate;
    if let Err(wait) = api
        .service
        .meters(&tenant)
        .ingest
        .take(records.len() as u64, rate)
    {
        return Ok(too_many(
            format!("quota `ingest_rate` of {rate} records per second reached"),
            wait,
        ));
    }
    let service = api.service.clone();
    let outcome =
        blocking(move || service.ingest(&tenant, &name, content_type.as_deref(), &bytes)).await?;
    Ok(crate::source::http::answer(outcome))
}

/// `GET /v1/pipelines/{name}/dead-letters`: the newest dead-lettered
/// records (up to 1,000), each with its stage and reason.
pub async fn dead_letters(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let records = blocking(move || service.dead_letters(&tenant, &name, DEAD_LETTERS)).await?;
    Ok(axum::Json(records).into_response())
}
