//! `type = "mqtt"`: messages from an MQTT broker's topics (MQTT 3.1.1,
//! through `rumqttc`; the connection and topic rules are in `crate::mqtt`).
//!
//! QoS 1 (the default) is acknowledged late: a message's PUBACK goes to the
//! broker only once the checkpoint of the batch holding it is written (the
//! positions come back through [`Emitter::acked`]), in the order received.
//! Until then the broker keeps the message, and with `clean_session =
//! false` (the default) it sends it again after a reconnect or a crash of
//! Sluice: at-least-once. A message acknowledged is never sent again, so
//! what Sluice has not checkpointed is never lost; what it checkpointed but
//! had not yet acknowledged when it crashed comes again (MQTT has no
//! positions to skip it by, so a replay is a duplicate, not exactly-once).
//! After a reconnect, acknowledgements of messages received on the old
//! connection are dropped, not sent: the broker sends those messages again
//! with the same packet ids, which an old PUBACK could otherwise confirm
//! for a message not yet checkpointed.
//!
//! QoS 0 is at-most-once on the wire: the broker sends each message once and
//! forgets it. `wal = true` then makes what Sluice received survive a crash.
//!
//! Each record's value is the message's payload, its timestamp the time
//! received, and its headers `mqtt.topic` (the topic it was published to)
//! and, for a retained message the broker sent on subscribing,
//! `mqtt.retained = "true"`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter};
use serde::Deserialize;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source, SourceError, SourceTask};
use crate::batch::{Records, now_ms};
use crate::mqtt::{Broker, Login, check_filter, default_client_id};
use crate::units::HumanDuration;

/// Subscribes to topic filters on an MQTT broker.
///
/// ```toml
/// [[sources]]
/// type = "mqtt"
/// url = "mqtt://127.0.0.1:1883"
/// topics = ["sensors/+/temperature", "alerts/#"]
/// qos = 1
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// The broker: `mqtt://host:port`, or `mqtts://host:port` for TLS
    /// (port 1883 or 8883 when left out).
    pub url: String,
    /// Topic filters to subscribe to; `+` matches one level, `#` (last)
    /// every level below.
    pub topics: Vec<String>,
    /// `1` (the default): the broker sends each message until Sluice
    /// acknowledges it, which it does after the batch's checkpoint;
    /// `0`: at most once. (QoS 2 is not offered: a late acknowledgement
    /// already gives QoS 1 its at-least-once.)
    #[serde(default = "one")]
    pub qos: u8,
    /// The client id; the broker keeps a session per id. Default
    /// `sluice-<pipeline>-source<index>`. Two clients with one id push
    /// each other off the broker.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `false` (the default): the broker keeps the subscriptions and the
    /// QoS 1 messages not yet acknowledged while Sluice is away, and sends
    /// them when it is back. `true`: everything is forgotten on disconnect
    /// (messages sent meanwhile, and unacknowledged ones, are lost).
    #[serde(default)]
    pub clean_session: bool,
    /// Leave out retained messages (the last message of a topic, which
    /// the broker sends to every new subscription). Default false.
    #[serde(default)]
    pub skip_retained: bool,
    /// User name to log in with.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the password (never the
    /// password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file of certificates to trust for `mqtts://`, instead of the
    /// system's; relative to the pipeline file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often the client pings an idle connection; the broker drops a
    /// client silent for 1.5 times this. Default `30s`.
    #[serde(default = "keep_alive")]
    pub keep_alive: HumanDuration,
    /// QoS 0 only: log every chunk received to a write-ahead log (synced)
    /// before it counts, so a crash loses nothing received. Default false.
    #[serde(default)]
    pub wal: bool,
}

fn one() -> u8 {
    1
}

fn keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl MqttSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        Broker::parse(&self.url, "source")?;
        if self.topics.is_empty() {
            return Err("invalid mqtt source: `topics` needs at least one topic filter".into());
        }
        for topic in &self.topics {
            check_filter(topic).map_err(|e| format!("invalid mqtt source `topics`: {e}"))?;
        }
        match self.qos {
            0 | 1 => {}
            2 => {
                return Err(
                    "invalid mqtt source `qos` 2: use 1 (acknowledged after the \
                            checkpoint, at-least-once) or 0"
                        .into(),
                );
            }
            n => return Err(format!("invalid mqtt source `qos` {n}: use 0 or 1")),
        }
        if self.wal && self.qos != 0 {
            return Err(
                "invalid mqtt source: `wal = true` is for `qos = 0`; QoS 1 messages \
                        stay with the broker until their checkpoint"
                    .into(),
            );
        }
        if matches!(&self.client_id, Some(id) if id.is_empty()) {
            return Err("invalid mqtt source: `client_id` is empty".into());
        }
        if self.password_env.is_some() && self.username.is_none() {
            return Err("invalid mqtt source: `password_env` needs a `username`".into());
        }
        Ok(())
    }

    /// Resolves `ca_file` with `resolve`.
    pub fn resolve_paths(
        &mut self,
        resolve: impl Fn(&std::path::Path) -> Result<PathBuf, String>,
    ) -> Result<(), String> {
        if let Some(ca) = &self.ca_file {
            self.ca_file = Some(resolve(ca).map_err(|m| format!("mqtt source `ca_file`: {m}"))?);
        }
        Ok(())
    }

    /// The running source, the `index`-th of pipeline `pipeline`.
    pub fn build(&self, pipeline: &str, index: usize) -> Result<MqttSource, SourceError> {
        let fail = |message: String| SourceError {
            source_name: format!("mqtt {}", self.url),
            message,
        };
        let login = Login {
            broker: Broker::parse(&self.url, "source").map_err(fail)?,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id(pipeline, "source", index)),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            ca_file: self.ca_file.clone(),
            keep_alive: self.keep_alive.0,
            clean_session: self.clean_session,
        };
        // Read the password now: a missing variable fails the start.
        login.options().map_err(fail)?;
        Ok(MqttSource {
            login,
            topics: self.topics.clone(),
            qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            skip_retained: self.skip_retained,
            url: self.url.clone(),
        })
    }
}

/// The running MQTT source.
pub struct MqttSource {
    login: Login,
    topics: Vec<String>,
    qos: QoS,
    skip_retained: bool,
    url: String,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Room for requests (acknowledgements, subscriptions) to the client.
const REQUESTS: usize = 4096;

/// A QoS 1 message waiting for its batch's checkpoint.
struct Unacked {
    /// Its number in this run (positions are these numbers).
    seq: u64,
    /// Its packet id on the connection it came by.
    pkid: u16,
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        format!("mqtt {} at {}", self.topics.join(","), self.url)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            let mut options = self.login.options().map_err(|message| SourceError {
                source_name: name.clone(),
                message,
            })?;
            options.set_manual_acks(true);
            let (client, mut events) = AsyncClient::new(options, REQUESTS);
            let filters: Vec<SubscribeFilter> = self
                .topics
                .iter()
                .map(|t| SubscribeFilter::new(t.clone(), self.qos))
                .collect();
            let mut acked = emitter.acked();
            let mut acks_open = true;
            let mut unacked: VecDeque<Unacked> = VecDeque::new();
            // Acknowledgements the client had no room for yet.
            let mut to_send: VecDeque<u16> = VecDeque::new();
            let mut records = Records::default();
            let mut seq: u64 = 0;
            let mut backoff = FIRST_BACKOFF;
            let mut connected = false;
            tracing::info!(source = %name, "connecting to the broker");
            loop {
                while let Some(&pkid) = to_send.front() {
                    if client.try_ack(&ack_of(pkid)).is_err() {
                        break;
                    }
                    to_send.pop_front();
                }
                let full = records.len() >= CHUNK_RECORDS || records.byte_size() >= CHUNK_BYTES;
                let waiting = !records.is_empty();
                let event = tokio::select! {
                    biased;
                    _ = emitter.stopped() => break,
                    changed = acked.changed(), if acks_open => {
                        if changed.is_err() {
                            acks_open = false;
                            continue;
                        }
                        let through = acked.borrow_and_update().as_deref().and_then(parse_position);
                        if let Some(through) = through {
                            while unacked.front().is_some_and(|u| u.seq <= through) {
                                to_send.push_back(unacked.pop_front().expect("checked").pkid);
                            }
                        }
                        continue;
                    }
                    event = events.poll(), if !full => Some(event),
                    _ = std::future::ready(()), if waiting => None,
                };
                match event {
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if self.skip_retained && p.retain {
                            if p.qos != QoS::AtMostOnce {
                                // Nothing to checkpoint: confirm it at once.
                                to_send.push_back(p.pkid);
                            }
                            continue;
                        }
                        if records.is_empty() {
                            records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                        }
                        seq += 1;
                        push(&mut records, &p);
                        if p.qos != QoS::AtMostOnce {
                            unacked.push_back(Unacked { seq, pkid: p.pkid });
                        }
                        continue;
                    }
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                        backoff = FIRST_BACKOFF;
                        // Messages of the old connection come again.
                        unacked.clear();
                        to_send.clear();
                        tracing::info!(
                            source = %name,
                            "connected (session {})",
                            if ack.session_present { "resumed" } else { "new" }
                        );
                        connected = true;
                        if !ack.session_present {
                            // A kept session keeps its subscriptions; a new
                            // one (or a broker that lost it) needs them.
                            if let Err(e) = client.try_subscribe_many(filters.clone()) {
                                return Err(SourceError {
                                    source_name: name,
                                    message: format!("cannot subscribe: {e}"),
                                });
                            }
                        }
                        continue;
                    }
                    Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                        for (filter, code) in self.topics.iter().zip(&ack.return_codes) {
                            if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                                return Err(SourceError {
                                    source_name: name,
                                    message: format!(
                                        "the broker refused the subscription to `{filter}`"
                                    ),
                                });
                            }
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        if connected {
                            tracing::warn!(source = %name, "lost the broker: {e}; reconnecting");
                        } else if backoff == FIRST_BACKOFF || backoff == MAX_BACKOFF {
                            tracing::warn!(source = %name, "waiting for the broker: {e}; trying again");
                        }
                        connected = false;
                        if !records.is_empty() {
                            let chunk = std::mem::take(&mut records);
                            if emitter.emit(chunk, Some(position(seq))).await.is_err() {
                                break;
                            }
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = emitter.stopped() => break,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    None => {}
                }
                let chunk = std::mem::take(&mut records);
                if emitter.emit(chunk, Some(position(seq))).await.is_err() {
                    break;
                }
            }
            if !records.is_empty() {
                let _ = emitter.emit(records, Some(position(seq))).await;
            }
            // Acknowledge what the last batches' checkpoints cover; the
            // batcher ends once this source's emitter is gone.
            drop(emitter);
            finish(&client, &mut events, &mut acked, unacked, to_send).await;
            Ok(())
        })
    }
}

/// After the last chunk: sends the acknowledgements of the batches still
/// being delivered as their checkpoints come, then disconnects.
async fn finish(
    client: &AsyncClient,
    events: &mut rumqttc::EventLoop,
    acked: &mut tokio::sync::watch::Receiver<Option<String>>,
    mut unacked: VecDeque<Unacked>,
    mut to_send: VecDeque<u16>,
) {
    let mut acks_open = true;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(&pkid) = to_send.front() {
            if client.try_ack(&ack_of(pkid)).is_err() {
                break;
            }
            to_send.pop_front();
        }
        if !acks_open && to_send.is_empty() {
            break;
        }
        tokio::select! {
            changed = acked.changed(), if acks_open => {
                if changed.is_err() {
                    acks_open = false;
                    continue;
                }
                let through = acked.borrow_and_update().as_deref().and_then(parse_position);
                if let Some(through) = through {
                    while unacked.front().is_some_and(|u| u.seq <= through) {
                        to_send.push_back(unacked.pop_front().expect("checked").pkid);
                    }
                }
            }
            event = events.poll() => {
                if event.is_err() {
                    // Acknowledgements of a lost connection mean nothing.
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
    let _ = client.try_disconnect();
    // Let the acknowledgements and the disconnect reach the broker.
    let flush = async {
        while let Ok(event) = events.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
}

/// A PUBACK for `pkid` (the client only reads the QoS and the packet id).
fn ack_of(pkid: u16) -> Publish {
    let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
    p.pkid = pkid;
    p
}

fn position(seq: u64) -> String {
    format!("mqtt:{seq}")
}

fn parse_position(position: &str) -> Option<u64> {
    position.strip_prefix("mqtt:")?.parse().ok()
}

/// Appends a message: payload as the value, the topic (and the retained
/// flag) as headers, the time received as the timestamp.
fn push(records: &mut Records, p: &Publish) {
    let topic: (&[u8], &[u8]) = (b"mqtt.topic", p.topic.as_bytes());
    if p.retain {
        records.push(
            None,
            &p.payload,
            now_ms(),
            &[topic, (b"mqtt.retained", b"true")],
        );
    } else {
        records.push(None, &p.payload, now_ms(), &[topic]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<MqttSourceConfig, String> {
        let c: MqttSourceConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn settings_are_checked() {
        let c = config("url = \"mqtt://h:1\"\ntopics = [\"a/+\"]").unwrap();
        assert_eq!((c.qos, c.clean_session, c.wal), (1, false, false));
        for (text, expect) in [
            ("url = \"mqtt://h:1\"\ntopics = []", "at least one"),
            ("url = \"mqtt://h:1\"\ntopics = [\"a/#/b\"]", "`#` must be"),
            ("url = \"mqtt://h:1\"\ntopics = [\"a\"]\nqos = 2", "qos` 2"),
            (
                "url = \"mqtt://h:1\"\ntopics = [\"a\"]\nwal = true",
                "`wal = true` is for `qos = 0`",
            ),
            ("url = \"http://h:1\"\ntopics = [\"a\"]", "unknown scheme"),
            (
                "url = \"mqtt://h\"\ntopics = [\"a\"]\npassword_env = \"P\"",
                "needs a `username`",
            ),
        ] {
            let err = config(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn positions_round_trip_and_messages_keep_their_topic() {
        assert_eq!(parse_position(&position(42)), Some(42));
        assert_eq!(parse_position("wal:3"), None);
        let mut records = Records::default();
        let mut p = Publish::new("a/b", QoS::AtLeastOnce, b"hello".to_vec());
        push(&mut records, &p);
        p.retain = true;
        push(&mut records, &p);
        let r = records.get(0);
        assert_eq!(r.value(), b"hello");
        let headers: Vec<_> = r.headers().collect();
        assert_eq!(headers, vec![(&b"mqtt.topic"[..], &b"a/b"[..])]);
        assert_eq!(records.get(1).headers().count(), 2);
    }
}
