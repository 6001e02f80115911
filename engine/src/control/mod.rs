//! The local control endpoint: a small HTTP/1.1 API on loopback through
//! which `sluice deploy`, `sluice rollback` and `sluice status` reach a
//! running process. It owns the protocol only; preparing versions belongs
//! to `reload`. It will grow into the multi-tenant control plane; until
//! then it has no authentication and listens on loopback by default.
//!
//! | request | does |
//! |---|---|
//! | `GET /status` | every stage's live version, probation, earlier versions, recent events (JSON) |
//! | `POST /deploy/{pipeline}/{stage}?name=FILE.wasm` with the `.wasm` as body | compiles, checks, `init`s it; live at the next batch (`200`), or why not (`422`); `name` labels the version |
//! | `POST /rollback/{pipeline}/{stage}` | puts the previous version back at the next batch |

pub mod client;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::reload::{Registry, StageEntry};
use crate::stage::StageStatus;

/// Largest plugin accepted by `deploy`.
const MAX_BODY: usize = 64 << 20;

/// A pipeline in `GET /status`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub pipeline: String,
    /// Its stages, in order.
    pub stages: Vec<StageStatusOut>,
}

/// A stage in `GET /status` (the shape of [`StageStatus`]).
pub type StageStatusOut = serde_json::Value;

/// Most requests served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// Longest request line plus headers.
const MAX_HEAD: u64 = 16 << 10;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the control API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("control endpoint: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, registry).await {
                tracing::debug!("control request failed: {e}");
            }
            drop(permit);
        });
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Result<Request, (u16, String)>> {
    // The head may not exceed MAX_HEAD bytes; the body's own limit is set
    // once its length is known.
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(Err((400, "malformed request line".into())));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    if length > MAX_BODY {
        return Ok(Err((
            413,
            format!("body of {length} bytes is over the {MAX_BODY}-byte limit"),
        )));
    }
    reader.get_mut().set_limit(length as u64);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(Ok(Request { method, path, body }))
}

async fn handle(mut stream: TcpStream, registry: Arc<Registry>) -> std::io::Result<()> {
    let request = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "request not sent in time")
        })??;
    let (status, body) = match request {
        Err(problem) => problem_json(problem),
        Ok(request) => route(request, registry).await,
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn problem_json((status, message): (u16, String)) -> (u16, String) {
    (status, serde_json::json!({ "error": message }).to_string())
}

async fn route(request: Request, registry: Arc<Registry>) -> (u16, String) {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let name = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_string);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["status"]) => (200, status_json(&registry)),
        ("POST", ["deploy", pipeline, stage]) => {
            let origin = name.map(PathBuf::from);
            let body = request.body;
            change_version(registry, pipeline, stage, move |registry, entry| {
                let stage = &entry.settings.name;
                let origin =
                    origin.unwrap_or_else(|| PathBuf::from(format!("deployed-to-{stage}.wasm")));
                registry
                    .deploy(entry, &origin, &body, "deploy")
                    .map_err(|reason| (422, reason))
            })
            .await
        }
        ("POST", ["rollback", pipeline, stage]) => {
            change_version(registry, pipeline, stage, |registry, entry| {
                registry.rollback(entry).map_err(|reason| (409, reason))
            })
            .await
        }
        _ => problem_json((
            404,
            format!("no such endpoint: {} {}", request.method, request.path),
        )),
    }
}

/// Runs a change of one stage's version on a blocking thread (it compiles
/// or instantiates) and answers with the version that goes live next.
async fn change_version(
    registry: Arc<Registry>,
    pipeline: &str,
    stage: &str,
    change: impl FnOnce(&Registry, &StageEntry) -> Result<String, (u16, String)> + Send + 'static,
) -> (u16, String) {
    let (pipeline, stage) = (pipeline.to_string(), stage.to_string());
    let outcome = tokio::task::spawn_blocking(move || {
        let Some(entry) = registry.find(&pipeline, &stage) else {
            return Err((404, format!("no stage `{stage}` in pipeline `{pipeline}`")));
        };
        change(&registry, entry)
    })
    .await
    .unwrap_or_else(|e| Err((500, format!("the request panicked: {e}"))));
    match outcome {
        Ok(label) => (
            200,
            serde_json::json!({ "version": label, "live": "at the next batch" }).to_string(),
        ),
        Err(problem) => problem_json(problem),
    }
}

fn status_json(registry: &Registry) -> String {
    let mut pipelines: Vec<PipelineStatus> = Vec::new();
    for entry in registry.stages() {
        let status: StageStatus = entry.handle.status();
        let value = serde_json::to_value(&status).unwrap_or_default();
        match pipelines
            .iter_mut()
            .find(|p| p.pipeline == entry.settings.pipeline)
        {
            Some(p) => p.stages.push(value),
            None => pipelines.push(PipelineStatus {
                pipeline: entry.settings.pipeline.clone(),
                stages: vec![value],
            }),
        }
    }
    serde_json::to_string_pretty(&pipelines).unwrap_or_default()
}
