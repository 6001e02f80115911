//! `type = "kafka"`: messages from Kafka topics, read in a consumer group.
//!
//! At-least-once: auto-commit is off, and the offsets of a batch are
//! committed only once every sink has acknowledged it (they come back
//! through [`Emitter::acked`]). Each chunk handed to the batcher carries the
//! next offset of every partition read so far, so the position of a batch
//! is its last chunk's. When the group takes partitions away, the
//! acknowledged offsets of those partitions are committed before they go;
//! what was read from them but not yet acknowledged is read again by their
//! new owner (a duplicate, never a loss).
//!
//! With stage state, the last checkpoint's offsets win over the group's
//! committed ones the first time each partition is assigned (see
//! `SourceContext::rebalance`), so the input resumes exactly where the
//! checkpointed state does.
//!
//! The consumer runs on a blocking thread of the runtime and polls with a
//! short timeout, so a stop request is seen within [`POLL_WAIT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::watch;

mod offsets;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source, SourceError, SourceTask};
use crate::batch::Records;
use crate::kafka::{LogContext, Options, client_config, validate};
use offsets::{Offsets, Partition, advance, decode, encode, partition_list};
pub(crate) use offsets::{list_partitions, push_message};

/// Longest wait for a message before the source checks for a stop request
/// and for acknowledged positions to commit.
pub const POLL_WAIT: Duration = Duration::from_millis(100);

/// Reads `topics` as member `group` of a consumer group.
///
/// ```toml
/// [[sources]]
/// type = "kafka"
/// brokers = "127.0.0.1:9092"
/// topics = ["lines"]            # or a pattern: ["^logs-.*"]
/// group = "wordcount"
/// start = "earliest"
/// options = { "fetch.min.bytes" = "1" }
/// ```
///
/// Each message becomes a record with its key, value (a message without one
/// gives an empty value), timestamp and headers. How much goes into one
/// batch is bounded by the pipeline's `max_batch_records` and
/// `max_batch_bytes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topics to read. A name starting with `^` is a regular expression
    /// matched against every topic, including ones created later.
    pub topics: Vec<String>,
    /// Consumer group: processes with the same group share the partitions,
    /// and the group's committed offsets are where reading resumes.
    pub group: String,
    /// Where to begin in a partition the group has no committed offset for.
    /// Default `latest`, as in Kafka.
    #[serde(default)]
    pub start: Start,
    /// Any librdkafka consumer property, passed through (over the engine's
    /// defaults: `session.timeout.ms` 6000, `heartbeat.interval.ms` 2000,
    /// `topic.metadata.refresh.interval.ms` 5000, `fetch.queue.backoff.ms`
    /// 20).
    #[serde(default)]
    pub options: Options,
}

/// Where reading begins in a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// The group's committed offset, else the partition's first message.
    Earliest,
    /// The group's committed offset, else only messages that arrive from now.
    #[default]
    Latest,
    /// The group's committed offset; a partition without one is an error.
    Committed,
}

impl Start {
    pub(crate) fn offset_reset(self) -> &'static str {
        match self {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
            Start::Committed => "error",
        }
    }
}

/// Properties the engine sets itself, and why.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "is set by `brokers`"),
    ("group.id", "is set by `group`"),
    ("auto.offset.reset", "is set by `start`"),
    (
        "enable.auto.commit",
        "must stay off: offsets are committed once the sinks have acknowledged a batch",
    ),
    (
        "enable.auto.offset.store",
        "must stay off: offsets are committed once the sinks have acknowledged a batch",
    ),
];

impl KafkaSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        validate("source", &self.brokers, &self.options, OWNED)?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(
                "invalid kafka source: `topics` needs at least one non-empty topic name".into(),
            );
        }
        if self.group.trim().is_empty() {
            return Err("invalid kafka source: `group` is empty".into());
        }
        Ok(())
    }

    /// The running source.
    pub fn build(&self, pipeline: &str) -> KafkaSource {
        let mut config = client_config(
            &self.brokers,
            &[
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "2000"),
                ("topic.metadata.refresh.interval.ms", "5000"),
                // When the stages fall behind the fetcher, librdkafka pauses
                // fetching once `queued.min.messages` are waiting, for this
                // long (1000 ms by default): the queue drains in a fraction
                // of that and the pipeline then idles. With a short pause the
                // `kafka` bench went from ~158k to 390k-430k lines/s.
                ("fetch.queue.backoff.ms", "20"),
                // Statistics every second: the consumer lag per partition
                // for `sluice_kafka_consumer_lag` and the dashboard.
                ("statistics.interval.ms", "1000"),
            ],
            &self.options,
        );
        config
            .set("group.id", &self.group)
            .set("client.id", format!("sluice-{pipeline}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", self.start.offset_reset());
        KafkaSource {
            config,
            topics: self.topics.clone(),
            group: self.group.clone(),
            brokers: self.brokers.clone(),
            resume: Offsets::new(),
        }
    }
}

/// The running Kafka source.
pub struct KafkaSource {
    config: rdkafka::ClientConfig,
    topics: Vec<String>,
    group: String,
    brokers: String,
    /// Offsets from the last checkpoint, which win over the group's
    /// committed ones the first time each partition is assigned.
    resume: Offsets,
}

impl Source for KafkaSource {
    fn describe(&self) -> String {
        format!(
            "kafka {} (group {}) at {}",
            self.topics.join(","),
            self.group,
            self.brokers
        )
    }

    fn resume(&mut self, position: &str) -> Result<bool, String> {
        self.resume = decode(position)?;
        Ok(true)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            tokio::task::spawn_blocking(move || self.read(emitter))
                .await
                .unwrap_or_else(|e| {
                    Err(SourceError {
                        source_name: name,
                        message: format!("reader thread failed: {e}"),
                    })
                })
        })
    }
}

/// What the consumer's callbacks share with the reading loop.
struct Shared {
    log: LogContext,
    /// Latest offsets every sink has acknowledged.
    acked: Mutex<Offsets>,
    /// Partitions taken away since the loop last looked.
    revoked: Mutex<Vec<Partition>>,
    /// Checkpoint offsets not yet applied to an assignment.
    resume: Mutex<Offsets>,
    /// Where the consumer lag goes.
    telemetry: Option<crate::telemetry::SourceTelemetry>,
}

struct SourceContext(Arc<Shared>);

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.log.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(telemetry) = &self.0.telemetry {
            telemetry.set_lag(lag_of(&statistics));
        }
    }
}

/// Per partition this consumer was assigned, the messages between the
/// group's committed offset (this source commits once the sinks have a
/// batch) and the partition's end; before the first commit, from the
/// consumer's read position.
fn lag_of(statistics: &rdkafka::Statistics) -> std::collections::BTreeMap<(String, i32), i64> {
    let mut lag = std::collections::BTreeMap::new();
    for (topic, t) in &statistics.topics {
        for p in t.partitions.values() {
            // -1 is librdkafka's internal "unassigned" partition.
            if p.partition < 0 || !p.desired {
                continue;
            }
            let behind = if p.consumer_lag >= 0 {
                p.consumer_lag
            } else if p.hi_offset >= 0 && p.app_offset >= 0 {
                (p.hi_offset - p.app_offset).max(0)
            } else {
                continue;
            };
            lag.insert((topic.clone(), p.partition), behind);
        }
    }
    lag
}

impl ConsumerContext for SourceContext {
    /// librdkafka's rebalance as rdkafka does it, except that partitions
    /// the last checkpoint covers start at the checkpoint's offsets (once),
    /// so the input continues exactly where the checkpointed state does.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assigning = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if assigning {
            let mut resume = lock(&self.0.resume);
            let mut applied = Vec::new();
            for ((topic, partition), offset) in resume.iter() {
                if tpl.find_partition(topic, *partition).is_some()
                    && tpl
                        .set_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .is_ok()
                {
                    applied.push(format!("{topic}[{partition}]@{offset}"));
                }
            }
            resume.retain(|(topic, partition), _| tpl.find_partition(topic, *partition).is_none());
            if !applied.is_empty() {
                tracing::info!(
                    "{}: starting from the checkpoint: {}",
                    self.0.log.who,
                    applied.join(" ")
                );
            }
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let outcome = match (assigning, cooperative) {
            (true, true) => consumer.incremental_assign(tpl),
            (true, false) => consumer.assign(tpl),
            (false, true) => consumer.incremental_unassign(tpl),
            (false, false) => consumer.unassign(),
        };
        if let Err(e) = outcome {
            tracing::warn!("{}: applying the rebalance failed: {e}", self.0.log.who);
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let revoked: Vec<Partition> = partitions
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // Hand over the progress the sinks have confirmed; the rest is read
        // again by the partitions' next owner.
        let keep: Offsets = {
            let mut acked = lock(&self.0.acked);
            revoked
                .iter()
                .filter_map(|p| acked.remove(p).map(|o| (p.clone(), o)))
                .collect()
        };
        if !keep.is_empty() {
            if let Err(e) = consumer.commit(&partition_list(&keep), CommitMode::Sync) {
                tracing::warn!(
                    "{}: committing offsets of revoked partitions failed ({e}): they will be read again",
                    self.0.log.who
                );
            }
        }
        tracing::info!(
            "{}: partitions revoked: {}",
            self.0.log.who,
            list_partitions(partitions)
        );
        lock(&self.0.revoked).extend(revoked);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => tracing::info!(
                "{}: partitions assigned: {}",
                self.0.log.who,
                list_partitions(partitions)
            ),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("{}: rebalance failed: {e}", self.0.log.who),
        }
    }
}

impl KafkaSource {
    /// The reading loop, on a blocking thread.
    fn read(self, emitter: Emitter) -> Result<(), SourceError> {
        let who = self.describe();
        let fail = |message: String| SourceError {
            source_name: who.clone(),
            message,
        };
        let shared = Arc::new(Shared {
            log: LogContext::new(who.clone()),
            acked: Mutex::new(Offsets::new()),
            revoked: Mutex::new(Vec::new()),
            resume: Mutex::new(self.resume.clone()),
            telemetry: emitter.telemetry().cloned(),
        });
        let consumer: BaseConsumer<SourceContext> = self
            .config
            .create_with_context(SourceContext(shared.clone()))
            .map_err(|e| fail(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        tracing::info!("{who}: subscribed, waiting for partitions");

        let mut acked = emitter.acked();
        let mut progress = Offsets::new();
        // The partition of the latest message read (see `advance`).
        let mut run_of: Option<Partition> = None;
        let mut outcome = Ok(());
        while !emitter.stopping() {
            commit_acked(&consumer, &shared, &mut acked, CommitMode::Async);
            for partition in lock(&shared.revoked).drain(..) {
                progress.remove(&partition);
            }
            // Room for a chunk once a message comes (an idle poll makes none).
            let mut records = Records::default();
            let mut wait = POLL_WAIT;
            while records.len() < CHUNK_RECORDS && records.byte_size() < CHUNK_BYTES {
                let Some(polled) = consumer.poll(wait) else {
                    break;
                };
                wait = Duration::ZERO;
                match polled {
                    Ok(message) => {
                        if records.is_empty() {
                            records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                        }
                        push_message(&mut records, &message);
                        advance(&mut progress, &mut run_of, &message);
                    }
                    Err(KafkaError::PartitionEOF(_)) => {}
                    Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                        outcome = Err(fail(format!(
                            "a partition has no committed offset for group `{}` and `start` is \"committed\" \
                             (use start = \"earliest\" or \"latest\" to begin without one)",
                            self.group
                        )));
                        break;
                    }
                    Err(e) => {
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            outcome = Err(fail(format!("fatal consumer error {code:?}: {reason}")));
                            break;
                        }
                        shared.log.error(e, "consuming");
                    }
                }
            }
            if outcome.is_err() {
                break;
            }
            if !records.is_empty()
                && emitter
                    .emit_blocking(records, Some(encode(&progress)))
                    .is_err()
            {
                break;
            }
        }
        // Commit what the sinks acknowledge until the last batch is through
        // (the batcher finishes once every source's emitter is gone).
        drop(emitter);
        let runtime = tokio::runtime::Handle::current();
        while runtime.block_on(acked.changed()).is_ok() {
            commit_acked(&consumer, &shared, &mut acked, CommitMode::Async);
        }
        let owned = consumer.assignment().unwrap_or_default();
        let committed: Offsets = lock(&shared.acked)
            .iter()
            .filter(|((topic, partition), _)| owned.find_partition(topic, *partition).is_some())
            .map(|(p, o)| (p.clone(), *o))
            .collect();
        if !committed.is_empty() {
            if let Err(e) = consumer.commit(&partition_list(&committed), CommitMode::Sync) {
                tracing::warn!(
                    "{who}: last commit failed ({e}): the next run reads those batches again"
                );
            }
        }
        tracing::info!("{who}: leaving the group");
        close_consumer(consumer, &who);
        outcome
    }
}

/// How long closing the consumer may take before the source gives up on it.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Leaves the group and releases the consumer. librdkafka's teardown can
/// wait on a request the broker never answers (seen with tansu, until its
/// socket timeout), so it runs on a thread of its own: the group has been
/// left and the offsets committed by then, and the source does not wait
/// more than [`CLOSE_WAIT`] for the rest.
pub(crate) fn close_consumer<C: ConsumerContext + 'static>(consumer: BaseConsumer<C>, who: &str) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let closer = std::thread::Builder::new()
        .name("sluice-kafka-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = done_tx.send(());
        });
    if closer.is_ok() && done_rx.recv_timeout(CLOSE_WAIT).is_err() {
        tracing::debug!("{who}: the consumer is still closing after {CLOSE_WAIT:?}; not waiting");
    }
}

/// Commits the newest acknowledged position, for the partitions this
/// consumer still owns.
fn commit_acked(
    consumer: &BaseConsumer<SourceContext>,
    shared: &Shared,
    acked: &mut watch::Receiver<Option<String>>,
    mode: CommitMode,
) {
    if !acked.has_changed().unwrap_or(false) {
        return;
    }
    let Some(position) = acked.borrow_and_update().clone() else {
        return;
    };
    let offsets = match decode(&position) {
        Ok(offsets) => offsets,
        Err(e) => {
            tracing::error!("{}: {e}", shared.log.who);
            return;
        }
    };
    let owned = consumer.assignment().unwrap_or_default();
    let offsets: Offsets = offsets
        .into_iter()
        .filter(|((topic, partition), _)| owned.find_partition(topic, *partition).is_some())
        .collect();
    lock(&shared.acked).extend(offsets.iter().map(|(p, o)| (p.clone(), *o)));
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&partition_list(&offsets), mode) {
        shared.log.error(e, "committing offsets");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_maps_to_the_offset_reset_policy() {
        assert_eq!(Start::Earliest.offset_reset(), "earliest");
        assert_eq!(Start::Latest.offset_reset(), "latest");
        assert_eq!(Start::Committed.offset_reset(), "error");
        assert_eq!(Start::default(), Start::Latest);
    }
}
