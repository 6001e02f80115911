//! `type = "mqtt"`: each record's value published to an MQTT broker (MQTT
//! 3.1.1, through `rumqttc`; the connection and topic rules are in
//! `crate::mqtt`), to a fixed topic or one named by a record header.
//!
//! With QoS 1 (the default) a batch is acknowledged only once the broker has
//! confirmed (PUBACK) every message of it, so its source positions are not
//! committed before: at-least-once. If the connection drops mid-batch, the
//! unconfirmed messages are sent again after the reconnect: by the client
//! when the broker kept the session, and by the sink when the broker lost
//! it (a broker restarted without persistence); either may repeat a
//! message the broker had received. If the broker stays out of reach for
//! `timeout`, the batch fails (and is read again on the next run). MQTT has
//! no transactions, so the sink cannot hold a batch back until its
//! checkpoint: it does not take part in exactly-once delivery. With QoS 0 a
//! batch counts as written once its messages are on the wire.
//!
//! A record that cannot be published as asked (its topic header missing,
//! not a topic name, or holding a wildcard) is dead-lettered with the
//! reason, and the rest of its batch is published.
//!
//! The sink drives the client only while it writes a batch: between
//! batches the connection is idle, and a broker that drops it for missing
//! keep-alives is reconnected to at the next batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Publish, QoS, Request};
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::{BatchMeta, Format, Sink, SinkError};
use crate::batch::Records;
use crate::mqtt::{Broker, Login, MAX_PACKET, check_topic, default_client_id};
use crate::stage::DeadLetter;
use crate::units::HumanDuration;

/// Publishes records to an MQTT broker.
///
/// ```toml
/// [[sinks]]
/// type = "mqtt"
/// url = "mqtt://127.0.0.1:1883"
/// topic = "counts"             # or topic_header = "mqtt.topic"
/// qos = 1
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// The broker: `mqtt://host:port`, or `mqtts://host:port` for TLS.
    pub url: String,
    /// The topic to publish to (for records without `topic_header`).
    #[serde(default)]
    pub topic: Option<String>,
    /// A record header naming the topic to publish that record to (an MQTT
    /// source's `mqtt.topic`, for one); records without it go to `topic`.
    #[serde(default)]
    pub topic_header: Option<String>,
    /// `1` (the default): each message confirmed by the broker before the
    /// batch counts as written; `0`: sent once, unconfirmed.
    #[serde(default = "one")]
    pub qos: u8,
    /// How a record becomes a message: left out, the value as it is;
    /// `"text"` (`key<TAB>value`, or the value) or `"jsonl"` (the
    /// directory sink's JSON object) keep the key, which MQTT cannot carry.
    #[serde(default)]
    pub format: Option<Format>,
    /// Publish with the retain flag: the broker keeps the last message of
    /// each topic for future subscribers. Default false.
    #[serde(default)]
    pub retain: bool,
    /// The client id. Default `sluice-<pipeline>-sink<index>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name to log in with.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file of certificates to trust for `mqtts://`, instead of the
    /// system's; relative to the pipeline file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Keep-alive interval while a batch is written. Default `30s`.
    #[serde(default = "keep_alive")]
    pub keep_alive: HumanDuration,
    /// How long a batch may wait for an unreachable broker before it fails.
    /// Default `60s`.
    #[serde(default = "timeout")]
    pub timeout: HumanDuration,
}

fn one() -> u8 {
    1
}

fn keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// A publish on its way into the client's request queue.
type Sending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), rumqttc::ClientError>> + Send>>;

/// Most QoS 1 messages awaiting the broker's confirmation at once.
const IN_FLIGHT: u16 = 1000;

impl MqttSinkConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        Broker::parse(&self.url, "sink")?;
        match (&self.topic, &self.topic_header) {
            (None, None) => return Err("invalid mqtt sink: set `topic` (or `topic_header`)".into()),
            (Some(t), _) => {
                check_topic(t.as_bytes()).map_err(|e| format!("invalid mqtt sink `topic`: {e}"))?;
            }
            (None, Some(h)) if h.is_empty() => {
                return Err("invalid mqtt sink: `topic_header` is empty".into());
            }
            _ => {}
        }
        if self.qos > 1 {
            return Err(format!(
                "invalid mqtt sink `qos` {}: use 1 (confirmed by the broker) or 0",
                self.qos
            ));
        }
        if self.password_env.is_some() && self.username.is_none() {
            return Err("invalid mqtt sink: `password_env` needs a `username`".into());
        }
        if self.timeout.0.is_zero() {
            return Err("invalid mqtt sink `timeout`: must be more than 0".into());
        }
        Ok(())
    }

    /// Resolves `ca_file` with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&std::path::Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        if let Some(ca) = &self.ca_file {
            self.ca_file = Some(resolve(ca).map_err(|m| format!("mqtt sink `ca_file`: {m}"))?);
        }
        Ok(())
    }

    /// The running sink, the `index`-th of pipeline `pipeline`. Connects at
    /// the first batch. Must be called within the engine's runtime.
    pub fn build(
        &self,
        pipeline: &str,
        index: usize,
        dead_letter: DeadLetter,
    ) -> Result<MqttSink, SinkError> {
        let who = format!(
            "mqtt sink {} at {}",
            self.topic.as_deref().unwrap_or("(by header)"),
            self.url
        );
        let fail = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        let login = Login {
            broker: Broker::parse(&self.url, "sink").map_err(&fail)?,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id(pipeline, "sink", index)),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            ca_file: self.ca_file.clone(),
            keep_alive: self.keep_alive.0,
            // The broker keeps unconfirmed messages across a reconnect.
            clean_session: false,
        };
        let mut options = login.options().map_err(&fail)?;
        options.set_inflight(IN_FLIGHT);
        let runtime = Handle::try_current()
            .map_err(|_| fail("the sink must be built within the engine's runtime".into()))?;
        // No room in the request queue: see `MqttSink::publish`.
        let (client, events) = AsyncClient::new(options, 0);
        Ok(MqttSink {
            client,
            events,
            runtime,
            topic: self.topic.clone(),
            topic_header: self.topic_header.clone(),
            qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: self.retain,
            format: self.format,
            timeout: self.timeout.0,
            dead_letter,
            who,
        })
    }
}

/// The running MQTT sink.
pub struct MqttSink {
    client: AsyncClient,
    events: EventLoop,
    runtime: Handle,
    topic: Option<String>,
    topic_header: Option<String>,
    qos: QoS,
    retain: bool,
    format: Option<Format>,
    timeout: Duration,
    dead_letter: DeadLetter,
    who: String,
}

impl MqttSink {
    /// Where record `i` goes, or why it cannot.
    fn topic_of(&self, records: &Records, i: usize) -> Result<String, String> {
        let record = records.get(i);
        if let Some(header) = &self.topic_header {
            if let Some((_, value)) = record.headers().find(|(n, _)| *n == header.as_bytes()) {
                return check_topic(value)
                    .map(str::to_string)
                    .map_err(|e| format!("header `{header}`: {e}"));
            }
        }
        self.topic.clone().ok_or_else(|| {
            format!(
                "no `{}` header and no `topic`",
                self.topic_header.as_deref().unwrap_or("")
            )
        })
    }

    /// Publishes `queue` and drives the client until the broker has
    /// confirmed every message (QoS 1) or they are sent (QoS 0).
    ///
    /// Messages go through the client's request queue, which has no room
    /// (`AsyncClient::new(_, 0)`): a publish returns once the event loop has
    /// taken it, so when every publish has returned and nothing is in flight
    /// or waiting to be sent again, the broker has them all.
    async fn publish(&mut self, mut queue: VecDeque<Publish>) -> Result<(), String> {
        let deadline_after = self.timeout;
        let mut deadline = Instant::now() + deadline_after;
        // What was in flight when the connection dropped: sent again by
        // the sink if the broker comes back without the session.
        let mut unconfirmed: Vec<Request> = Vec::new();
        let mut last_error = String::new();
        let mut backoff = Duration::from_millis(50);
        let client = self.client.clone();
        let mut sending: Option<Sending> = None;
        loop {
            let connected = self.events.network.is_some();
            if sending.is_none() && connected {
                if let Some(p) = queue.pop_front() {
                    let client = client.clone();
                    sending = Some(Box::pin(async move {
                        client
                            .publish_bytes(p.topic, p.qos, p.retain, p.payload)
                            .await
                    }));
                }
            }
            if connected
                && sending.is_none()
                && queue.is_empty()
                && self.events.pending.is_empty()
                && self.events.state.inflight() == 0
            {
                return Ok(());
            }
            let polled = tokio::select! {
                sent = async { sending.as_mut().expect("checked").await }, if sending.is_some() => {
                    sending = None;
                    sent.map_err(|e| format!("the client stopped: {e}"))?;
                    continue;
                }
                polled = self.events.poll() => polled,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "the broker did not take the batch within {deadline_after:?}{}",
                        if last_error.is_empty() {
                            String::new()
                        } else {
                            format!(" (last error: {last_error})")
                        }
                    ));
                }
            };
            match polled {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    if !unconfirmed.is_empty() {
                        if ack.session_present {
                            tracing::info!(
                                "{}: reconnected; the client sends the unconfirmed messages again",
                                self.who
                            );
                        } else {
                            tracing::warn!(
                                "{}: reconnected to a broker without the session; sending {} \
                                 unconfirmed message(s) again",
                                self.who,
                                unconfirmed.len()
                            );
                            for request in unconfirmed.drain(..).rev() {
                                if let Request::Publish(mut p) = request {
                                    p.pkid = 0;
                                    p.dup = false;
                                    queue.push_front(p);
                                }
                            }
                        }
                    }
                    unconfirmed.clear();
                    backoff = Duration::from_millis(50);
                    deadline = Instant::now() + deadline_after;
                }
                Ok(_) => {}
                Err(e) => {
                    last_error = e.to_string();
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                        return Err(format!("the broker refused the connection: {code:?}"));
                    }
                    // `poll` moved what was in flight to `pending`.
                    if !self.events.pending.is_empty() {
                        unconfirmed = self.events.pending.iter().cloned().collect();
                    }
                    tracing::warn!("{}: {e}; reconnecting", self.who);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

impl Sink for MqttSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        let mut queue = VecDeque::with_capacity(records.len());
        let mut refused: Vec<(usize, String)> = Vec::new();
        for i in 0..records.len() {
            match self.topic_of(records, i) {
                Ok(topic) => {
                    let payload = super::format::message(self.format, records.get(i));
                    if payload.len() + topic.len() + 8 > MAX_PACKET {
                        refused.push((
                            i,
                            format!(
                                "{} bytes: larger than an MQTT message can be",
                                payload.len()
                            ),
                        ));
                        continue;
                    }
                    let mut p = Publish::new(topic, self.qos, payload);
                    p.retain = self.retain;
                    queue.push_back(p);
                }
                Err(why) => refused.push((i, why)),
            }
        }
        if !refused.is_empty() {
            let reasons: Vec<(usize, &str)> =
                refused.iter().map(|(i, r)| (*i, r.as_str())).collect();
            let file = self
                .dead_letter
                .write_refused(records, &reasons)
                .map_err(|e| SinkError {
                    sink: self.who.clone(),
                    message: format!("batch {}: cannot write dead letters: {e}", batch.id),
                })?;
            tracing::warn!(
                "{}: batch {}: {} record(s) dead-lettered to {} (first: {})",
                self.who,
                batch.id,
                refused.len(),
                file.display(),
                refused[0].1
            );
        }
        let runtime = self.runtime.clone();
        runtime
            .block_on(self.publish(queue))
            .map_err(|message| SinkError {
                sink: self.who.clone(),
                message: format!("batch {}: {message}", batch.id),
            })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.events.network.is_some() {
            let runtime = self.runtime.clone();
            let events = &mut self.events;
            runtime.block_on(async {
                events
                    .pending
                    .push_back(Request::Disconnect(rumqttc::Disconnect));
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(event) = events.poll().await {
                        if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                            break;
                        }
                    }
                })
                .await;
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<MqttSinkConfig, String> {
        let c: MqttSinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn settings_are_checked() {
        let c = config("url = \"mqtt://h:1\"\ntopic = \"counts\"").unwrap();
        assert_eq!((c.qos, c.retain), (1, false));
        for (text, expect) in [
            ("url = \"mqtt://h:1\"", "set `topic`"),
            ("url = \"mqtt://h:1\"\ntopic = \"a/+\"", "wildcard"),
            ("url = \"mqtt://h:1\"\ntopic = \"a\"\nqos = 2", "qos` 2"),
            (
                "url = \"mqtt://h:1\"\ntopic_header = \"\"",
                "`topic_header` is empty",
            ),
        ] {
            let err = config(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn topics_come_from_the_header_or_the_fixed_topic() {
        let c = config("url = \"mqtt://h:1\"\ntopic = \"fixed\"\ntopic_header = \"t\"").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let dir = tempfile::tempdir().unwrap();
        let sink = c
            .build(
                "p",
                0,
                DeadLetter {
                    dir: dir.path().into(),
                    budget: None,
                },
            )
            .unwrap();
        let mut records = Records::default();
        records.push(None, b"a", 1, &[(b"t", b"x/y")]);
        records.push(None, b"b", 1, &[]);
        records.push(None, b"c", 1, &[(b"t", b"x/#")]);
        assert_eq!(sink.topic_of(&records, 0).unwrap(), "x/y");
        assert_eq!(sink.topic_of(&records, 1).unwrap(), "fixed");
        assert!(sink.topic_of(&records, 2).unwrap_err().contains("wildcard"));
    }
}
