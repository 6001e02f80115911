//! The listener of an http source under `sluice run`: `POST /` takes a body
//! of records (see [`super::body`]); `200 {"accepted": N}`, `429` with
//! `Retry-After` when the pipeline's queue is full, `400` naming what is
//! wrong with a malformed body, `413` over `max_body`. It stops when the
//! source is asked to.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Ingest, IngestError};
use crate::control::http::{ApiError, BodyBudget, Limits, serve};
use crate::source::{Emitter, SourceError};

#[derive(Clone)]
struct Listening {
    ingest: Ingest,
    budget: BodyBudget,
}

/// Serves `POST /` on `address` until the source is asked to stop.
pub async fn serve_ingest(
    address: &str,
    ingest: Ingest,
    emitter: &Emitter,
) -> Result<(), SourceError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| SourceError {
            source_name: format!("http {address}"),
            message: format!("cannot listen: {e}"),
        })?;
    tracing::info!("http source listening on http://{address}/ (POST records)");
    // Four bodies of the largest size being received at once.
    let budget = BodyBudget::new(ingest.max_body() * 4);
    let app = Router::new()
        .route("/", post(take))
        .with_state(Listening { ingest, budget });
    tokio::select! {
        _ = serve(listener, app, Limits::default()) => {}
        _ = emitter.stopped() => {}
    }
    Ok(())
}

/// Answers an ingest: how many records were taken, or why none were.
pub fn answer(outcome: Result<usize, IngestError>) -> Response {
    match outcome {
        Ok(accepted) => axum::Json(serde_json::json!({ "accepted": accepted })).into_response(),
        Err(IngestError::Full) => {
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, IngestError::Full.to_string())
                    .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
        Err(e @ IngestError::Closed) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(IngestError::Body(e)) => ApiError::new(StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn take(State(listening): State<Listening>, headers: HeaderMap, body: Body) -> Response {
    let (bytes, _held) = match listening
        .budget
        .read(body, listening.ingest.max_body(), Duration::from_secs(60))
        .await
    {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    answer(listening.ingest.take(content_type, &bytes))
}
