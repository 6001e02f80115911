//! `type = "nats"`: each record published to NATS (through `async-nats`;
//! connection and subject rules in `crate::nats`), to a fixed subject or one
//! named by a record header, with the record's headers as message headers.
//!
//! - **Core NATS** (the default): a batch counts as written once the server
//!   has answered a PING sent after its messages (`flush`), so they reached
//!   it; core NATS confirms nothing more, and a subscriber that is not
//!   there gets nothing. At-most-once towards subscribers; it cannot hold a
//!   batch back, so it takes no part in exactly-once delivery.
//! - **JetStream** (`jetstream = true`): every message is confirmed by the
//!   stream that stores it (a missing stream is an error); unconfirmed ones
//!   are sent again, and a batch fails after `timeout`: at-least-once.
//!   Under `delivery = "exactly-once"` the batch is held back until its
//!   checkpoint and each message carries a `Nats-Msg-Id` made of the
//!   pipeline, the sink, the checkpoint and its place in the batch, so that a
//!   batch published again after a crash (from the copy kept with the
//!   checkpoint) is dropped by the stream as a duplicate: exactly-once,
//!   provided the restart comes within the stream's duplicate window (2
//!   minutes by default).
//!
//! A record that cannot be published (no subject, a subject that is not
//! one, a header NATS cannot carry, larger than the server's
//! `max_payload`) is dead-lettered with the reason; the rest of the batch is
//! published.

mod publish;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::runtime::Handle;

use super::{BatchMeta, Format, Sink, SinkError};
use crate::batch::Records;
use crate::nats::{Login, check_login, check_subject, check_url};
use crate::stage::DeadLetter;
use crate::units::HumanDuration;
use publish::Outgoing;

/// Publishes records to NATS.
///
/// ```toml
/// [[sinks]]
/// type = "nats"
/// url = "nats://127.0.0.1:4222"
/// subject = "counts"          # or subject_header = "nats.subject"
/// jetstream = true            # confirmed by the stream
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// The server: `nats://host:port` (`tls://` for TLS), several separated
    /// by commas.
    pub url: String,
    /// The subject to publish to (for records without `subject_header`).
    #[serde(default)]
    pub subject: Option<String>,
    /// A record header naming the subject to publish that record to (a
    /// NATS source's `nats.subject`, for one); records without it go to
    /// `subject`.
    #[serde(default)]
    pub subject_header: Option<String>,
    /// How a record becomes a message's payload: left out, the value as it
    /// is; `"text"` (`key<TAB>value`, or the value) or `"jsonl"` (the
    /// directory sink's JSON object) keep the key. Headers go as headers.
    #[serde(default)]
    pub format: Option<Format>,
    /// Publish through JetStream: each message confirmed by the stream
    /// that stores its subject. Default false (core NATS).
    #[serde(default)]
    pub jetstream: bool,
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
    /// How long a batch may wait for the server (absent, restarting, or
    /// not confirming) before it fails. Default `60s`.
    #[serde(default = "timeout")]
    pub timeout: HumanDuration,
}

fn timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl NatsSinkConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        check_url(&self.url, "sink")?;
        check_login("sink", &self.username, &self.password_env, &self.token_env)?;
        match (&self.subject, &self.subject_header) {
            (None, None) => Err("invalid nats sink: set `subject` (or `subject_header`)".into()),
            (Some(s), _) => check_subject(s.as_bytes())
                .map(drop)
                .map_err(|e| format!("invalid nats sink `subject`: {e}")),
            (None, Some(h)) if h.is_empty() => {
                Err("invalid nats sink: `subject_header` is empty".into())
            }
            _ if self.timeout.0.is_zero() => {
                Err("invalid nats sink `timeout`: must be more than 0".into())
            }
            _ => Ok(()),
        }
    }

    /// Resolves `ca_file` with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&std::path::Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        if let Some(ca) = &self.ca_file {
            self.ca_file = Some(resolve(ca).map_err(|m| format!("nats sink `ca_file`: {m}"))?);
        }
        Ok(())
    }

    /// Why this sink cannot hold a batch back, if it cannot.
    pub fn cannot_hold_back(&self) -> Option<&'static str> {
        (!self.jetstream).then_some(
            "a core `nats` sink cannot take back what it published (set `jetstream = true`: \
             messages then carry ids the stream drops duplicates by)",
        )
    }

    /// The running sink, the `index`-th of pipeline `pipeline`; connects in
    /// the background. Must be called within the engine's runtime.
    pub fn build(
        &self,
        pipeline: &str,
        index: usize,
        exactly_once: bool,
        dead_letter: DeadLetter,
    ) -> Result<NatsSink, SinkError> {
        let who = format!(
            "nats sink {} at {}",
            self.subject.as_deref().unwrap_or("(by header)"),
            self.url
        );
        let fail = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        let login = Login {
            url: self.url.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            token_env: self.token_env.clone(),
            ca_file: self.ca_file.clone(),
            name: format!("sluice-{pipeline}-sink{index}"),
        };
        let runtime = Handle::try_current()
            .map_err(|_| fail("the sink must be built within the engine's runtime".into()))?;
        let client = runtime.block_on(login.connect(&who)).map_err(&fail)?;
        let jetstream = self.jetstream.then(|| {
            // Its confirmations are awaited by a task on the runtime.
            let _entered = runtime.enter();
            async_nats::jetstream::new(client.clone())
        });
        Ok(NatsSink {
            out: Outgoing {
                client,
                jetstream,
                timeout: self.timeout.0,
                who: who.clone(),
            },
            runtime,
            subject: self.subject.clone(),
            subject_header: self.subject_header.clone(),
            format: self.format,
            // Ids per message only where they make replays duplicates.
            ids: (exactly_once && self.jetstream).then(|| format!("{pipeline}-sink{index}")),
            staged: None,
            dead_letter,
            who,
        })
    }
}

/// The running NATS sink.
pub struct NatsSink {
    out: Outgoing,
    runtime: Handle,
    subject: Option<String>,
    subject_header: Option<String>,
    format: Option<Format>,
    /// Exactly-once: the prefix of message ids.
    ids: Option<String>,
    /// Exactly-once: the batch written and not yet committed.
    staged: Option<Records>,
    dead_letter: DeadLetter,
    who: String,
}

impl NatsSink {
    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.who.clone(),
            message,
        }
    }

    /// Publishes `records` (ids from checkpoint `checkpoint` under
    /// exactly-once), dead-lettering what cannot go.
    fn send(
        &mut self,
        what: &str,
        records: &Records,
        checkpoint: Option<u64>,
    ) -> Result<(), SinkError> {
        let ids = match (&self.ids, checkpoint) {
            (Some(prefix), Some(number)) => Some(format!("{prefix}-{number}")),
            _ => None,
        };
        let (messages, refused) = publish::prepare(
            records,
            self.subject.as_deref(),
            self.subject_header.as_deref(),
            self.format,
            self.out.client.server_info().max_payload,
            ids.as_deref(),
        );
        if !refused.is_empty() {
            let reasons: Vec<(usize, &str)> =
                refused.iter().map(|(i, r)| (*i, r.as_str())).collect();
            let file = self
                .dead_letter
                .write_refused(records, &reasons)
                .map_err(|e| self.error(format!("{what}: cannot write dead letters: {e}")))?;
            tracing::warn!(
                "{}: {what}: {} record(s) dead-lettered to {} (first: {})",
                self.who,
                refused.len(),
                file.display(),
                refused[0].1
            );
        }
        let out = &self.out;
        self.runtime
            .block_on(out.publish(messages))
            .map_err(|e| self.error(format!("{what}: {e}")))
    }
}

impl Sink for NatsSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        if self.ids.is_some() && batch.checkpoint.is_some() {
            // Held back until the checkpoint.
            self.staged = Some(records.clone());
            return Ok(());
        }
        self.send(&format!("batch {}", batch.id), records, None)
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let Some(records) = self.staged.take() else {
            return Ok(());
        };
        self.send(&format!("batch {}", batch.id), &records, batch.checkpoint)
    }

    fn recover(&mut self, checkpoint: u64, output: Option<Records>) -> Result<(), SinkError> {
        let (Some(_), Some(records)) = (&self.ids, output) else {
            return Ok(());
        };
        tracing::info!(
            "{}: publishing the output of checkpoint {checkpoint} ({} records) again with the \
             same message ids; the stream drops those it already has",
            self.who,
            records.len()
        );
        self.send(
            &format!("checkpoint {checkpoint}"),
            &records,
            Some(checkpoint),
        )
    }

    fn keeps_output(&self) -> bool {
        self.ids.is_some()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let client = self.out.client.clone();
        let flushed = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.flush()).await
        });
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(format!("flush at the end: {e}"))),
            Err(_) => Err(self.error("flush at the end: no answer from the server in 10s".into())),
        }
    }
}
