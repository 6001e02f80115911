//! From records to NATS messages, and publishing them: core NATS with a
//! flush, or JetStream with every message's confirmation awaited (and the
//! unconfirmed sent again) until the sink's `timeout`.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::time::Instant;

use crate::batch::Records;
use crate::nats::check_subject;
use crate::sink::Format;

/// A message ready to publish.
pub struct Message {
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

/// Room a message's subject and headers may take beside its payload under
/// the server's `max_payload` (which counts headers and payload).
fn size(message: &Message) -> usize {
    let headers: usize = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|(n, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(n).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    message.payload.len() + headers + if message.headers.is_some() { 12 } else { 0 }
}

/// The messages for `records` (with `ids`-prefixed `Nats-Msg-Id`s when
/// given), and the records refused, by index, with why.
pub fn prepare(
    records: &Records,
    subject: Option<&str>,
    subject_header: Option<&str>,
    format: Option<Format>,
    max_payload: usize,
    ids: Option<&str>,
) -> (Vec<Message>, Vec<(usize, String)>) {
    let mut messages = Vec::with_capacity(records.len());
    let mut refused = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let outcome = (|| {
            let named = subject_header.and_then(|h| {
                record
                    .headers()
                    .find(|(n, _)| *n == h.as_bytes())
                    .map(|(_, v)| (h, v))
            });
            let subject = match named {
                Some((header, value)) => check_subject(value)
                    .map_err(|e| format!("header `{header}`: {e}"))?
                    .to_string(),
                None => subject
                    .ok_or_else(|| {
                        format!(
                            "no `{}` header and no `subject`",
                            subject_header.unwrap_or("")
                        )
                    })?
                    .to_string(),
            };
            let mut headers: Option<HeaderMap> = None;
            for (name, value) in record.headers() {
                let name = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.parse::<HeaderName>().ok())
                    .ok_or_else(|| {
                        format!(
                            "header `{}` is not a NATS header name",
                            String::from_utf8_lossy(name)
                        )
                    })?;
                let value = std::str::from_utf8(value)
                    .ok()
                    .filter(|v| !v.contains(['\r', '\n']))
                    .ok_or_else(|| format!("header `{name}` has a value NATS cannot carry (not UTF-8, or a line break)"))?;
                headers
                    .get_or_insert_with(HeaderMap::new)
                    .append(name, HeaderValue::from(value));
            }
            if let Some(prefix) = ids {
                headers
                    .get_or_insert_with(HeaderMap::new)
                    .insert("Nats-Msg-Id", format!("{prefix}-{i}").as_str());
            }
            let message = Message {
                subject,
                headers,
                payload: Bytes::from(crate::sink::format::message(format, record)),
            };
            if max_payload > 0 && size(&message) > max_payload {
                return Err(format!(
                    "{} bytes: larger than the server's max_payload ({max_payload})",
                    size(&message)
                ));
            }
            Ok(message)
        })();
        match outcome {
            Ok(message) => messages.push(message),
            Err(why) => refused.push((i, why)),
        }
    }
    (messages, refused)
}

/// Where messages go.
pub struct Outgoing {
    pub client: async_nats::Client,
    /// JetStream, when messages are confirmed by a stream.
    pub jetstream: Option<async_nats::jetstream::Context>,
    pub timeout: Duration,
    pub who: String,
}

/// Most JetStream confirmations awaited at once.
const WINDOW: usize = 1024;

impl Outgoing {
    /// Publishes `messages`: see the module docs.
    pub async fn publish(&self, messages: Vec<Message>) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let Some(js) = &self.jetstream else {
            for m in messages {
                let sent = match m.headers {
                    Some(h) => {
                        self.client
                            .publish_with_headers(m.subject, h, m.payload)
                            .await
                    }
                    None => self.client.publish(m.subject, m.payload).await,
                };
                sent.map_err(|e| format!("publishing: {e}"))?;
            }
            return match tokio::time::timeout_at(deadline, self.client.flush()).await {
                Ok(flushed) => flushed.map_err(|e| format!("flushing: {e}")),
                Err(_) => Err(format!(
                    "the server did not answer within {:?}",
                    self.timeout
                )),
            };
        };
        let mut queue: VecDeque<Message> = messages.into();
        let mut last_error = String::new();
        let mut duplicates = 0usize;
        let mut attempt = 0;
        while !queue.is_empty() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} message(s) not confirmed by JetStream within {:?}: {last_error}",
                    queue.len(),
                    self.timeout
                ));
            }
            attempt += 1;
            if attempt > 1 {
                tracing::warn!(
                    "{}: {} message(s) not confirmed ({last_error}); sending them again",
                    self.who,
                    queue.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut failed: VecDeque<Message> = VecDeque::new();
            let mut waiting = FuturesOrdered::new();
            loop {
                while waiting.len() < WINDOW {
                    let Some(m) = queue.pop_front() else { break };
                    let sent = js
                        .publish_with_headers(
                            m.subject.clone(),
                            m.headers.clone().unwrap_or_default(),
                            m.payload.clone(),
                        )
                        .await;
                    match sent {
                        Ok(ack) => waiting.push_back(async move {
                            (
                                tokio::time::timeout_at(deadline, ack.into_future()).await,
                                m,
                            )
                        }),
                        Err(e) => {
                            last_error = e.to_string();
                            failed.push_back(m);
                        }
                    }
                }
                let Some((confirmed, m)) = waiting.next().await else {
                    break;
                };
                match confirmed {
                    Ok(Ok(ack)) => duplicates += usize::from(ack.duplicate),
                    Ok(Err(e)) => {
                        last_error = e.to_string();
                        failed.push_back(m);
                    }
                    Err(_) => {
                        last_error = "no confirmation in time".into();
                        failed.push_back(m);
                    }
                }
            }
            queue = failed;
        }
        if duplicates > 0 {
            tracing::info!(
                "{}: JetStream dropped {duplicates} message(s) it already had (same message id)",
                self.who
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_messages_or_dead_letters() {
        let mut records = Records::default();
        records.push(None, b"a", 1, &[(b"to", b"x.y"), (b"trace", b"1")]);
        records.push(None, b"b", 1, &[]);
        records.push(None, b"c", 1, &[(b"to", b"x.*")]);
        records.push(None, b"d", 1, &[(b"bad:name", b"v")]);
        records.push(None, &[b'e'; 100], 1, &[]);
        let (messages, refused) = prepare(
            &records,
            Some("fixed"),
            Some("to"),
            None,
            64,
            Some("p-sink0-3"),
        );
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["x.y", "fixed"]);
        let ids: Vec<String> = messages
            .iter()
            .map(|m| {
                m.headers
                    .as_ref()
                    .unwrap()
                    .get("Nats-Msg-Id")
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["p-sink0-3-0", "p-sink0-3-1"]);
        assert_eq!(
            messages[0]
                .headers
                .as_ref()
                .unwrap()
                .get("trace")
                .unwrap()
                .as_str(),
            "1"
        );
        let refused: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, [2, 3, 4]);
    }
}
