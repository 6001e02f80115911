//! `type = "kafka"`: each record becomes a message, with its key, value,
//! timestamp and headers.
//!
//! The producer is idempotent with `acks=all`. A batch is acknowledged only
//! when every message's delivery report is back and none failed; failed
//! messages are sent again, by a new producer, up to [`ATTEMPTS`] times,
//! and then the batch fails the pipeline, so its source positions are not committed and it is read
//! again on the next run. Nothing is dropped silently.
//!
//! Under `delivery = "exactly-once"` each batch is one transaction
//! (transactional id `sluice-<pipeline>-sink<index>`): `write` opens it and
//! sends the batch, `commit` (after the engine's checkpoint) adds a progress
//! marker and commits. The marker is an offset committed, inside the same
//! transaction, for partition 0 of `topic` in the consumer group named as
//! the transactional id: its value is the checkpoint's number. At start,
//! the new producer fences the old one (whose open transaction the broker
//! aborts), and if the marker is behind the last checkpoint the batch of that
//! checkpoint is written again from the copy the engine kept with it. When
//! the state file was deleted or replaced by an older copy, so that the
//! marker is ahead of its last checkpoint, the sink first sets the marker
//! back to that checkpoint. Readers with `isolation.level = read_committed`
//! see every batch once.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;

use super::{BatchMeta, Sink, SinkError};
use crate::batch::{RecordRef, Records};
use crate::kafka::{LogContext, Options, client_config, validate};

/// Times a batch's undelivered messages are sent before the batch fails.
pub const ATTEMPTS: usize = 3;

/// Longest wait for one transaction step (init, commit, abort, marker read).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes records to a topic.
///
/// ```toml
/// [[sinks]]
/// type = "kafka"
/// brokers = "127.0.0.1:9092"
/// topic = "counts"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to write to (for records without `topic_header`).
    #[serde(default)]
    pub topic: Option<String>,
    /// A record header naming the topic to write that record to; records
    /// without it go to `topic`.
    #[serde(default)]
    pub topic_header: Option<String>,
    /// Any librdkafka producer property, passed through (over the engine's
    /// defaults: `message.timeout.ms` 120000, the longest a message is
    /// retried before its delivery fails, and `linger.ms` 5; under
    /// exactly-once delivery `message.timeout.ms` and
    /// `transaction.timeout.ms` are both 60000).
    #[serde(default)]
    pub options: Options,
}

/// Properties the engine sets itself, and why.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "is set by `brokers`"),
    (
        "enable.idempotence",
        "must stay on: retries must not duplicate or reorder messages",
    ),
    (
        "acks",
        "must stay `all`: a batch counts as written only once every replica has it",
    ),
    (
        "transactional.id",
        "is set by the engine under `delivery = \"exactly-once\"` (`sluice-<pipeline>-sink<index>`)",
    ),
];

impl KafkaSinkConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        validate("sink", &self.brokers, &self.options, OWNED)?;
        match (&self.topic, &self.topic_header) {
            (None, None) => Err("invalid kafka sink: set `topic` (or `topic_header`)".into()),
            (Some(t), _) if t.trim().is_empty() => {
                Err("invalid kafka sink: `topic` is empty".into())
            }
            (_, Some(h)) if h.is_empty() => {
                Err("invalid kafka sink: `topic_header` is empty".into())
            }
            _ => Ok(()),
        }
    }

    /// The running sink, the `index`-th of pipeline `pipeline`; the
    /// producer connects on first use, except under exactly-once delivery,
    /// where it starts by fencing the previous run's producer.
    pub fn build(
        &self,
        pipeline: &str,
        index: usize,
        exactly_once: bool,
    ) -> Result<KafkaSink, SinkError> {
        // A transaction may not outlive its messages' retries; a crashed
        // run's open transaction holds read_committed readers back until
        // the restart fences it, or for `transaction.timeout.ms` at most.
        let defaults: &[(&str, &str)] = if exactly_once {
            &[
                ("message.timeout.ms", "60000"),
                ("transaction.timeout.ms", "60000"),
                ("linger.ms", "5"),
            ]
        } else {
            &[("message.timeout.ms", "120000"), ("linger.ms", "5")]
        };
        let mut config = client_config(&self.brokers, defaults, &self.options);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("client.id", format!("sluice-{pipeline}"));
        let who = format!(
            "kafka sink {} at {}",
            self.topic.as_deref().unwrap_or("(by header)"),
            self.brokers
        );
        let fail = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        let transactions = match (exactly_once, &self.topic) {
            (true, Some(topic)) => {
                let id = format!("sluice-{pipeline}-sink{index}");
                config.set("transactional.id", &id);
                // The sink's `options` too: security settings apply to it.
                let group: BaseConsumer = client_config(&self.brokers, &[], &self.options)
                    .set("group.id", &id)
                    .set("enable.auto.commit", "false")
                    .create()
                    .map_err(|e| fail(format!("cannot create the marker's consumer: {e}")))?;
                Some(Transactions {
                    group,
                    marker_topic: topic.clone(),
                    open: None,
                })
            }
            (true, None) => return Err(fail("exactly-once delivery needs a `topic`".into())),
            (false, _) => None,
        };
        let mut sink = KafkaSink {
            producer: None,
            config,
            topic: self.topic.clone(),
            topic_header: self.topic_header.clone(),
            partitioner: None,
            who: who.clone(),
            transactions,
        };
        // Catch bad properties now, not at the first batch (and fence the
        // last run's transactional producer before recovering).
        let producer = sink.producer().map_err(fail)?;
        if sink.transactions.is_some() {
            sink.producer = Some(producer);
        }
        Ok(sink)
    }
}

/// Picks each record's partition (the engine's repartition topics); without
/// one the producer's partitioner does.
pub type Partitioner = Box<dyn Fn(&RecordRef<'_>) -> i32 + Send + Sync>;

/// The running Kafka sink.
pub struct KafkaSink {
    producer: Option<BaseProducer<SinkContext>>,
    config: rdkafka::ClientConfig,
    topic: Option<String>,
    topic_header: Option<String>,
    partitioner: Option<Partitioner>,
    who: String,
    /// Exactly-once delivery: each batch is a transaction.
    transactions: Option<Transactions>,
}

/// What exactly-once delivery needs besides the producer.
struct Transactions {
    /// A consumer in the group named as the transactional id: its metadata
    /// goes with each transaction's marker, and it reads the marker back.
    group: BaseConsumer,
    /// The marker's topic (its partition 0).
    marker_topic: String,
    /// The records of the open transaction, to write again if it has to
    /// start over.
    open: Option<Records>,
}

/// Collects the failed deliveries of the batch being written.
struct SinkContext {
    log: LogContext,
    /// Index of each failed record, with why.
    failed: Mutex<Vec<(usize, KafkaError)>>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((error, _)) = result {
            self.failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((index, error.clone()));
        }
    }
}

impl KafkaSink {
    /// Sends each record to the partition `partitioner` picks.
    pub fn partitioned(mut self, partitioner: Partitioner) -> Self {
        self.partitioner = Some(partitioner);
        self
    }

    fn producer(&self) -> Result<BaseProducer<SinkContext>, String> {
        let producer: BaseProducer<SinkContext> = self
            .config
            .create_with_context(SinkContext {
                log: LogContext::new(self.who.clone()),
                failed: Mutex::new(Vec::new()),
            })
            .map_err(|e| format!("cannot create the producer: {e}"))?;
        if self.transactions.is_some() {
            // Fences every earlier producer with this transactional id; the
            // broker aborts whatever transaction it left open.
            producer
                .init_transactions(TRANSACTION_TIMEOUT)
                .map_err(|e| format!("cannot start transactions: {e}"))?;
        }
        Ok(producer)
    }

    /// Opens a transaction and sends `records` in it (a fresh producer and
    /// transaction for each of up to [`ATTEMPTS`] tries). On success the
    /// transaction stays open for [`KafkaSink::commit_transaction`].
    fn write_transaction(&mut self, records: &Records) -> Result<(), String> {
        let all: Vec<usize> = (0..records.len()).collect();
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if self.producer.is_none() {
                self.producer = Some(self.producer()?);
            }
            let began = self
                .producer
                .as_ref()
                .expect("just set")
                .begin_transaction();
            if let Err(e) = began {
                last = format!("cannot begin a transaction: {e}");
                self.producer = None;
                continue;
            }
            let (failed, reason) = self.send(records, &all)?;
            if failed.is_empty() && reason.is_none() {
                if let Some(t) = &mut self.transactions {
                    t.open = Some(records.clone());
                }
                return Ok(());
            }
            last = reason.unwrap_or_else(|| format!("{} messages not delivered", failed.len()));
            if let Some(producer) = self.producer.take() {
                let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
            }
            if attempt < ATTEMPTS {
                tracing::warn!(
                    "{}: transaction aborted ({last}); writing it again",
                    self.who
                );
            }
        }
        Err(format!("the transaction failed {ATTEMPTS} times: {last}"))
    }

    /// Commits the open transaction with the marker for checkpoint
    /// `number`. A retriable failure repeats only the step that failed; an
    /// abortable one aborts and writes the batch again; any other leaves the
    /// outcome unknown, so a fresh producer fences this one (which settles
    /// the transaction) and the marker says whether it committed before the
    /// batch is written again.
    fn commit_transaction(&mut self, number: u64) -> Result<(), String> {
        let mut last = String::new();
        let mut offsets_sent = false;
        for attempt in 1..=ATTEMPTS * 3 {
            let t = self.transactions.as_ref().expect("transactional");
            let Some(producer) = &self.producer else {
                return Err("no open transaction to commit".into());
            };
            let mut result = Ok(());
            if !offsets_sent {
                let mut marker = TopicPartitionList::new();
                marker
                    .add_partition_offset(&t.marker_topic, 0, Offset::Offset(number as i64))
                    .map_err(|e| format!("marker: {e}"))?;
                let meta = t
                    .group
                    .group_metadata()
                    .ok_or("the marker's consumer has no group metadata")?;
                result = producer.send_offsets_to_transaction(&marker, &meta, TRANSACTION_TIMEOUT);
                offsets_sent = result.is_ok();
            }
            let result = result.and_then(|()| producer.commit_transaction(TRANSACTION_TIMEOUT));
            let error = match result {
                Ok(()) => {
                    if let Some(t) = &mut self.transactions {
                        t.open = None;
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            last = error.to_string();
            let (retriable, abortable) = match &error {
                KafkaError::Transaction(e) => (e.is_retriable(), e.txn_requires_abort()),
                _ => (false, false),
            };
            if retriable {
                tracing::warn!("{}: commit failed ({last}); trying again", self.who);
                std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                continue;
            }
            let records = self
                .transactions
                .as_ref()
                .and_then(|t| t.open.clone())
                .ok_or("no records to write again")?;
            let aborted = abortable && producer.abort_transaction(TRANSACTION_TIMEOUT).is_ok();
            if !aborted {
                // Outcome unknown: fence, then ask the marker.
                self.producer = None;
                self.producer = Some(self.producer()?);
                // The marker never passes the checkpoint being committed:
                // equal means this very transaction went through.
                if self.marker()? == Some(number) {
                    if let Some(t) = &mut self.transactions {
                        t.open = None;
                    }
                    return Ok(());
                }
            }
            tracing::warn!(
                "{}: commit failed ({last}); writing the batch again",
                self.who
            );
            self.write_transaction(&records)?;
            offsets_sent = false;
        }
        Err(format!("cannot commit the transaction: {last}"))
    }

    /// The number of the last checkpoint whose output is committed, from
    /// the marker (None before the first).
    fn marker(&self) -> Result<Option<u64>, String> {
        let t = self.transactions.as_ref().expect("transactional");
        let mut list = TopicPartitionList::new();
        list.add_partition(&t.marker_topic, 0);
        let committed = t
            .group
            .committed_offsets(list, TRANSACTION_TIMEOUT)
            .map_err(|e| format!("cannot read the transaction marker: {e}"))?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(n) if n >= 0 => Some(n as u64),
            _ => None,
        }))
    }

    /// Sends the records at `indexes`; returns the ones whose delivery
    /// failed, with the last reason.
    fn send(
        &mut self,
        records: &Records,
        indexes: &[usize],
    ) -> Result<(Vec<usize>, Option<String>), String> {
        if self.producer.is_none() {
            self.producer = Some(self.producer()?);
        }
        let producer = self.producer.as_ref().expect("just set");
        for &i in indexes {
            let record = records.get(i);
            let topic = topic_of(&record, self.topic.as_deref(), self.topic_header.as_deref())
                .map_err(|e| format!("record {i}: {e}"))?;
            let mut message = message(&record, topic, i);
            if let Some(partitioner) = &self.partitioner {
                message = message.partition(partitioner(&record));
            }
            loop {
                match producer.send(message) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The producer's queue is full: let it drain.
                        producer.poll(Duration::from_millis(50));
                        message = back;
                    }
                    Err((e, _)) => return Err(format!("record {i} to `{topic}`: {e}")),
                }
            }
        }
        // Waits for every delivery report (librdkafka retries within
        // `message.timeout.ms`, so this ends).
        let flushed = producer.flush(None::<Duration>);
        let mut failed = std::mem::take(
            &mut *producer
                .context()
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut reason = failed.last().map(|(_, e)| e.to_string());
        if let Err(e) = flushed {
            reason = Some(format!("flush: {e}"));
        }
        if let Some((code, why)) = producer.client().fatal_error() {
            reason = Some(format!("fatal producer error {code:?}: {why}"));
        }
        if reason.is_some() {
            // A new producer (with a new producer id) takes over the retries:
            // this one may be fenced, fatally failed, or known by a broker
            // that has since lost its state.
            self.producer = None;
        }
        failed.sort_unstable_by_key(|(i, _)| *i);
        let failed: Vec<usize> = failed.into_iter().map(|(i, _)| i).collect();
        if flushed_incomplete(&reason, &failed) {
            // Flush gave up with reports missing: resend the whole set.
            return Ok((indexes.to_vec(), reason));
        }
        Ok((failed, reason))
    }
}

/// Where `record` goes: the topic its `header` names, else `topic`.
pub fn topic_of<'r>(
    record: &RecordRef<'r>,
    topic: Option<&'r str>,
    header: Option<&str>,
) -> Result<&'r str, String> {
    if let Some(name) = header {
        if let Some((_, value)) = record.headers().find(|(n, _)| *n == name.as_bytes()) {
            return std::str::from_utf8(value)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("header `{name}` is not a topic name"));
        }
    }
    topic.ok_or_else(|| format!("no header `{}` and no `topic`", header.unwrap_or("")))
}

/// `record` as a message to `topic`: its key, value, timestamp and
/// headers, with `opaque` for its delivery report.
pub fn message<'r, D: IntoOpaque>(
    record: &RecordRef<'r>,
    topic: &'r str,
    opaque: D,
) -> BaseRecord<'r, [u8], [u8], D> {
    let mut message = BaseRecord::with_opaque_to(topic, opaque)
        .payload(record.value())
        .timestamp(record.timestamp() as i64);
    // A header list is a C allocation: only for records with headers.
    let mut headers = record.headers().peekable();
    if headers.peek().is_some() {
        let mut list = OwnedHeaders::new();
        for (name, value) in headers {
            list = list.insert(Header {
                key: &String::from_utf8_lossy(name),
                value: Some(value),
            });
        }
        message = message.headers(list);
    }
    if let Some(key) = record.key() {
        message = message.key(key);
    }
    message
}

/// Whether a flush failed without naming the records that did not arrive.
fn flushed_incomplete(reason: &Option<String>, failed: &[usize]) -> bool {
    failed.is_empty() && reason.is_some()
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        let who = self.who.clone();
        let error = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        if self.transactions.is_some() {
            return self
                .write_transaction(records)
                .map_err(|e| error(format!("batch {}: {e}", batch.id)));
        }
        let mut pending: Vec<usize> = (0..records.len()).collect();
        for attempt in 1..=ATTEMPTS {
            let (failed, reason) = self.send(records, &pending).map_err(&error)?;
            if failed.is_empty() {
                return Ok(());
            }
            let reason = reason.unwrap_or_default();
            if attempt == ATTEMPTS {
                return Err(error(format!(
                    "{} of {} messages of batch {} were not delivered after {ATTEMPTS} attempts: {reason}",
                    failed.len(),
                    records.len(),
                    batch.id
                )));
            }
            tracing::warn!(
                "{}: {} messages of batch {} not delivered ({reason}); sending them again",
                self.who,
                failed.len(),
                batch.id
            );
            pending = failed;
        }
        unreachable!("the last attempt returns")
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let Some(number) = batch.checkpoint.filter(|_| self.transactions.is_some()) else {
            return Ok(());
        };
        self.commit_transaction(number)
            .map_err(|message| SinkError {
                sink: self.who.clone(),
                message: format!("batch {} (checkpoint {number}): {message}", batch.id),
            })
    }

    fn recover(&mut self, checkpoint: u64, output: Option<Records>) -> Result<(), SinkError> {
        if self.transactions.is_none() {
            return Ok(());
        }
        let who = self.who.clone();
        let error = |message: String| SinkError {
            sink: who.clone(),
            message: format!("recovering checkpoint {checkpoint}: {message}"),
        };
        let mut marker = self.marker().map_err(&error)?;
        // Within one state file the marker never passes the last
        // checkpoint (a checkpoint is taken before its commit). A marker
        // ahead of it comes from another file: this one was deleted (it
        // starts again at 0) or replaced by an older copy. Its number would
        // make a crash between a new checkpoint `n <= marker` and its commit
        // look committed, and that batch's output would be lost. Set it back
        // to this file's checkpoint first, in a transaction of its own.
        if let Some(stale) = marker.filter(|&m| m > checkpoint) {
            tracing::info!(
                "{}: the transaction marker is at checkpoint {stale}, ahead of the state \
                 file's {checkpoint} (the file was deleted or replaced); setting it back to \
                 {checkpoint}",
                self.who
            );
            self.write_transaction(&Records::default())
                .map_err(&error)?;
            self.commit_transaction(checkpoint).map_err(&error)?;
            marker = self.marker().map_err(&error)?;
            if marker != Some(checkpoint) {
                return Err(error(format!(
                    "the transaction marker did not move back from {stale} (it reads {marker:?})"
                )));
            }
        }
        if checkpoint == 0 {
            return Ok(());
        }
        if marker.is_some_and(|m| m >= checkpoint) {
            return Ok(());
        }
        let Some(records) = output else {
            // The last checkpoint's batch had no output for this sink.
            return Ok(());
        };
        tracing::info!(
            "{}: the output of checkpoint {checkpoint} ({} records) was not committed before \
             the crash (marker at {}); writing it again",
            self.who,
            records.len(),
            marker.map_or("none".to_string(), |m| m.to_string())
        );
        self.write_transaction(&records).map_err(&error)?;
        self.commit_transaction(checkpoint).map_err(&error)
    }

    fn keeps_output(&self) -> bool {
        self.transactions.is_some()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(producer) = &self.producer {
            producer
                .flush(Duration::from_secs(30))
                .map_err(|e| SinkError {
                    sink: self.who.clone(),
                    message: format!("flush at the end: {e}"),
                })?;
        }
        Ok(())
    }
}
