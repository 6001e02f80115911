//! Sinks: where each batch's output goes. A sink writes a batch and returns
//! once it is durable (for the ones that can say so), which is when the
//! pipeline may commit the batch's source positions. Built-in sinks are
//! listed in [`SinkConfig`].

mod console;
mod directory;
#[cfg(feature = "elasticsearch")]
mod elasticsearch;
pub mod format;
#[cfg(feature = "http-sink")]
mod http;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "nats")]
mod nats;
#[cfg(any(
    feature = "elasticsearch",
    feature = "http-sink",
    feature = "object-store"
))]
mod net;
#[cfg(feature = "object-store")]
mod object_store;
pub mod template;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use console::{ConsoleConfig, ConsoleSink};
pub use directory::{DirectoryConfig, DirectorySink};
#[cfg(feature = "elasticsearch")]
pub use elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
pub use format::Format;
#[cfg(feature = "http-sink")]
pub use http::{HttpSink, HttpSinkConfig};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaSink, KafkaSinkConfig, Partitioner};
#[cfg(feature = "object-store")]
pub use object_store::{ObjectStoreConfig, ObjectStoreSink};

/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "elasticsearch"))]
pub type ElasticsearchConfig = crate::connector::Disabled;
/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "http-sink"))]
pub type HttpSinkConfig = crate::connector::Disabled;
/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "kafka"))]
pub type KafkaSinkConfig = crate::connector::Disabled;
/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "object-store"))]
pub type ObjectStoreConfig = crate::connector::Disabled;

#[cfg(feature = "mqtt")]
pub use mqtt::{MqttSink, MqttSinkConfig};
#[cfg(feature = "nats")]
pub use nats::{NatsSink, NatsSinkConfig};
/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "mqtt"))]
pub type MqttSinkConfig = crate::connector::Disabled;
/// A left-out connector's settings (see [`crate::connector`]).
#[cfg(not(feature = "nats"))]
pub type NatsSinkConfig = crate::connector::Disabled;

use crate::batch::{Records, SourcePosition};
use crate::stage::DeadLetter;

/// Which batch a sink is writing.
#[derive(Debug, Clone, Copy)]
pub struct BatchMeta<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Batch id.
    pub id: u64,
    /// Batch time, ms since the epoch.
    pub time_ms: u64,
    /// Under exactly-once delivery, the number of the checkpoint that will
    /// cover the batch (it keeps counting across runs); `None` otherwise.
    pub checkpoint: Option<u64>,
    /// Where each source that contributed to the batch has got to (what
    /// a sink derives replay-stable names from).
    pub positions: &'a [SourcePosition],
}

/// A sink could not take a batch.
#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}`: {message}")]
pub struct SinkError {
    /// Which sink (its type and target).
    pub sink: String,
    /// What failed.
    pub message: String,
}

/// Where output goes.
pub trait Sink: Send {
    /// Writes one batch's records; returns when they are as durable as this
    /// sink can make them. Called for non-empty batches only.
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError>;

    /// Called once when the pipeline ends.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Exactly-once delivery, second step: the checkpoint covering `batch`
    /// (written earlier with `write`, which under exactly-once only stages
    /// it) is durable, so its output may be published.
    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let _ = batch;
        Ok(())
    }

    /// Called at start with the last durable checkpoint's number (0 when
    /// there is none). Under exactly-once delivery: publishes what was
    /// staged for checkpoints up to `checkpoint` (the crash came before
    /// their `commit`) and discards what was staged after it (those batches
    /// are replayed). Also the time to clear what a crash left half-written.
    ///
    /// `output` is the output of the batch of checkpoint `checkpoint`, for
    /// sinks that asked for it to be kept ([`Sink::keeps_output`]).
    fn recover(&mut self, checkpoint: u64, output: Option<Records>) -> Result<(), SinkError> {
        let _ = (checkpoint, output);
        Ok(())
    }

    /// Exactly-once: whether each batch's output must be kept with its
    /// checkpoint, so that `recover` can publish it again when a crash came
    /// between the checkpoint and `commit` (the Kafka sink: its open
    /// transaction dies with the process).
    fn keeps_output(&self) -> bool {
        false
    }

    /// Exactly-once: whether `commit` is called for every checkpoint, with
    /// output or without (a task's transaction, which also carries its
    /// state's changelog and its input offsets); otherwise only for
    /// checkpoints of batches with output.
    fn commits_every_checkpoint(&self) -> bool {
        false
    }
}

/// `[[sinks]]` in a pipeline file, by `type`: the registry of built-in
/// sinks. Every type is listed whatever the build; one whose cargo feature
/// is off is refused when the file is checked (see [`crate::connector`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    /// Prints records to standard output, like Spark's `print()`.
    Console(ConsoleConfig),
    /// One file per batch in a folder, like Spark's `saveAsTextFiles`.
    Directory(DirectoryConfig),
    /// Discards everything (for benchmarks and tests).
    Null(NullConfig),
    /// Messages to a Kafka topic (feature `kafka`).
    Kafka(KafkaSinkConfig),
    /// Documents into Elasticsearch or OpenSearch through `_bulk`
    /// (feature `elasticsearch`).
    Elasticsearch(ElasticsearchConfig),
    /// Objects in S3-compatible storage (feature `object-store`).
    ObjectStore(ObjectStoreConfig),
    /// POSTs to an HTTP endpoint (feature `http-sink`).
    Http(HttpSinkConfig),
    /// Messages to an MQTT broker (feature `mqtt`).
    Mqtt(MqttSinkConfig),
    /// Messages to NATS subjects, core or JetStream (feature `nats`).
    Nats(NatsSinkConfig),
}

/// `type = "null"`: no settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

impl SinkConfig {
    /// The `type` and cargo feature of a sink this build left out.
    pub fn missing_feature(&self) -> Option<(&'static str, &'static str)> {
        match self {
            #[cfg(not(feature = "kafka"))]
            SinkConfig::Kafka(_) => Some(("kafka", "kafka")),
            #[cfg(not(feature = "elasticsearch"))]
            SinkConfig::Elasticsearch(_) => Some(("elasticsearch", "elasticsearch")),
            #[cfg(not(feature = "object-store"))]
            SinkConfig::ObjectStore(_) => Some(("object-store", "object-store")),
            #[cfg(not(feature = "http-sink"))]
            SinkConfig::Http(_) => Some(("http", "http-sink")),
            #[cfg(not(feature = "mqtt"))]
            SinkConfig::Mqtt(_) => Some(("mqtt", "mqtt")),
            #[cfg(not(feature = "nats"))]
            SinkConfig::Nats(_) => Some(("nats", "nats")),
            _ => None,
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some((type_name, feature)) = self.missing_feature() {
            return Err(crate::connector::missing(type_name, feature));
        }
        match self {
            SinkConfig::Directory(c) if c.path.as_os_str().is_empty() => {
                Err("invalid directory sink: `path` is empty".into())
            }
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(c) => c.validate(),
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => c.validate(),
            #[cfg(feature = "object-store")]
            SinkConfig::ObjectStore(c) => c.validate(),
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => c.validate(),
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(c) => c.validate(),
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => c.validate(),
            _ => Ok(()),
        }
    }

    /// Why this sink cannot hold a batch back until its checkpoint, if it
    /// cannot (exactly-once delivery needs that).
    pub fn cannot_hold_back(&self) -> Option<&'static str> {
        match self {
            SinkConfig::Directory(_) | SinkConfig::Null(_) => None,
            SinkConfig::Console(_) => Some("what a `console` sink printed cannot be taken back"),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(c) if c.topic.is_none() => Some(
                "a `kafka` sink needs a `topic` (its transactions' progress is kept beside it)",
            ),
            SinkConfig::Kafka(_) | SinkConfig::Elasticsearch(_) | SinkConfig::ObjectStore(_) => {
                None
            }
            SinkConfig::Http(_) => Some(
                "what an `http` sink POSTed cannot be taken back, and a receiver may not \
                 recognise a repeat",
            ),
            SinkConfig::Mqtt(_) => {
                Some("an `mqtt` sink cannot take back what it published (MQTT has no transactions)")
            }
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => c.cannot_hold_back(),
            #[cfg(not(feature = "nats"))]
            SinkConfig::Nats(_) => None,
        }
    }

    /// Whether the sink reaches network peers (refused for hosted tenants
    /// unless the operator allows it).
    pub fn reaches_network(&self) -> bool {
        matches!(
            self,
            SinkConfig::Kafka(_)
                | SinkConfig::Elasticsearch(_)
                | SinkConfig::ObjectStore(_)
                | SinkConfig::Http(_)
                | SinkConfig::Mqtt(_)
                | SinkConfig::Nats(_)
        )
    }

    /// Resolves the paths the sink names (a `directory` sink's folder, a
    /// `ca_file`) with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        match self {
            SinkConfig::Directory(c) => {
                c.path = resolve(&c.path).map_err(|m| format!("directory sink `path`: {m}"))?;
            }
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => {
                if let Some(ca) = &c.ca_file {
                    c.ca_file = Some(
                        resolve(ca).map_err(|m| format!("elasticsearch sink `ca_file`: {m}"))?,
                    );
                }
            }
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => {
                if let Some(ca) = &c.ca_file {
                    c.ca_file = Some(resolve(ca).map_err(|m| format!("http sink `ca_file`: {m}"))?);
                }
            }
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(c) => c.resolve_paths(resolve)?,
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => c.resolve_paths(resolve)?,
            _ => {}
        }
        Ok(())
    }

    /// Resolves the dead-letter folder of a sink that rejects single
    /// records (`elasticsearch`, `http`) with `resolve`, which gets the
    /// folder as written (`dead_letter`) or `None` for the default.
    pub fn resolve_dead_letter(
        &mut self,
        resolve: impl Fn(Option<&Path>) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        let slot: Option<&mut Option<PathBuf>> = match self {
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => Some(&mut c.dead_letter),
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => Some(&mut c.dead_letter),
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = Some(resolve(slot.as_deref()).map_err(|m| format!("`dead_letter`: {m}"))?);
        }
        Ok(())
    }

    /// The environment the sink reads its credentials from, if any: a
    /// `password_env`, `token_env` or `api_key_env` variable, or the AWS_*
    /// variables of an `object-store` sink. It is the environment of the
    /// process that runs the sink, which a hosted tenant may not reach.
    pub fn environment(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => c.password_env.as_deref().or(c.api_key_env.as_deref()),
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => c.password_env.as_deref().or(c.api_key_env.as_deref()),
            SinkConfig::ObjectStore(_) => Some("AWS_*"),
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(c) => c.password_env.as_deref(),
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => c.password_env.as_deref().or(c.token_env.as_deref()),
            _ => None,
        }
    }

    /// The dead-letter folder of a sink that has one (once resolved).
    pub fn dead_letter_dir(&self) -> Option<&Path> {
        match self {
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => c.dead_letter.as_deref(),
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => c.dead_letter.as_deref(),
            _ => None,
        }
    }

    /// Creates the running sink from its resolved settings.
    pub fn build(&self, cx: &SinkContext<'_>) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Console(c) => Box::new(ConsoleSink::new(c)),
            SinkConfig::Directory(c) => Box::new(DirectorySink::new(c, cx)?),
            SinkConfig::Null(_) => Box::new(NullSink),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(c) => Box::new(c.build(cx.pipeline, cx.index, cx.exactly_once)?),
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => Box::new(ElasticsearchSink::new(c, cx)?),
            #[cfg(feature = "object-store")]
            SinkConfig::ObjectStore(c) => Box::new(ObjectStoreSink::new(c, cx)?),
            #[cfg(feature = "http-sink")]
            SinkConfig::Http(c) => Box::new(HttpSink::new(c, cx)?),
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(c) => {
                Box::new(c.build(cx.pipeline, cx.index, cx.dead_letter.clone())?)
            }
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => Box::new(c.build(
                cx.pipeline,
                cx.index,
                cx.exactly_once,
                cx.dead_letter.clone(),
            )?),
            #[allow(unreachable_patterns)]
            other => {
                let (type_name, feature) = other.missing_feature().unwrap_or(("?", "?"));
                return Err(SinkError {
                    sink: type_name.to_string(),
                    message: crate::connector::missing(type_name, feature),
                });
            }
        })
    }
}

/// What building a sink needs besides its own settings.
#[derive(Debug, Clone)]
pub struct SinkContext<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The sink's place among the pipeline's sinks.
    pub index: usize,
    /// Whether delivery is exactly-once (the sink then holds each batch
    /// back until its checkpoint).
    pub exactly_once: bool,
    /// Where records the sink's server refuses go (with the reason): the
    /// sink's `dead_letter` folder, or `dead-letter/<pipeline>/sink-<index>`,
    /// under the tenant's dead-letter budget when hosted.
    pub dead_letter: &'a DeadLetter,
}

struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _: BatchMeta<'_>, _: &Records) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes `bytes` to `dir/name` through a dot-prefixed temporary file and a
/// rename, so readers of the folder never see a partial file. Creates `dir`.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    write_then_rename(dir, name, bytes, || {})
}

/// [`write_atomically`], calling `before_rename` once the temporary file is
/// durable (a crash test's failpoint).
pub(crate) fn write_then_rename(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    before_rename: impl FnOnce(),
) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    // A new file of our own, never one a link left here points to.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    before_rename();
    std::fs::rename(&tmp, &path)?;
    // The rename is durable once the folder is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}
