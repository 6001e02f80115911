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
    serve_tls(listener, app, limits, None).await
}

/// A TLS set-up from a PEM certificate chain and a PEM private key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// [`serve`], over TLS when `tls` is given (a handshake must end within the
/// head timeout).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(64 << 10);
            let life = limits.connection_life;
            match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(life, connection).await {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                Some(tls) => {
                    let handshake = tokio::time::timeout(limits.head_timeout, tls.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(life, connection).await {
                        tracing::debug!("HTTPS connection ended: {e}");
                    }
                }
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
