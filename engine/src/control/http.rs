//! Serving HTTP with bounded costs: hyper underneath, an axum router on
//! top, and the limits that keep a slow or hostile client from holding the
//! server up — a cap on open connections, a deadline for a request's head,
//! a deadline for a connection's life, and one memory budget shared by every
//! request body being received (a body is held only as it arrives, never
//! allocated from its announced length). The routes belong to the modules
//! that serve them (`control::local` for `sluice run`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits one listener serves under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once; more wait to be accepted.
    pub connections: usize,
    /// How long a client may take to send a request's head.
    pub head_timeout: Duration,
    /// Longest a connection may stay open, requests and all.
    pub connection_life: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 64,
            head_timeout: Duration::from_secs(5),
            connection_life: Duration::from_secs(300),
        }
    }
}

/// An error answered as `{"error": "…"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, for the caller.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Memory shared by every request body being received on a listener.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

/// Bytes of the budget held by one body until it is dropped.
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        BodyBudget(Arc::new(Semaphore::new(bytes)))
    }

    /// Receives `body` whole, up to `limit` bytes and within `deadline`,
    /// taking its bytes from the budget as they arrive: `413` over the
    /// limit, `503` when the budget is spent by other uploads, `408` when
    /// the client is too slow.
    pub async fn read(
        &self,
        body: Body,
        limit: usize,
        deadline: Duration,
    ) -> Result<(Vec<u8>, Held), ApiError> {
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut bytes = Vec::new();
        let mut body = body;
        let receive = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if bytes.len() + data.len() > limit {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is over the limit of {limit} bytes"),
                    ));
                }
                let permit = self
                    .0
                    .clone()
                    .try_acquire_many_owned(data.len() as u32)
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many uploads at once; try again shortly",
                        )
                    })?;
                match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
                bytes.extend_from_slice(&data);
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, receive).await {
            Ok(Ok(())) => Ok((bytes, Held { _permit: held })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}s", deadline.as_secs()),
            )),
        }
    }
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("HTTP listener: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_life, connection).await {
                Ok(Err(e)) => tracing::debug!("HTTP connection ended: {e}"),
                Ok(Ok(())) | Err(_) => {}
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_share_one_budget_and_give_it_back() {
        let budget = BodyBudget::new(10);
        let (bytes, held) = budget
            .read(Body::from("0123456789"), 100, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 10);
        let busy = budget
            .read(Body::from("x"), 100, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        assert!(
            budget
                .read(Body::from("x"), 100, Duration::from_secs(1))
                .await
                .is_ok()
        );
        let large = budget
            .read(Body::from("0123456789"), 5, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
