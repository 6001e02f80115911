//! Sources: where records come from. Each source runs as a task that reads
//! its input, turns it into [`Records`] and hands them to the batcher
//! through an [`Emitter`] (a bounded queue: a full queue makes the source
//! wait). A source stops reading when asked to, and ends by returning. What
//! happens to the records next belongs to `batch` and `pipeline`.

mod directory;
mod generator;
pub mod http;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
mod lines;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "nats")]
mod nats;
mod socket;
mod stdin;
mod wal;
#[cfg(feature = "zeromq")]
mod zeromq;

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use directory::DirectoryConfig;
pub use generator::{GeneratorConfig, LineMaker};
pub use http::{HttpSourceConfig, Ingest, IngestError, IngestPoints};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaSourceConfig, Start};
/// The Kafka source's settings in a build without it.
#[cfg(not(feature = "kafka"))]
pub type KafkaSourceConfig = crate::connector::Disabled;
pub use lines::LineSplitter;
#[cfg(feature = "mqtt")]
pub use mqtt::MqttSourceConfig;
#[cfg(feature = "nats")]
pub use nats::{NatsSourceConfig, NatsStart};
pub use socket::SocketConfig;
pub use stdin::StdinConfig;
#[cfg(feature = "zeromq")]
pub use zeromq::{SocketKind, ZeromqConfig};
/// The ZeroMQ source's settings in a build without it.
#[cfg(not(feature = "zeromq"))]
pub type ZeromqConfig = crate::connector::Disabled;
/// The MQTT source's settings in a build without it.
#[cfg(not(feature = "mqtt"))]
pub type MqttSourceConfig = crate::connector::Disabled;
/// The NATS source's settings in a build without it.
#[cfg(not(feature = "nats"))]
pub type NatsSourceConfig = crate::connector::Disabled;

use std::path::{Path, PathBuf};

use crate::batch::{Chunk, Records};
use crate::stage::DeadLetter;

/// Most records in one chunk handed to the batcher.
pub const CHUNK_RECORDS: usize = 1024;
/// Most value bytes in one chunk handed to the batcher.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// A source failed for good.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {message}")]
pub struct SourceError {
    /// Which source (its type and target).
    pub source_name: String,
    /// What failed.
    pub message: String,
}

/// The future a running source is.
pub type SourceTask = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// A source of records.
pub trait Source: Send {
    /// A short description for logs, e.g. `directory input/`.
    fn describe(&self) -> String;

    /// Reads until the input ends or `emitter` says to stop.
    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask;

    /// Before `run`: continue after `position` (one this source emitted,
    /// from the last checkpoint) instead of from the start. Returns whether
    /// the source can; one that cannot replay reads as if new.
    fn resume(&mut self, position: &str) -> Result<bool, String> {
        let _ = position;
        Ok(false)
    }
}

/// A source's way to the batcher, its stop signal, and the positions the
/// sinks have acknowledged.
#[derive(Clone)]
pub struct Emitter {
    source: usize,
    tx: mpsc::Sender<Chunk>,
    stop: watch::Receiver<bool>,
    acked: watch::Receiver<Option<String>>,
    /// Where the records handed over are counted (and a Kafka source's
    /// lag kept), when the pipeline is observed.
    telemetry: Option<crate::telemetry::SourceTelemetry>,
}

/// The pipeline is gone: nothing will read what a source emits.
#[derive(Debug)]
pub struct Closed;

/// Why [`Emitter::try_emit`] took nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryEmit {
    /// The queue is full now.
    Full,
    /// The pipeline is gone, or the source was asked to stop.
    Closed,
}

impl Emitter {
    /// An emitter for source number `source`. `acked` carries the latest
    /// position (as this source emitted it) whose batch every sink has
    /// acknowledged; its sender goes away once the last batch is through.
    pub fn new(
        source: usize,
        tx: mpsc::Sender<Chunk>,
        stop: watch::Receiver<bool>,
        acked: watch::Receiver<Option<String>>,
    ) -> Self {
        Emitter {
            source,
            tx,
            stop,
            acked,
            telemetry: None,
        }
    }

    /// Counts what this emitter hands over in `telemetry`.
    pub fn observed(mut self, telemetry: crate::telemetry::SourceTelemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The source's series, if the pipeline is observed.
    pub fn telemetry(&self) -> Option<&crate::telemetry::SourceTelemetry> {
        self.telemetry.as_ref()
    }

    fn count(&self, records: usize) {
        if let Some(t) = &self.telemetry {
            t.records.add(records as u64);
        }
    }

    /// [`Emitter::emit`] for a source that reads on a blocking thread (never
    /// call it on the runtime's own threads).
    pub fn emit_blocking(&self, records: Records, position: Option<String>) -> Result<(), Closed> {
        let n = records.len();
        match self.chunk(records, position) {
            Some(chunk) => self.tx.blocking_send(chunk).map_err(|_| Closed)?,
            None => return Ok(()),
        }
        self.count(n);
        Ok(())
    }

    /// A chunk of this source's records received now; none for no records.
    fn chunk(&self, records: Records, position: Option<String>) -> Option<Chunk> {
        (!records.is_empty()).then(|| Chunk {
            source: self.source,
            received: Instant::now(),
            records,
            position,
        })
    }

    /// The positions the sinks have acknowledged, for a source that commits
    /// them back (Kafka offsets): `changed()` fails once no more will come.
    pub fn acked(&self) -> watch::Receiver<Option<String>> {
        self.acked.clone()
    }

    /// Hands records to the batcher, waiting while the queue is full. Records
    /// already read are always handed over, even while stopping.
    pub async fn emit(&self, records: Records, position: Option<String>) -> Result<(), Closed> {
        let n = records.len();
        match self.chunk(records, position) {
            Some(chunk) => self.tx.send(chunk).await.map_err(|_| Closed)?,
            None => return Ok(()),
        }
        self.count(n);
        Ok(())
    }

    /// Hands records to the batcher if the queue has room now, without
    /// waiting: a source that answers others (an HTTP request) says "later"
    /// rather than holding them. Refused once the source is asked to stop.
    pub fn try_emit(&self, records: Records, position: Option<String>) -> Result<(), TryEmit> {
        if self.stopping() {
            return Err(TryEmit::Closed);
        }
        let n = records.len();
        let Some(chunk) = self.chunk(records, position) else {
            return Ok(());
        };
        self.tx.try_send(chunk).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TryEmit::Full,
            mpsc::error::TrySendError::Closed(_) => TryEmit::Closed,
        })?;
        self.count(n);
        Ok(())
    }

    /// Whether the source has been asked to stop reading.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the source is asked to stop reading.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// `[[sources]]` in a pipeline file, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// New files in a folder, one record per line (`textFileStream`).
    Directory(DirectoryConfig),
    /// Lines from a TCP server (`socketTextStream`).
    Socket(SocketConfig),
    /// Lines from standard input, until it ends.
    Stdin(StdinConfig),
    /// Synthetic lines at a set rate, for demos and benchmarks.
    Generator(GeneratorConfig),
    /// Messages from Kafka topics, in a consumer group.
    Kafka(KafkaSourceConfig),
    /// Records POSTed over HTTP.
    Http(HttpSourceConfig),
    /// Messages from a ZeroMQ PULL or SUB socket (feature `zeromq`).
    Zeromq(ZeromqConfig),
    /// Messages from MQTT topic filters (feature `mqtt`).
    Mqtt(MqttSourceConfig),
    /// Messages from NATS subjects, or a JetStream stream (feature `nats`).
    Nats(NatsSourceConfig),
}

impl SourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some((type_name, feature)) = self.missing_feature() {
            return Err(crate::connector::missing(type_name, feature));
        }
        match self {
            SourceConfig::Directory(c) => c.validate(),
            SourceConfig::Socket(c) => c.validate(),
            SourceConfig::Stdin(_) => Ok(()),
            SourceConfig::Generator(c) => c.validate(),
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(c) => c.validate(),
            #[cfg(not(feature = "kafka"))]
            SourceConfig::Kafka(_) => Ok(()),
            SourceConfig::Http(c) => c.validate(),
            #[cfg(feature = "zeromq")]
            SourceConfig::Zeromq(c) => c.validate(),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => c.validate(),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => c.validate(),
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    /// The `type` and cargo feature of a source this build left out.
    pub fn missing_feature(&self) -> Option<(&'static str, &'static str)> {
        match self {
            #[cfg(not(feature = "kafka"))]
            SourceConfig::Kafka(_) => Some(("kafka", "kafka")),
            #[cfg(not(feature = "zeromq"))]
            SourceConfig::Zeromq(_) => Some(("zeromq", "zeromq")),
            #[cfg(not(feature = "mqtt"))]
            SourceConfig::Mqtt(_) => Some(("mqtt", "mqtt")),
            #[cfg(not(feature = "nats"))]
            SourceConfig::Nats(_) => Some(("nats", "nats")),
            _ => None,
        }
    }

    /// The environment variable the source reads a secret from, if any
    /// (`password_env`, `token_env`): the environment of the process that
    /// runs it, which a hosted tenant may not reach.
    pub fn environment(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => c.password_env.as_deref(),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => c.password_env.as_deref().or(c.token_env.as_deref()),
            _ => None,
        }
    }

    /// Whether the source logs what it reads before it counts (`wal`).
    pub fn wal(&self) -> bool {
        match self {
            SourceConfig::Socket(c) => c.wal,
            SourceConfig::Stdin(c) => c.wal,
            #[cfg(feature = "zeromq")]
            SourceConfig::Zeromq(c) => c.wal,
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => c.wal,
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => c.wal,
            _ => false,
        }
    }

    /// Whether the source's place can only be kept in the pipeline's state
    /// file (a folder's files read, a write-ahead log), so that a restart
    /// neither reads again nor skips anything even without stage state.
    pub fn keeps_position_locally(&self) -> bool {
        matches!(self, SourceConfig::Directory(_)) || self.wal()
    }

    /// Why this source cannot replay from a checkpoint, if it cannot.
    pub fn cannot_replay(&self) -> Option<&'static str> {
        match self {
            SourceConfig::Directory(_) | SourceConfig::Kafka(_) => None,
            _ if self.wal() => None,
            SourceConfig::Socket(_) => Some(
                "a `socket` source cannot read again what it read before a crash (set `wal = true`)",
            ),
            SourceConfig::Stdin(_) => Some(
                "a `stdin` source cannot read again what it read before a crash (set `wal = true`)",
            ),
            SourceConfig::Generator(_) => {
                Some("a `generator` source does not keep its place across runs")
            }
            SourceConfig::Http(_) => {
                Some("an `http` source cannot take again what it was sent before a crash")
            }
            #[cfg(feature = "zeromq")]
            SourceConfig::Zeromq(_) => Some(
                "a `zeromq` source cannot receive again what it received before a crash (set \
                 `wal = true`)",
            ),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) if c.qos == 0 => Some(
                "an `mqtt` source with `qos = 0` cannot receive again what it received before a \
                 crash (set `wal = true`)",
            ),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(_) => Some(
                "an `mqtt` source receives again what it had not acknowledged, but MQTT has no \
                 positions to skip what a checkpoint already covers (at-least-once only)",
            ),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) if c.jetstream() => None,
            #[cfg(feature = "nats")]
            SourceConfig::Nats(_) => Some(
                "a core `nats` source cannot receive again what it received before a crash (set \
                 `wal = true`, or read a JetStream `stream`)",
            ),
            // Left out of this build: refused when the file is checked.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Resolves the paths the source names (a `directory` source's
    /// folder) with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        match self {
            SourceConfig::Directory(c) => {
                c.path = resolve(&c.path).map_err(|m| format!("directory source `path`: {m}"))?;
            }
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => c.resolve_paths(resolve)?,
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => c.resolve_paths(resolve)?,
            _ => {}
        }
        Ok(())
    }

    /// Creates the running source from its resolved settings.
    pub fn build(&self, cx: &SourceContext<'_>) -> Result<Box<dyn Source>, SourceError> {
        let source: Box<dyn Source> = match self {
            SourceConfig::Directory(c) => Box::new(c.build(&c.path)?),
            SourceConfig::Socket(c) => Box::new(c.build()),
            SourceConfig::Stdin(c) => Box::new(c.build()),
            SourceConfig::Generator(c) => Box::new(c.build()),
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(c) => Box::new(c.build(cx.pipeline)),
            SourceConfig::Http(c) => Box::new(c.build(cx.ingest.clone())?),
            #[cfg(feature = "zeromq")]
            SourceConfig::Zeromq(c) => Box::new(c.build(cx.dead_letter.clone())),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => Box::new(c.build(cx.pipeline, cx.index)?),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => Box::new(c.build(cx.pipeline, cx.index)?),
            #[allow(unreachable_patterns)]
            other => {
                let (type_name, feature) = other.missing_feature().unwrap_or(("?", "?"));
                return Err(SourceError {
                    source_name: type_name.into(),
                    message: crate::connector::missing(type_name, feature),
                });
            }
        };
        if !self.wal() {
            return Ok(source);
        }
        Ok(Box::new(wal::WalSource::new(source, cx.wal_dir.clone())))
    }
}

/// What building a source needs besides its own settings.
#[derive(Debug, Clone)]
pub struct SourceContext<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The source's place among the pipeline's sources.
    pub index: usize,
    /// Where records the source cannot make (a malformed message) go.
    pub dead_letter: DeadLetter,
    /// The folder of the source's write-ahead log, if it keeps one.
    pub wal_dir: PathBuf,
    /// Where an `http` source without a listener of its own registers, and
    /// under which key (`sluice serve`).
    pub ingest: Option<(IngestPoints, String)>,
}
