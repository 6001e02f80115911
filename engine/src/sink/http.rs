//! `type = "http"`: each batch (or each record) POSTed to an HTTP endpoint.
//!
//! A request that cannot reach the server, or that it answers with `408`,
//! `429` or `5xx`, is sent again with back-off until it goes through (or
//! `give_up_after`). Any other non-`2xx` answer refuses what the request
//! carried for good: those records go to the sink's dead-letter folder with
//! the status and the start of the answer as the reason, and the pipeline
//! goes on. Each request carries an `Idempotency-Key` header derived from
//! the pipeline, the sink, the source positions its batch ends at and the
//! record's place, so a receiver can recognise a batch sent again after a
//! crash; the sink itself is at-least-once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::net::{Attempt, Client, Connection, describe, excerpt, retryable};
use super::{BatchMeta, Sink, SinkContext, SinkError, format};
use crate::batch::{RecordRef, Records};
use crate::stage::DeadLetter;
use crate::units::HumanDuration;

/// POSTs records to an HTTP endpoint.
///
/// ```toml
/// [[sinks]]
/// type = "http"
/// url = "http://127.0.0.1:8080/ingest"
/// per = "batch"       # or "record"
/// format = "jsonl"    # or "json" (an array per batch), "text"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where to POST: an `http://` or `https://` URL.
    pub url: String,
    /// `"batch"` (the default: one request per batch) or `"record"` (one
    /// request per record, so the server can refuse records one by one).
    #[serde(default)]
    pub per: Per,
    /// The body: `"jsonl"` (the default; one jsonl-sink object per line,
    /// `application/x-ndjson`), `"json"` (a JSON array of those objects
    /// per batch, or one object per record, `application/json`) or
    /// `"text"` (values, one per line, `text/plain`).
    #[serde(default)]
    pub format: Body,
    /// Extra request headers (not secrets: those come from `*_env`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The folder for records the server refused, relative to the pipeline
    /// file; default `dead-letter/<pipeline>/sink-<n>` beside it.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Longest wait for one request; default `"30s"`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// How long a request is retried while the server is unreachable or
    /// answers `408`/`429`/`5xx` before the pipeline fails. Default: until
    /// it takes it.
    #[serde(default)]
    pub give_up_after: Option<HumanDuration>,
    /// A PEM file of certificate authorities to trust for `https`, besides
    /// the system's; relative to the pipeline file (under `sluice serve`, a
    /// path inside the tenant's files root).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A user name for basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding `username`'s password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The environment variable holding a token, sent as
    /// `Authorization: Bearer …`.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// What one request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    /// A whole batch.
    #[default]
    Batch,
    /// One record.
    Record,
}

/// The body's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    /// JSON lines.
    #[default]
    Jsonl,
    /// A JSON array (per batch) or object (per record).
    Json,
    /// Values as text lines.
    Text,
}

impl HttpSinkConfig {
    fn connection(&self) -> Connection {
        Connection {
            timeout: self.timeout,
            give_up_after: self.give_up_after,
            ca_file: self.ca_file.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            api_key_env: self.api_key_env.clone(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(format!(
                "http sink: invalid `url` `{}`: expected http://host[:port]/path or https://…",
                self.url
            ));
        }
        for name in self.headers.keys() {
            if name.eq_ignore_ascii_case("authorization") {
                return Err(
                    "http sink: `headers` may not set `Authorization` (a secret): use \
                     `api_key_env` or `username`/`password_env`"
                        .into(),
                );
            }
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("http sink: invalid header name `{name}` in `headers`"))?;
        }
        self.connection()
            .validate()
            .map_err(|e| format!("http sink: {e}"))
    }
}

/// The running sink.
pub struct HttpSink {
    client: Client,
    url: String,
    per: Per,
    body: Body,
    headers: reqwest::header::HeaderMap,
    dead_letter: DeadLetter,
    origin: String,
}

impl HttpSink {
    /// Sets up the client; reads credentials from the environment.
    pub fn new(c: &HttpSinkConfig, cx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let client = Client::new(&c.connection(), format!("http {}", c.url))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &c.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| client.error(format!("header `{name}`: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|e| client.error(format!("header `{name}`: {e}")))?;
            headers.insert(name, value);
        }
        let content_type = match c.format {
            Body::Jsonl if c.per == Per::Batch => "application/x-ndjson",
            Body::Jsonl | Body::Json => "application/json",
            Body::Text => "text/plain; charset=utf-8",
        };
        headers
            .entry(reqwest::header::CONTENT_TYPE)
            .or_insert(reqwest::header::HeaderValue::from_static(content_type));
        Ok(HttpSink {
            client,
            url: c.url.clone(),
            per: c.per,
            body: c.format,
            headers,
            dead_letter: cx.dead_letter.clone(),
            origin: format!("{}\0{}", cx.pipeline, cx.index),
        })
    }

    /// Appends `record` in the body format (one line, or one element).
    fn append(&self, out: &mut Vec<u8>, record: RecordRef<'_>) {
        match self.body {
            Body::Jsonl => format::jsonl(out, record, None),
            Body::Json => {
                format::jsonl(out, record, None);
                out.pop(); // its newline
            }
            Body::Text => {
                out.extend_from_slice(record.value());
                out.push(b'\n');
            }
        }
    }

    /// POSTs `body` until it is taken (`Ok(None)`) or refused for good
    /// (`Ok(Some(reason))`).
    fn post(&self, body: Vec<u8>, key: &str) -> Result<Option<String>, SinkError> {
        self.client.retry("a POST", |client| {
            let request = client
                .http
                .post(&self.url)
                .headers(self.headers.clone())
                .header("idempotency-key", key)
                .body(body.clone());
            let request = client.authorize(request, "Bearer");
            let answer = client.runtime.block_on(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            });
            match answer {
                Err(e) => Attempt::Retry(describe(&e)),
                Ok((status, _)) if status.is_success() => Attempt::Done(None),
                Ok((status, text)) if retryable(status) => {
                    Attempt::Retry(format!("answered {status}: {}", excerpt(&text)))
                }
                Ok((status, text)) => {
                    Attempt::Done(Some(format!("HTTP {status}: {}", excerpt(&text))))
                }
            }
        })
    }

    fn key(&self, batch: &BatchMeta<'_>, place: Option<usize>) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new().chain_update(self.origin.as_bytes());
        if batch.positions.is_empty() {
            hash.update(format!("\0time {} batch {}", batch.time_ms, batch.id));
        }
        for p in batch.positions {
            hash.update(format!("\0{}={}", p.source, p.position));
        }
        let digest = hash.finalize();
        let base: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        match place {
            Some(place) => format!("{base}-{place}"),
            None => base,
        }
    }
}

impl Sink for HttpSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        let mut refused: Vec<(usize, String)> = Vec::new();
        match self.per {
            Per::Batch => {
                let mut body = Vec::with_capacity(records.byte_size() + 64 * records.len());
                if self.body == Body::Json {
                    body.push(b'[');
                }
                for (i, record) in records.iter().enumerate() {
                    if self.body == Body::Json && i > 0 {
                        body.push(b',');
                    }
                    self.append(&mut body, record);
                }
                if self.body == Body::Json {
                    body.push(b']');
                }
                if let Some(reason) = self.post(body, &self.key(&batch, None))? {
                    refused = (0..records.len()).map(|i| (i, reason.clone())).collect();
                }
            }
            Per::Record => {
                for (i, record) in records.iter().enumerate() {
                    let mut body = Vec::with_capacity(record.value().len() + 64);
                    self.append(&mut body, record);
                    if let Some(reason) = self.post(body, &self.key(&batch, Some(i)))? {
                        refused.push((i, reason));
                    }
                }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let reasons: Vec<(usize, &str)> = refused.iter().map(|(i, r)| (*i, r.as_str())).collect();
        let file = self
            .dead_letter
            .write(batch.id, batch.time_ms, records, &reasons)
            .map_err(|e| {
                self.client.error(format!(
                    "cannot dead-letter {} refused record(s) in {}: {e}",
                    refused.len(),
                    self.dead_letter.dir.display()
                ))
            })?;
        tracing::warn!(
            "{}: the server refused {} of {} record(s) (first: {}); dead-lettered to {}",
            self.client.who,
            refused.len(),
            records.len(),
            refused[0].1,
            file.display()
        );
        Ok(())
    }
}
