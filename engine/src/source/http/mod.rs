//! `type = "http"`: records POSTed over HTTP. Under `sluice run` the source
//! listens on an address of its own (`listen`); under `sluice serve` data
//! arrives through the service's API (`POST /v1/pipelines/{name}/ingest`),
//! which finds the running source in the [`IngestPoints`] it registered
//! with. Either way a request's records go into the pipeline's queue whole
//! or not at all: a full queue answers `429` with `Retry-After`, so a
//! client slows down and nothing is dropped in silence. The body formats
//! are in [`body`].
//!
//! An ingest answered `200` is in the pipeline's queue, not yet on disk: a
//! crash before its batch's checkpoint loses it, as with a socket. Clients
//! that must not lose a record resend what was not acknowledged, or use a
//! source that replays (Kafka, files).

pub mod body;
mod listener;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{Emitter, Source, SourceError, SourceTask, TryEmit};
use crate::batch::Records;
use crate::units::ByteSize;

pub use body::BodyFormat;
pub use listener::answer;

/// Takes records over HTTP.
///
/// ```toml
/// [[sources]]
/// type = "http"
/// listen = "127.0.0.1:8080"   # sluice run only
/// ```
///
/// `POST /` (under `sluice run`) with lines (`text/plain`), JSON lines
/// (`application/x-ndjson`: `{"value", "key", "timestamp", "headers"}`
/// objects) or a JSON array of such objects or of Flume events
/// (`application/json`: `[{"headers": {…}, "body": "…"}]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Where to listen, `host:port` (`sluice run` only; under `sluice
    /// serve` the service's API takes the data and this key is refused).
    pub listen: Option<String>,
    /// Largest request body. Default `8MiB`, at most `64MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

fn default_max_body() -> ByteSize {
    ByteSize(8 << 20)
}

/// Largest `max_body` allowed.
const MOST_BODY: u64 = 64 << 20;

impl HttpSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(listen) = &self.listen {
            match listen.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return Err(format!(
                        "invalid http source `listen` `{listen}`: expected host:port, like `127.0.0.1:8080`"
                    ));
                }
            }
        }
        if !(1024..=MOST_BODY).contains(&self.max_body.0) {
            return Err(format!(
                "invalid http source `max_body` `{}`: must be between 1KiB and {}",
                self.max_body,
                ByteSize(MOST_BODY)
            ));
        }
        Ok(())
    }

    /// The running source; `points` is where it registers when it has no
    /// listener of its own (`sluice serve`), under `key`.
    pub fn build(&self, points: Option<(IngestPoints, String)>) -> Result<HttpSource, SourceError> {
        if self.listen.is_none() && points.is_none() {
            return Err(SourceError {
                source_name: "http".into(),
                message: "an http source needs `listen = \"host:port\"` under `sluice run`".into(),
            });
        }
        Ok(HttpSource {
            listen: self.listen.clone(),
            max_body: self.max_body.0 as usize,
            points,
        })
    }
}

/// The running http source.
pub struct HttpSource {
    listen: Option<String>,
    max_body: usize,
    points: Option<(IngestPoints, String)>,
}

/// Why an ingest was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline's queue is full: try again shortly.
    #[error("the pipeline's queue is full; retry after a moment")]
    Full,
    /// The pipeline is not running (stopped, or stopping).
    #[error("the pipeline is not taking data (it is stopped or stopping)")]
    Closed,
    /// The body is not in the format its content type says.
    #[error("{0}")]
    Body(String),
}

/// A running http source's way in.
#[derive(Clone)]
pub struct Ingest {
    emitter: Emitter,
    max_body: usize,
}

impl Ingest {
    /// Largest body it takes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Parses `body` (as `content_type` says) and hands its records to the
    /// pipeline whole, or refuses them all. Returns how many were taken.
    pub fn take(&self, content_type: Option<&str>, body: &[u8]) -> Result<usize, IngestError> {
        let format = BodyFormat::of(content_type);
        let records: Records = body::parse(format, body).map_err(IngestError::Body)?;
        let count = records.len();
        if count == 0 {
            return Ok(0);
        }
        match self.emitter.try_emit(records, None) {
            Ok(()) => Ok(count),
            Err(TryEmit::Full) => Err(IngestError::Full),
            Err(TryEmit::Closed) => Err(IngestError::Closed),
        }
    }
}

/// The running http sources of a process that take data through the
/// service's API, by a key the service chooses (tenant and pipeline).
#[derive(Clone, Default)]
pub struct IngestPoints(Arc<Mutex<HashMap<String, Ingest>>>);

impl std::fmt::Debug for IngestPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
        f.debug_tuple("IngestPoints").field(&keys).finish()
    }
}

impl IngestPoints {
    /// The way into the pipeline registered under `key`.
    pub fn get(&self, key: &str) -> Option<Ingest> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn register(&self, key: &str, ingest: Ingest) {
        self.0.lock().unwrap().insert(key.to_string(), ingest);
    }

    fn unregister(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        match &self.listen {
            Some(address) => format!("http {address}"),
            None => "http (through the service's API)".into(),
        }
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let ingest = Ingest {
                emitter: emitter.clone(),
                max_body: self.max_body,
            };
            if let Some((points, key)) = &self.points {
                points.register(key, ingest);
                emitter.stopped().await;
                points.unregister(key);
                return Ok(());
            }
            let address = self.listen.clone().expect("checked at build");
            listener::serve_ingest(&address, ingest, &emitter).await
        })
    }
}
