//! Exactly-once across processes: each task's batches are Kafka
//! transactions that carry, together, the batch's output (to the sink's
//! topic or the next part's repartition topic), its state's changelog
//! records and its input offset, committed to the pipeline's consumer group.
//! Either all of a batch is visible to `read_committed` readers and to the
//! next owner of the partition, or none of it is.
//!
//! **One transactional producer per task**, not per process, with the id
//! `sluice-<group>-<task>`. A task that moves to another process is
//! started there with the same id, and `init_transactions` fences every
//! earlier producer of that id — the process that lost the partition
//! (a zombie: paused past its session, cut off from the group) cannot
//! commit again, and the broker aborts whatever transaction it left open.
//! Fencing by id works whatever the broker does with the group's
//! generation, where a producer per process (Kafka's KIP-447) relies on the
//! broker fencing by generation alone; the cost is a producer (a
//! connection set and a transaction) per task, which is small for tens of
//! partitions per process. The offsets still carry the group's current
//! metadata, read at each commit, so a broker that checks the generation
//! refuses a commit from a member the group has moved past: that task
//! stops, marked as having lost its partition ([`TaskTransaction::lost`]),
//! and the process goes on.
//!
//! Kafka holds the truth: the group's committed offset, the committed
//! output and the committed changelog always agree. A task's local state
//! file is a cache of the changelog, used when the task last stopped
//! cleanly (every batch committed, see [`clean`]) and otherwise rebuilt
//! from the changelog, so state that a batch wrote locally but whose
//! transaction never committed is never kept.
//!
//! Not here: when the steps run (`delivery`: write, checkpoint, commit),
//! restoring (`changelog`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::{Acks, send_waiting};
use super::task::parse_position;
use crate::batch::Records;
use crate::sink::kafka::{message, topic_of};
use crate::sink::{BatchMeta, Partitioner, Sink, SinkError};

/// How a fenced task's error begins.
const FENCED: &str = "fenced: another process has started this task";

/// How the error of a task whose commit met a rebalance begins.
const MIGRATED: &str = "the consumer group moved on during the commit";

/// Longest wait for one transaction step (a retriable timeout is tried
/// again, up to [`RETRIES`] times).
const WAIT: Duration = Duration::from_secs(10);

/// Times a retriable commit failure is tried again.
const RETRIES: u32 = 5;

/// Reads the consumer group's metadata (id, generation, member) as the
/// member's consumer has it now: each transaction's offsets carry it, and
/// a broker refuses offsets of an older generation.
pub type GroupMetadata = OnceLock<Box<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>>;

/// A task's transactional producer (see the module's notes).
pub struct TaskTransaction {
    producer: BaseProducer<Acks>,
    /// Whether a transaction is open.
    open: AtomicBool,
    group: Arc<GroupMetadata>,
    id: String,
    /// Set once the task is fenced or its commit met a rebalance: its
    /// partition belongs elsewhere now, so the member goes on without it
    /// (the partition's next owner starts from the last committed
    /// transaction) instead of failing the pipeline.
    lost: Arc<AtomicBool>,
}

impl TaskTransaction {
    /// The producer with transactional id `id`, started: every earlier
    /// producer of the id is fenced and its open transaction aborted.
    pub fn start(
        config: &ClientConfig,
        id: String,
        group: Arc<GroupMetadata>,
    ) -> Result<TaskTransaction, String> {
        let producer: BaseProducer<Acks> = config
            .clone()
            .set("transactional.id", &id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A transaction may not outlive its messages' retries.
            .set("message.timeout.ms", "60000")
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .create_with_context(Acks::default())
            .map_err(|e| format!("cannot create the transactional producer `{id}`: {e}"))?;
        producer
            .init_transactions(WAIT)
            .map_err(|e| format!("cannot start transactions as `{id}`: {e}"))?;
        Ok(TaskTransaction {
            producer,
            open: AtomicBool::new(false),
            group,
            id,
            lost: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Turns true once the task has lost its partition (fenced, or its
    /// commit met a rebalance).
    pub fn lost(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Opens a transaction unless one is open.
    fn begin(&self) -> Result<(), String> {
        if self.open.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.producer.begin_transaction().map_err(|e| {
            self.open.store(false, Ordering::Release);
            self.describe(&e, "cannot begin a transaction")
        })
    }

    /// Sends `record` in the open transaction (opening one if needed).
    pub fn send(&self, record: BaseRecord<'_, [u8], [u8]>) -> Result<(), String> {
        self.begin()?;
        send_waiting(&self.producer, record).map_err(|e| self.describe(&e, "cannot send"))
    }

    /// Waits until everything sent is acknowledged; returns, per topic, the
    /// offset after the last record acknowledged so far.
    pub fn flush(&self) -> Result<HashMap<String, i64>, String> {
        self.producer
            .flush(WAIT)
            .map_err(|e| self.describe(&e, "waiting for the broker's acknowledgements"))?;
        self.producer.context().settle()
    }

    /// Commits the open transaction (opening one for `offsets` alone when
    /// none is) with the input's `offsets` for the consumer group. A
    /// retriable failure is tried again; any other ends the task, whose
    /// next start begins from the last committed transaction.
    pub fn commit(&self, offsets: &TopicPartitionList) -> Result<(), String> {
        if !self.open.load(Ordering::Acquire) && offsets.count() == 0 {
            return Ok(());
        }
        self.begin()?;
        if offsets.count() > 0 {
            let group = self
                .group
                .get()
                .and_then(|read| read())
                .ok_or("the consumer has no group metadata yet")?;
            self.retrying(|| {
                self.producer
                    .send_offsets_to_transaction(offsets, &group, WAIT)
            })
            .map_err(|e| self.abort_after(&e, "cannot add the input offsets"))?;
        }
        self.retrying(|| self.producer.commit_transaction(WAIT))
            .map_err(|e| self.abort_after(&e, "cannot commit"))?;
        self.open.store(false, Ordering::Release);
        Ok(())
    }

    fn retrying(&self, step: impl Fn() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let mut attempt = 0;
        loop {
            match step() {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
                other => return other,
            }
        }
    }

    /// Aborts the open transaction after `error` (when the producer can);
    /// returns the error's description.
    fn abort_after(&self, error: &KafkaError, what: &str) -> String {
        let abortable = matches!(error, KafkaError::Transaction(e) if e.txn_requires_abort());
        if abortable && self.producer.abort_transaction(WAIT).is_ok() {
            self.open.store(false, Ordering::Release);
        }
        self.describe(error, what)
    }

    /// `error` in words, saying so when this producer was fenced.
    fn describe(&self, error: &KafkaError, what: &str) -> String {
        let is_fence = |code: RDKafkaErrorCode| {
            matches!(
                code,
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        };
        let fenced = match error {
            KafkaError::Transaction(e) => is_fence(e.code()),
            other => other.rdkafka_error_code().is_some_and(is_fence),
        } || self
            .producer
            .client()
            .fatal_error()
            .is_some_and(|(code, _)| is_fence(code));
        let migrated = match error {
            KafkaError::Transaction(e) => is_migration(e.code()),
            other => other.rdkafka_error_code().is_some_and(is_migration),
        };
        if fenced || migrated {
            self.lost.store(true, Ordering::Release);
        }
        if fenced {
            format!(
                "{FENCED} (transactional id `{}`), so this one lost its partition; it stops \
                 writing ({what}: {error})",
                self.id
            )
        } else if migrated {
            format!(
                "{MIGRATED} (a rebalance; transactional id `{}`): the batch is aborted and the \
                 partition's owner starts again from the last committed transaction ({what}: \
                 {error})",
                self.id
            )
        } else {
            format!("transaction `{}`: {what}: {error}", self.id)
        }
    }
}

/// Whether `code` says the group has moved to another generation (the
/// offsets' metadata is stale), not that the producer is fenced.
fn is_migration(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
    )
}

impl Drop for TaskTransaction {
    fn drop(&mut self) {
        // A task that failed mid-batch: let readers past its transaction
        // now rather than at its timeout (the next owner's start would
        // abort it too).
        if self.open.load(Ordering::Acquire) {
            let _ = self.producer.abort_transaction(Duration::from_secs(5));
        }
    }
}

/// A task's output under exactly-once: its records go, in the task's
/// transaction, to the pipeline's Kafka sink topic or to the next part's
/// repartition topic; `commit` adds the input offsets and commits.
pub struct TaskOutput {
    transaction: Arc<TaskTransaction>,
    topic: Option<String>,
    topic_header: Option<String>,
    partitioner: Option<Partitioner>,
    who: String,
}

impl TaskOutput {
    /// Output to `topic` (or the topic a record's `topic_header` names),
    /// each record to the partition `partitioner` picks when there is one.
    pub fn new(
        transaction: Arc<TaskTransaction>,
        topic: Option<String>,
        topic_header: Option<String>,
        partitioner: Option<Partitioner>,
    ) -> TaskOutput {
        let who = format!(
            "kafka {} (transaction `{}`)",
            topic.as_deref().unwrap_or("(by header)"),
            transaction.id
        );
        TaskOutput {
            transaction,
            topic,
            topic_header,
            partitioner,
            who,
        }
    }

    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.who.clone(),
            message,
        }
    }
}

impl Sink for TaskOutput {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        for i in 0..records.len() {
            let record = records.get(i);
            let topic = topic_of(&record, self.topic.as_deref(), self.topic_header.as_deref())
                .map_err(|e| self.error(format!("batch {}, record {i}: {e}", batch.id)))?;
            let mut m = message(&record, topic, ());
            if let Some(partitioner) = &self.partitioner {
                m = m.partition(partitioner(&record));
            }
            self.transaction.send(m).map_err(|e| self.error(e))?;
        }
        self.transaction
            .flush()
            .map(|_| ())
            .map_err(|e| self.error(format!("batch {}: {e}", batch.id)))
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let mut offsets = TopicPartitionList::new();
        for position in batch.positions {
            let added = parse_position(&position.position).and_then(|(topic, partition, next)| {
                offsets
                    .add_partition_offset(topic, partition, Offset::Offset(next))
                    .ok()
            });
            if added.is_none() {
                return Err(self.error(format!(
                    "batch {}: position `{}` is not a Kafka offset: its transaction is not \
                     committed without it",
                    batch.id, position.position
                )));
            }
        }
        self.transaction
            .commit(&offsets)
            .map_err(|e| self.error(format!("batch {}: {e}", batch.id)))
    }

    fn commits_every_checkpoint(&self) -> bool {
        true
    }
}

/// The file whose presence says a task's state file matches what Kafka
/// has committed: written when the task stops cleanly (every batch
/// committed), removed when it starts again.
pub fn clean(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}
