//! State that moves with its partition: each stateful stage's checkpointed
//! writes also go to a compacted Kafka topic, its **changelog**, in the
//! partition of the task that wrote them; a process that gains a partition
//! restores that task's state from the changelog before the task reads a
//! record — from where its local file left off, or from the start when it
//! has none (a new machine).
//!
//! - Topics: `<pipeline>-<stage>-changelog` for a stage's own state (its
//!   plugin uses the `state` interface) and `<pipeline>-<stage>-window-changelog`
//!   for the records a windowed stage holds. Created with the input topic's
//!   partition count and `cleanup.policy = compact` when missing; one that
//!   exists with another partition count is refused, naming both
//!   (`topics`).
//! - Writing: [`TaskChangelog`], the store's [`Changelog`]. A checkpoint
//!   sends its writes (keys as the stage wrote them; a deletion as a
//!   tombstone) and waits for the broker's acknowledgements before the
//!   state file commits, and the file records the offset it reached.
//! - Restoring: [`restore`], in a task's preparation.
//!
//! Under at-least-once a crash between the changelog and the file's commit
//! leaves that batch's writes in the changelog while its input is read
//! again: what the batch added is then counted twice, as the batch's output
//! is (the at-least-once contract; Kafka Streams behaves the same).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::board::RestoreProgress;
use super::transaction::TaskTransaction;
use crate::state::{Changelog, StateStore, Writes};

/// Longest wait for the broker's acknowledgement of a checkpoint's writes,
/// and for metadata.
const WAIT: Duration = Duration::from_secs(60);

/// Records applied to the state file per transaction while restoring.
const RESTORE_CHUNK: usize = 10_000;

/// The changelog topic of each changelogged table of a pipeline: table
/// (`stage:<name>`, `window:<name>`) → topic.
pub type Topics = BTreeMap<String, String>;

/// The changelog topics of `pipeline` for `stateful` stages (those whose
/// plugin keeps state) and `windowed` ones.
pub fn topics(pipeline: &str, stateful: &[String], windowed: &[String]) -> Topics {
    let mut topics = Topics::new();
    for stage in stateful {
        topics.insert(
            format!("stage:{stage}"),
            format!("{pipeline}-{stage}-changelog"),
        );
    }
    for stage in windowed {
        topics.insert(
            format!("window:{stage}"),
            format!("{pipeline}-{stage}-window-changelog"),
        );
    }
    topics
}

/// What the producer's acknowledgements tell: the offset after the last
/// record acknowledged per topic, and the first failure.
#[derive(Default)]
pub struct Acks {
    next: Mutex<HashMap<String, i64>>,
    failed: Mutex<Option<String>>,
}

impl Acks {
    /// After a flush: the first failure since the last call, or else, per
    /// topic, the offset after the last record acknowledged.
    pub fn settle(&self) -> Result<HashMap<String, i64>, String> {
        if let Some(failed) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(failed);
        }
        Ok(self.next.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Sends `record`, letting the producer drain while its queue is full.
pub fn send_waiting(
    producer: &BaseProducer<Acks>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let at = next.entry(message.topic().to_string()).or_insert(-1);
                *at = (*at).max(message.offset() + 1);
            }
            Err((e, message)) => {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.get_or_insert_with(|| format!("{}: {e}", message.topic()));
            }
        }
    }
}

/// A task's changelog writer: its partition of each changelog topic.
pub struct TaskChangelog {
    writer: Writer,
    partition: i32,
    topics: Topics,
}

/// What sends a task's changelog records.
enum Writer {
    /// A producer of its own (at-least-once).
    Own(BaseProducer<Acks>),
    /// The task's transaction (exactly-once): the records commit with the
    /// batch's output and input offsets.
    Transaction(Arc<TaskTransaction>),
}

impl TaskChangelog {
    /// A writer to `partition` of `topics`, in `transaction` when there is
    /// one.
    pub fn new(
        config: &ClientConfig,
        partition: i32,
        topics: Topics,
        transaction: Option<Arc<TaskTransaction>>,
    ) -> Result<Self, String> {
        let writer = match transaction {
            Some(transaction) => Writer::Transaction(transaction),
            None => Writer::Own(
                config
                    .clone()
                    // Every record acknowledged by all in-sync replicas, in order.
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "5")
                    .create_with_context(Acks::default())
                    .map_err(|e| format!("cannot create the changelog producer: {e}"))?,
            ),
        };
        Ok(TaskChangelog {
            writer,
            partition,
            topics,
        })
    }
}

impl Changelog for TaskChangelog {
    fn logs(&self, table: &str) -> bool {
        self.topics.contains_key(table)
    }

    fn send(&self, table: &str, writes: &Writes) -> Result<(), String> {
        let Some(topic) = self.topics.get(table) else {
            return Ok(());
        };
        for (key, value) in writes {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .partition(self.partition)
                .key(key.as_slice());
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            match &self.writer {
                Writer::Transaction(transaction) => transaction.send(record)?,
                Writer::Own(producer) => {
                    send_waiting(producer, record).map_err(|e| format!("{topic}: {e}"))?
                }
            }
        }
        if let Writer::Own(producer) = &self.writer {
            producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn flush(&self) -> Result<Vec<(String, i64)>, String> {
        let next = match &self.writer {
            Writer::Transaction(transaction) => transaction.flush()?,
            Writer::Own(producer) => {
                producer
                    .flush(WAIT)
                    .map_err(|e| format!("waiting for the broker's acknowledgements: {e}"))?;
                producer.context().settle()?
            }
        };
        Ok(self
            .topics
            .iter()
            .filter_map(|(table, topic)| next.get(topic).map(|n| (table.clone(), *n)))
            .collect())
    }
}

/// The offset `group` has committed for `topic`'s `partition` (`None`:
/// nothing committed).
pub fn committed_offset(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, String> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a consumer to read the group's offsets: {e}"))?;
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let committed = consumer.committed_offsets(list, WAIT).map_err(|e| {
        format!("cannot read group `{group}`'s offset of {topic}[{partition}]: {e}")
    })?;
    Ok(committed
        .find_partition(topic, partition)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }))
}

/// How long a restore goes between progress reports in the log.
pub const RESTORE_REPORT: Duration = Duration::from_secs(5);

/// Why a restore ended early.
pub enum RestoreError {
    /// The task was cancelled (its partition went) meanwhile.
    Cancelled,
    /// The broker or the state file failed.
    Failed(String),
}

impl From<String> for RestoreError {
    fn from(message: String) -> Self {
        RestoreError::Failed(message)
    }
}

/// Brings `table` of `store` up to date from `partition` of its changelog
/// `topic`: from the file's recorded position when it has one, else from
/// the changelog's start, to the end the broker reports in its fetch
/// answers (the partition's end-of-file event; not a `ListOffsets` asked
/// beforehand, which the test broker answers with the last batch's first
/// offset — that one only estimates the progress). Calls `progress` after
/// each chunk applied and stops between chunks once `cancel` is set.
/// Returns what it did and whether it started from the local file's
/// position (else from the changelog's start).
pub fn restore(
    config: &ClientConfig,
    store: &StateStore,
    table: &str,
    topic: &str,
    partition: i32,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&RestoreProgress),
) -> Result<(RestoreProgress, bool), RestoreError> {
    let consumer = reader(config, "sluice-changelog-restore")
        .map_err(|e| format!("cannot create the restore consumer: {e}"))?;
    let local = store.changelog_position(table).map_err(|e| e.to_string())?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(
        topic,
        partition,
        local.map_or(Offset::Beginning, Offset::Offset),
    )
    .map_err(|e| e.to_string())?;
    consumer.assign(&at).map_err(|e| e.to_string())?;
    let end = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .ok()
        .map(|(_, high)| high);
    let mut incremental = local.is_some();
    let mut restored = RestoreProgress {
        changelog: format!("{topic}[{partition}]"),
        from: -1,
        at: local.unwrap_or(0),
        end,
        records: 0,
        bytes: 0,
    };
    let mut chunk: Chunk = Vec::with_capacity(RESTORE_CHUNK);
    let mut quiet_since = Instant::now();
    loop {
        if cancel.load(Ordering::Acquire) {
            return Err(RestoreError::Cancelled);
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                if restored.from < 0 {
                    restored.from = message.offset();
                    if local.is_some_and(|l| message.offset() < l) {
                        // Reset to the start: the local position was past
                        // the end.
                        tracing::warn!(
                            "{topic}[{partition}] ends before the local state's position {} (was \
                             the topic deleted and made again?): restoring from its start over \
                             the local state",
                            local.unwrap_or(0)
                        );
                        incremental = false;
                    }
                }
                restored.at = message.offset() + 1;
                let Some(key) = message.key() else { continue };
                let value = message.payload().map(<[u8]>::to_vec);
                restored.bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
                chunk.push((key.to_vec(), value));
                if chunk.len() >= RESTORE_CHUNK {
                    store
                        .restore(table, &chunk, restored.at)
                        .map_err(|e| e.to_string())?;
                    restored.records += chunk.len() as u64;
                    chunk.clear();
                    progress(&restored);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(format!("reading {topic}[{partition}]: {e}").into()),
            None if quiet_since.elapsed() > WAIT => {
                return Err(format!(
                    "{topic}[{partition}] gave nothing for {} s after offset {}",
                    WAIT.as_secs(),
                    restored.at
                )
                .into());
            }
            None => {}
        }
    }
    if restored.from < 0 {
        restored.from = restored.at;
    }
    if !chunk.is_empty() || local.is_none() {
        restored.records += chunk.len() as u64;
        store
            .restore(table, &chunk, restored.at)
            .map_err(|e| e.to_string())?;
    }
    restored.end = Some(restored.at);
    Ok((restored, incremental))
}

/// Records read from a changelog, to apply: keys and values (`None`: a
/// deletion).
pub type Chunk = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A consumer of changelog partitions it is assigned (restores and
/// standbys; never a group member, so `group` only names it).
pub fn reader(config: &ClientConfig, group: &str) -> Result<BaseConsumer, KafkaError> {
    config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // A local position past the changelog's end (the topic was deleted
        // and made again) starts over from its beginning.
        .set("auto.offset.reset", "earliest")
        // Fetches again as soon as the local queue has room (librdkafka's
        // default backs off a second once `queued.min.messages` wait),
        // which bounds a restore at about 100,000 records a second.
        .set("fetch.queue.backoff.ms", "20")
        .create()
}

/// Calls `report` when `interval` has passed since the start or the last
/// call (the log's progress lines during a long restore, every
/// [`RESTORE_REPORT`]).
pub fn every(
    interval: Duration,
    mut report: impl FnMut(&RestoreProgress),
) -> impl FnMut(&RestoreProgress) {
    let mut last = Instant::now();
    move |p| {
        if last.elapsed() >= interval {
            last = Instant::now();
            report(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_once_per_interval() {
        let mut reported = Vec::new();
        let progress = |records| RestoreProgress {
            changelog: "wc-count-changelog[0]".into(),
            from: 0,
            at: records as i64,
            end: Some(100),
            records,
            bytes: records * 10,
        };
        {
            let mut report = every(Duration::from_millis(200), |p| reported.push(p.records));
            report(&progress(10)); // too soon
            std::thread::sleep(Duration::from_millis(250));
            report(&progress(20));
            report(&progress(30)); // too soon again
            std::thread::sleep(Duration::from_millis(250));
            report(&progress(40));
        }
        assert_eq!(reported, [20, 40]);
        assert_eq!(progress(40).percent(), Some(40));
        // Never 100 until the restore ends.
        assert_eq!(progress(100).percent(), Some(99));
    }

    #[test]
    fn a_stages_state_and_its_windows_records_have_topics_of_their_own() {
        let topics = topics("wc", &["count".into()], &["count".into(), "avg".into()]);
        let expected: Topics = [
            ("stage:count", "wc-count-changelog"),
            ("window:count", "wc-count-window-changelog"),
            ("window:avg", "wc-avg-window-changelog"),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
        assert_eq!(topics, expected);
        // The tables named as the store names them.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(dir.path(), "p").unwrap();
        assert_eq!(
            crate::state::StageState::window(store.clone(), "avg").table,
            "window:avg"
        );
        assert_eq!(
            crate::state::StageState::new(store, "count").table,
            "stage:count"
        );
    }
}
