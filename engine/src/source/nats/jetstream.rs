//! Reading a JetStream stream through a durable pull consumer that is the
//! pipeline's own, acknowledged after checkpoints.
//!
//! The consumer acknowledges "all up to" a message (`AckPolicy::All`): after
//! the checkpoint of a batch, one acknowledgement of the batch's last
//! message confirms the whole batch. A chunk's position is the stream
//! sequence of its last message (`js:<sequence>`). That is sound only if the
//! consumer delivers in stream order, which it does except for messages it
//! sends again: after a crash, or when `ack_wait` passes first. So:
//!
//! - At start, a consumer with messages delivered but not acknowledged
//!   (the last run ended before their checkpoints) is deleted and created
//!   again from just after its acknowledgement floor: those messages come
//!   at once and in order, not after `ack_wait` behind newer ones (which an
//!   acknowledgement of a newer message would otherwise confirm unread).
//! - Within a run, a message whose sequence is not above the last one
//!   handed over was handed over already (it came again because its
//!   `ack_wait` passed): it is skipped, and a later acknowledgement
//!   confirms it.
//! - After a crash, messages up to the last checkpoint's sequence were
//!   processed by the batches that checkpoint covers: they are skipped (and
//!   acknowledged), so a pipeline with a state file, or under exactly-once
//!   delivery, counts each message once. Without a state file a crash
//!   repeats them: at-least-once.
//!
//! Several processes must not share one consumer: give each pipeline its
//! own (`consumer`).

use std::collections::VecDeque;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use async_nats::{Client, Subject};
use futures_util::StreamExt;
use tokio::time::Duration;

use super::{NatsSource, NatsStart, push};
use crate::batch::Records;
use crate::source::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source};

/// Marks a refusal among the errors that are waited out.
const REFUSED: &str = "refused: ";

/// Why the consumer is not ready.
enum Prepare {
    /// The server is not there yet, or did not answer: try again.
    Wait(String),
    /// The consumer exists in a shape Sluice must not use or change.
    Refuse(String),
}

impl Prepare {
    fn into_message(self) -> String {
        match self {
            Prepare::Wait(m) | Prepare::Refuse(m) => m,
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) fn position(sequence: u64) -> String {
    format!("js:{sequence}")
}

pub(super) fn parse_position(position: &str) -> Option<u64> {
    position.strip_prefix("js:")?.parse().ok()
}

/// Reads the stream until told to stop, then acknowledges what the last
/// checkpoints cover.
pub(super) async fn read(
    source: &NatsSource,
    client: Client,
    emitter: Emitter,
) -> Result<(), String> {
    let name = source.describe();
    let js = async_nats::jetstream::new(client.clone());
    let stream_name = source.config.stream.as_deref().expect("a jetstream source");
    let mut backoff = FIRST_BACKOFF;
    // The stream and the consumer, once the server answers.
    let (mut stream, mut consumer) = loop {
        let attempt = async {
            let mut stream = js
                .get_stream(stream_name)
                .await
                .map_err(|e| format!("stream `{stream_name}`: {e}"))?;
            let consumer = prepare(&mut stream, source).await.map_err(|e| match e {
                Prepare::Wait(e) => e,
                Prepare::Refuse(e) => format!("{REFUSED}{e}"),
            })?;
            Ok::<_, String>((stream, consumer))
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = emitter.stopped() => return Ok(()),
        };
        match outcome {
            Ok(ready) => break ready,
            Err(e) if e.starts_with(REFUSED) => return Err(e[REFUSED.len()..].to_string()),
            Err(e) => {
                tracing::warn!("{name}: waiting for JetStream: {e}; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = emitter.stopped() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    // Messages up to the last checkpoint's sequence were processed.
    let mut skip_through = source.resume.unwrap_or(0);
    let last = stream
        .info()
        .await
        .map(|i| i.state.last_sequence)
        .unwrap_or(u64::MAX);
    if skip_through > last {
        tracing::warn!(
            "{name}: the checkpoint is at sequence {skip_through} but the stream ends at {last} \
             (it was recreated?); reading it as it is"
        );
        skip_through = 0;
    }
    let mut messages = open(&consumer).await?;
    tracing::info!("{name}: reading");
    let mut acked = emitter.acked();
    let mut acks_open = true;
    // The last message of each chunk handed over: (sequence, reply subject).
    let mut kept: VecDeque<(u64, Subject)> = VecDeque::new();
    let mut handed_over: u64 = 0;
    let mut records = Records::default();
    let mut last_reply: Option<Subject> = None;
    loop {
        let full = records.len() >= CHUNK_RECORDS || records.byte_size() >= CHUNK_BYTES;
        tokio::select! {
            biased;
            _ = emitter.stopped() => break,
            changed = acked.changed(), if acks_open => {
                if changed.is_err() {
                    acks_open = false;
                } else {
                    let through = acked.borrow_and_update().as_deref().and_then(parse_position);
                    acknowledge(&client, &mut kept, through).await;
                }
            }
            message = messages.next(), if !full => match message {
                Some(Ok(message)) => {
                    let (sequence, published) = match message.info() {
                        Ok(info) => (
                            info.stream_sequence,
                            (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                        ),
                        Err(e) => {
                            tracing::warn!("{name}: a message without JetStream metadata ({e}); skipped");
                            continue;
                        }
                    };
                    let reply = message.message.reply.clone();
                    if sequence <= skip_through {
                        // Covered by the last checkpoint: confirm, skip.
                        if let Some(reply) = reply {
                            let _ = client.publish(reply, bytes::Bytes::new()).await;
                        }
                        continue;
                    }
                    if sequence <= handed_over {
                        continue; // Sent again after `ack_wait`: handed over already.
                    }
                    if records.is_empty() {
                        records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                    }
                    push(&mut records, &message.message, published);
                    handed_over = sequence;
                    last_reply = reply;
                }
                Some(Err(e)) => {
                    tracing::warn!("{name}: {e}");
                    if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted) {
                        // Someone deleted it: make it again, from the floor.
                        consumer = prepare(&mut stream, source).await.map_err(Prepare::into_message)?;
                        messages = open(&consumer).await?;
                    }
                }
                None => {
                    tracing::warn!("{name}: the message stream ended; opening it again");
                    tokio::time::sleep(FIRST_BACKOFF).await;
                    messages = open(&consumer).await?;
                }
            },
            _ = std::future::ready(()), if !records.is_empty() => {
                if let Some(reply) = last_reply.take() {
                    kept.push_back((handed_over, reply));
                }
                let chunk = std::mem::take(&mut records);
                if emitter.emit(chunk, Some(position(handed_over))).await.is_err() {
                    break;
                }
            }
        }
    }
    if !records.is_empty() {
        if let Some(reply) = last_reply.take() {
            kept.push_back((handed_over, reply));
        }
        let _ = emitter.emit(records, Some(position(handed_over))).await;
    }
    drop(emitter);
    drop(messages);
    // Acknowledge what the checkpoints of the last batches cover.
    while acks_open && acked.changed().await.is_ok() {
        let through = acked
            .borrow_and_update()
            .as_deref()
            .and_then(parse_position);
        acknowledge(&client, &mut kept, through).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    Ok(())
}

/// Acknowledges the newest kept message at or below `through` (which, with
/// `AckPolicy::All`, confirms every message before it too).
async fn acknowledge(client: &Client, kept: &mut VecDeque<(u64, Subject)>, through: Option<u64>) {
    let Some(through) = through else { return };
    let mut newest = None;
    while kept
        .front()
        .is_some_and(|(sequence, _)| *sequence <= through)
    {
        newest = kept.pop_front();
    }
    if let Some((_, reply)) = newest {
        // A lost acknowledgement is repeated by a later one, or the
        // message comes again (and is skipped, or counted again).
        if let Err(e) = client.publish(reply, bytes::Bytes::new()).await {
            tracing::warn!("nats: acknowledging failed: {e}");
        }
    }
}

/// Opens the pull stream of `consumer`.
async fn open(
    consumer: &PullConsumer,
) -> Result<async_nats::jetstream::consumer::pull::Stream, String> {
    consumer
        .stream()
        .max_messages_per_batch(CHUNK_RECORDS)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| format!("cannot pull messages: {e}"))
}

/// The pipeline's consumer on `stream`: created if missing, recreated from
/// its acknowledgement floor if it has messages delivered but not
/// acknowledged, refused if it is not one Sluice can use.
async fn prepare(stream: &mut Stream, source: &NatsSource) -> Result<PullConsumer, Prepare> {
    let name = &source.consumer;
    let c = &source.config;
    let mut wanted = pull::Config {
        durable_name: Some(name.clone()),
        ack_policy: AckPolicy::All,
        ack_wait: c.ack_wait.0,
        // Flow is bounded by the pulls; acknowledgements come per batch.
        max_ack_pending: -1,
        ..Default::default()
    };
    match c.subjects.as_slice() {
        [] => {}
        [one] => wanted.filter_subject = one.clone(),
        many => wanted.filter_subjects = many.to_vec(),
    }
    let fail = |e: &dyn std::fmt::Display| Prepare::Wait(format!("consumer `{name}`: {e}"));
    match stream.consumer_info(name).await {
        Ok(info) => {
            if info.config.ack_policy != AckPolicy::All {
                return Err(Prepare::Refuse(format!(
                    "consumer `{name}` exists with ack policy {:?}; Sluice acknowledges all up to \
                     a message and needs a consumer of its own (name another with `consumer`)",
                    info.config.ack_policy
                )));
            }
            let filters = |f: &str, fs: &[String]| {
                let mut all: Vec<String> = fs.to_vec();
                if !f.is_empty() {
                    all.push(f.to_string());
                }
                all.sort();
                all
            };
            if filters(&info.config.filter_subject, &info.config.filter_subjects)
                != filters(&wanted.filter_subject, &wanted.filter_subjects)
            {
                return Err(Prepare::Refuse(format!(
                    "consumer `{name}` exists with other subjects than `subjects`; Sluice will \
                     not change it (delete it, or name another with `consumer`)"
                )));
            }
            if info.num_ack_pending == 0 {
                return stream.get_consumer(name).await.map_err(|e| fail(&e));
            }
            let floor = info.ack_floor.stream_sequence;
            wanted.deliver_policy = if floor > 0 {
                DeliverPolicy::ByStartSequence {
                    start_sequence: floor + 1,
                }
            } else {
                info.config.deliver_policy
            };
            tracing::info!(
                "consumer `{name}`: {} message(s) were delivered to the last run but not \
                 acknowledged (it ended before their checkpoints); recreating the consumer \
                 from after sequence {floor} so that they come again now, in order",
                info.num_ack_pending
            );
            stream.delete_consumer(name).await.map_err(|e| fail(&e))?;
            stream.create_consumer(wanted).await.map_err(|e| fail(&e))
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            wanted.deliver_policy = match c.start {
                NatsStart::Earliest => DeliverPolicy::All,
                NatsStart::Latest => {
                    let last = stream
                        .info()
                        .await
                        .map_err(|e| fail(&e))?
                        .state
                        .last_sequence;
                    DeliverPolicy::ByStartSequence {
                        start_sequence: last + 1,
                    }
                }
            };
            tracing::info!(
                "consumer `{name}`: creating it ({:?})",
                wanted.deliver_policy
            );
            stream.create_consumer(wanted).await.map_err(|e| fail(&e))
        }
        Err(e) => Err(fail(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        assert_eq!(parse_position(&position(7)), Some(7));
        assert_eq!(parse_position("message 7"), None);
    }
}
