//! `type = "kafka"`: each record becomes a message, with its key, value,
//! timestamp and headers.
//!
//! The producer is idempotent with `acks=all`. A batch is acknowledged only
//! when every message's delivery report is back and none failed; failed
//! messages are sent again, by a new producer, up to [`ATTEMPTS`] times,
//! and then the batch fails the pipeline, so its source positions are not committed and it is read
//! again on the next run. Nothing is dropped silently.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use serde::Deserialize;

use super::{BatchMeta, Sink, SinkError};
use crate::batch::{RecordRef, Records};
use crate::kafka::{LogContext, Options, client_config, validate};

/// Times a batch's undelivered messages are sent before the batch fails.
pub const ATTEMPTS: usize = 3;

/// Writes records to a topic.
///
/// ```toml
/// [[sinks]]
/// type = "kafka"
/// brokers = "127.0.0.1:9092"
/// topic = "counts"
/// ```
#[derive(Debug, Deserialize)]
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
    /// retried before its delivery fails, and `linger.ms` 5).
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
    ("transactional.id", "is not supported by this sink yet"),
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

    /// The running sink: the producer connects on first use.
    pub fn build(&self, pipeline: &str) -> Result<KafkaSink, SinkError> {
        let mut config = client_config(
            &self.brokers,
            &[("message.timeout.ms", "120000"), ("linger.ms", "5")],
            &self.options,
        );
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("client.id", format!("sluice-{pipeline}"));
        let who = format!(
            "kafka sink {} at {}",
            self.topic.as_deref().unwrap_or("(by header)"),
            self.brokers
        );
        let sink = KafkaSink {
            producer: None,
            config,
            topic: self.topic.clone(),
            topic_header: self.topic_header.clone(),
            who,
        };
        // Catch bad properties now, not at the first batch.
        sink.producer().map_err(|message| SinkError {
            sink: sink.who.clone(),
            message,
        })?;
        Ok(sink)
    }
}

/// The running Kafka sink.
pub struct KafkaSink {
    producer: Option<BaseProducer<SinkContext>>,
    config: rdkafka::ClientConfig,
    topic: Option<String>,
    topic_header: Option<String>,
    who: String,
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
    fn producer(&self) -> Result<BaseProducer<SinkContext>, String> {
        self.config
            .create_with_context(SinkContext {
                log: LogContext::new(self.who.clone()),
                failed: Mutex::new(Vec::new()),
            })
            .map_err(|e| format!("cannot create the producer: {e}"))
    }

    /// Where `record` goes.
    fn topic_of<'r>(&'r self, record: &RecordRef<'r>) -> Result<&'r str, String> {
        if let Some(name) = &self.topic_header {
            if let Some((_, value)) = record.headers().find(|(n, _)| *n == name.as_bytes()) {
                return std::str::from_utf8(value)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| format!("header `{name}` is not a topic name"));
            }
        }
        self.topic.as_deref().ok_or_else(|| {
            format!(
                "no header `{}` and no `topic`",
                self.topic_header.as_deref().unwrap_or("")
            )
        })
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
            let topic = self
                .topic_of(&record)
                .map_err(|e| format!("record {i}: {e}"))?;
            let mut message = BaseRecord::with_opaque_to(topic, i)
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
