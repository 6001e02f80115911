//! `/v1/tenants` (the admin's) and `/v1/plugins` (a tenant's).

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Api, BODY_TIME, admin_only, blocking, json_body, tenant_of};
use crate::control::http::ApiError;
use crate::service::Caller;
use crate::service::tenant::Quotas;

/// `POST /v1/tenants` `{"name", "quotas"}` → `201 {"name", "token"}`.
pub async fn create(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let body = json_body(&api, body).await?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "`name` (text) is required"))?
        .to_string();
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !["name", "quotas"].contains(&k.as_str())))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown field `{extra}`, expected `name` or `quotas`"),
        ));
    }
    let quotas: Quotas = match body.get("quotas") {
        Some(q) => serde_json::from_value(q.clone())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("quotas: {e}")))?,
        None => Quotas::default(),
    };
    let service = api.service.clone();
    let shown = name.clone();
    let token = blocking(move || service.create_tenant(&name, quotas)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "name": shown, "token": token })),
    )
        .into_response())
}

/// `GET /v1/tenants`.
pub async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let service = api.service.clone();
    let tenants = blocking(move || service.tenants()).await?;
    Ok(axum::Json(tenants).into_response())
}

/// `PATCH /v1/tenants/{t}` `{"quotas": {…}}`: the quotas named change.
pub async fn patch(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let body = json_body(&api, body).await?;
    let service = api.service.clone();
    let shown = tenant.clone();
    let quotas = blocking(move || service.set_quotas(&tenant, body)).await?;
    Ok(axum::Json(serde_json::json!({ "name": shown, "quotas": quotas })).into_response())
}

/// `DELETE /v1/tenants/{t}`: stops its pipelines and deletes its data.
pub async fn delete(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let service = api.service.clone();
    blocking(move || service.delete_tenant(&tenant)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/tenants/{t}/token`: a new token; the old one stops working.
pub async fn rotate(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let service = api.service.clone();
    let shown = tenant.clone();
    let token = blocking(move || service.rotate_token(&tenant)).await?;
    Ok(axum::Json(serde_json::json!({ "name": shown, "token": token })).into_response())
}

/// `PUT /v1/plugins/{name}` with the `.wasm`: `201` for a new version,
/// `200` when these bytes are a version already.
pub async fn push_plugin(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let (bytes, _held) = api
        .budget
        .read(body, super::super::MAX_UPLOAD as usize, BODY_TIME)
        .await?;
    let meters = api.service.meters(&tenant);
    // One compile at a time per tenant: a flood of uploads is the
    // tenant's own wait.
    let _compile = meters.compiles.acquire().await;
    let service = api.service.clone();
    let shown = name.clone();
    let (version, new) = blocking(move || service.push_plugin(&tenant, &name, &bytes)).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(serde_json::json!({
            "name": shown,
            "digest": version.digest,
            "size": version.size,
        })),
    )
        .into_response())
}

/// `GET /v1/plugins`.
pub async fn plugins(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let list = blocking(move || service.plugins(&tenant)).await?;
    Ok(axum::Json(list).into_response())
}

/// `GET /v1/plugins/{name}`: its versions.
pub async fn plugin(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let service = api.service.clone();
    let plugin = blocking(move || service.plugin(&tenant, &name)).await?;
    Ok(axum::Json(plugin).into_response())
}
