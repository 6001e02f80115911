//! `type = "nats"`: messages from NATS, through `async-nats` (connection and
//! subject rules in `crate::nats`). Two ways to read:
//!
//! - **Core NATS** (`subjects`, no `stream`): subscriptions, at most once.
//!   The server keeps nothing: messages published while Sluice is
//!   disconnected, or dropped because it is slow (the server's and the
//!   client's pending limits), are gone. `wal = true` makes what Sluice
//!   received survive a crash of Sluice.
//! - **JetStream** (`stream` set): a durable pull consumer on the stream,
//!   acknowledged only after the checkpoint of each batch: at-least-once,
//!   and exactly-once with sinks that hold batches back (see `jetstream`).
//!
//! Each record's value is the message's payload, its headers the message's
//! headers plus `nats.subject`, and its timestamp the time the server stored
//! it (JetStream) or the time received (core).

mod jetstream;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source, SourceError, SourceTask};
use crate::batch::{Records, now_ms};
use crate::nats::{Login, check_filter, check_login, check_url};
use crate::units::HumanDuration;

/// Reads NATS subjects, or a JetStream stream through a durable consumer.
///
/// ```toml
/// [[sources]]
/// type = "nats"
/// url = "nats://127.0.0.1:4222"
/// subjects = ["lines.>"]      # core NATS; with `stream`, the consumer's filter
/// stream = "LINES"            # JetStream: read the stream, ack after checkpoints
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// The server: `nats://host:port` (`tls://` for TLS), several separated
    /// by commas.
    pub url: String,
    /// Core NATS: the subjects to subscribe to (`*` matches a token, `>`
    /// the rest). JetStream: the consumer's filter (none: the whole
    /// stream; more than one needs nats-server 2.10).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Core NATS: a queue group, so that several subscribers share the
    /// messages instead of each getting all of them.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// JetStream: the stream to read. It must exist.
    #[serde(default)]
    pub stream: Option<String>,
    /// JetStream: the durable consumer's name. Default
    /// `sluice-<pipeline>-source<index>`. The consumer is the pipeline's
    /// own: Sluice creates it (acknowledging all up to a message), and
    /// recreates it after a crash so that what was not acknowledged comes
    /// again at once, in order.
    #[serde(default)]
    pub consumer: Option<String>,
    /// JetStream, for a new consumer: `"earliest"` (the default) reads the
    /// stream from its first message, `"latest"` only what comes next.
    #[serde(default)]
    pub start: NatsStart,
    /// JetStream: how long the server waits for an acknowledgement before
    /// sending a message again. Acknowledgements come after checkpoints, so
    /// this must exceed the time a message spends queued and processed.
    /// Default `60s`.
    #[serde(default = "ack_wait")]
    pub ack_wait: HumanDuration,
    /// User name, with `password_env`.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The environment variable that holds a token (instead of a user).
    #[serde(default)]
    pub token_env: Option<String>,
    /// A PEM file of certificates to trust for TLS; relative to the
    /// pipeline file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Core NATS only: log every chunk received to a write-ahead log
    /// (synced) before it counts, so a crash loses nothing received.
    #[serde(default)]
    pub wal: bool,
}

/// Where a new JetStream consumer begins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatsStart {
    /// The stream's first message.
    #[default]
    Earliest,
    /// Only messages stored from now on.
    Latest,
}

fn ack_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl NatsSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        check_url(&self.url, "source")?;
        check_login(
            "source",
            &self.username,
            &self.password_env,
            &self.token_env,
        )?;
        for subject in &self.subjects {
            check_filter(subject).map_err(|e| format!("invalid nats source `subjects`: {e}"))?;
        }
        match &self.stream {
            None => {
                if self.subjects.is_empty() {
                    return Err(
                        "invalid nats source: set `subjects` (core NATS) or `stream` \
                                (JetStream)"
                            .into(),
                    );
                }
                if self.consumer.is_some() {
                    return Err(
                        "invalid nats source: `consumer` is for JetStream; set `stream`".into(),
                    );
                }
            }
            Some(stream) => {
                let valid = |name: &str| {
                    !name.is_empty() && !name.contains(['.', '*', '>', ' ', '/', '\\'])
                };
                if !valid(stream) {
                    return Err(format!(
                        "invalid nats source `stream` `{stream}`: a stream name has no `.`, `*`, \
                         `>`, `/` or white space"
                    ));
                }
                if let Some(consumer) = self.consumer.as_deref().filter(|c| !valid(c)) {
                    return Err(format!(
                        "invalid nats source `consumer` `{consumer}`: a consumer name has no `.`, \
                         `*`, `>`, `/` or white space"
                    ));
                }
                if self.queue_group.is_some() {
                    return Err("invalid nats source: `queue_group` is for core NATS; a \
                                JetStream consumer is shared by its name"
                        .into());
                }
                if self.wal {
                    return Err(
                        "invalid nats source: `wal = true` is for core NATS; JetStream \
                                keeps messages until they are acknowledged after their checkpoint"
                            .into(),
                    );
                }
                if self.ack_wait.0 < Duration::from_secs(1) {
                    return Err("invalid nats source `ack_wait`: at least 1s".into());
                }
            }
        }
        Ok(())
    }

    /// Whether this reads JetStream.
    pub fn jetstream(&self) -> bool {
        self.stream.is_some()
    }

    /// Resolves `ca_file` with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&std::path::Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        if let Some(ca) = &self.ca_file {
            self.ca_file = Some(resolve(ca).map_err(|m| format!("nats source `ca_file`: {m}"))?);
        }
        Ok(())
    }

    /// The running source, the `index`-th of pipeline `pipeline`.
    pub fn build(&self, pipeline: &str, index: usize) -> Result<NatsSource, SourceError> {
        let login = Login {
            url: self.url.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            token_env: self.token_env.clone(),
            ca_file: self.ca_file.clone(),
            name: format!("sluice-{pipeline}-source{index}"),
        };
        // Read the secrets now: a missing variable fails the start.
        login.options("").map_err(|message| SourceError {
            source_name: format!("nats {}", self.url),
            message,
        })?;
        Ok(NatsSource {
            login,
            config: self.clone(),
            consumer: self
                .consumer
                .clone()
                .unwrap_or_else(|| format!("sluice-{pipeline}-source{index}")),
            resume: None,
        })
    }
}

/// The running NATS source.
pub struct NatsSource {
    login: Login,
    config: NatsSourceConfig,
    consumer: String,
    /// JetStream: the stream sequence the last checkpoint covers.
    resume: Option<u64>,
}

impl Source for NatsSource {
    fn describe(&self) -> String {
        match &self.config.stream {
            Some(stream) => format!(
                "nats jetstream {stream} (consumer {}) at {}",
                self.consumer, self.config.url
            ),
            None => format!(
                "nats {} at {}",
                self.config.subjects.join(","),
                self.config.url
            ),
        }
    }

    fn resume(&mut self, position: &str) -> Result<bool, String> {
        if !self.config.jetstream() {
            return Ok(false);
        }
        self.resume = Some(
            jetstream::parse_position(position)
                .ok_or_else(|| format!("malformed nats jetstream position `{position}`"))?,
        );
        Ok(true)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            let fail = |message: String| SourceError {
                source_name: name.clone(),
                message,
            };
            let client = self.login.connect(&name).await.map_err(&fail)?;
            if self.config.jetstream() {
                jetstream::read(&self, client, emitter).await.map_err(&fail)
            } else {
                read_core(&self.config, client, emitter, &name)
                    .await
                    .map_err(&fail)
            }
        })
    }
}

/// Core NATS: subscribes and hands over what comes, until told to stop.
async fn read_core(
    config: &NatsSourceConfig,
    client: async_nats::Client,
    emitter: Emitter,
    name: &str,
) -> Result<(), String> {
    let mut subscriptions = Vec::new();
    for subject in &config.subjects {
        let subscribed = match &config.queue_group {
            Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
            None => client.subscribe(subject.clone()).await,
        };
        subscriptions
            .push(subscribed.map_err(|e| format!("cannot subscribe to `{subject}`: {e}"))?);
    }
    tracing::info!("{name}: subscribed");
    let mut messages = futures_util::stream::select_all(subscriptions);
    let mut records = Records::default();
    let mut received: u64 = 0;
    loop {
        let full = records.len() >= CHUNK_RECORDS || records.byte_size() >= CHUNK_BYTES;
        let next = tokio::select! {
            biased;
            _ = emitter.stopped() => break,
            message = messages.next(), if !full => match message {
                Some(message) => Some(message),
                None => break,
            },
            _ = std::future::ready(()), if !records.is_empty() => None,
        };
        match next {
            Some(message) => {
                if records.is_empty() {
                    records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                }
                push(&mut records, &message, now_ms());
                received += 1;
            }
            None => {
                let chunk = std::mem::take(&mut records);
                if emitter
                    .emit(chunk, Some(format!("message {received}")))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    if !records.is_empty() {
        let _ = emitter
            .emit(records, Some(format!("message {received}")))
            .await;
    }
    Ok(())
}

/// Appends a message: payload, headers plus `nats.subject`, `timestamp`.
fn push(records: &mut Records, message: &async_nats::Message, timestamp: u64) {
    let subject: (&[u8], &[u8]) = (b"nats.subject", message.subject.as_bytes());
    match &message.headers {
        None => records.push(None, &message.payload, timestamp, &[subject]),
        Some(map) => {
            let mut headers = vec![subject];
            for (name, values) in map.iter() {
                let name: &str = name.as_ref();
                for value in values {
                    headers.push((name.as_bytes(), value.as_str().as_bytes()));
                }
            }
            records.push(None, &message.payload, timestamp, &headers);
        }
    }
}
