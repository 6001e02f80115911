//! Where the Kafka source has read to: offsets per partition, kept as
//! messages are read, written as the position string a chunk carries to the
//! batcher and read back from a checkpoint, and turned into librdkafka's
//! partition lists; also copying one message into a chunk's records.
//!
//! Not here: the consumer loop, rebalances and committing offsets to the
//! group (`mod.rs`).

use std::collections::BTreeMap;

use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::{Records, now_ms};

/// A topic and partition.
pub(super) type Partition = (String, i32);

/// Next offset to read, per partition.
pub(super) type Offsets = BTreeMap<Partition, i64>;

/// Notes `message` as read in `progress`. Messages come in runs from one
/// partition, so `last` keeps the key of the run's partition: a key (a
/// `String`) is made when the partition changes, not for every message.
pub(super) fn advance(
    progress: &mut Offsets,
    last: &mut Option<Partition>,
    message: &BorrowedMessage<'_>,
) {
    let (topic, partition) = (message.topic(), message.partition());
    if !matches!(last, Some((t, p)) if *p == partition && t == topic) {
        *last = Some((topic.to_string(), partition));
    }
    let key = last.as_ref().expect("matched or set above");
    let next = message.offset() + 1;
    match progress.get_mut(key) {
        Some(offset) => *offset = next,
        None => {
            progress.insert(key.clone(), next);
        }
    }
}

/// Appends `message` to `records`: its key, payload, headers and
/// timestamp (the time read, when the message has none).
pub(crate) fn push_message(records: &mut Records, message: &BorrowedMessage<'_>) {
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or_else(now_ms);
    let headers: Vec<(&[u8], &[u8])> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.as_bytes(), h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    records.push(
        message.key(),
        message.payload().unwrap_or_default(),
        timestamp,
        &headers,
    );
}

/// `offsets` as librdkafka takes them, to commit or to seek.
pub(super) fn partition_list(offsets: &Offsets) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for ((topic, partition), offset) in offsets {
        // Offsets come from messages read, so they are valid.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

/// The partitions of `list` for a log line, as `topic[0,1] other[3]`.
pub(crate) fn list_partitions(list: &TopicPartitionList) -> String {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in list.elements() {
        by_topic
            .entry(e.topic().to_string())
            .or_default()
            .push(e.partition());
    }
    if by_topic.is_empty() {
        return "none".into();
    }
    by_topic
        .iter()
        .map(|(topic, partitions)| {
            let mut partitions = partitions.clone();
            partitions.sort_unstable();
            let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
            format!("{topic}[{}]", partitions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A position as the batcher carries it: `topic:partition@next-offset`,
/// space-separated (Kafka topic names cannot hold `:`, `@` or spaces).
pub(super) fn encode(offsets: &Offsets) -> String {
    offsets
        .iter()
        .map(|((topic, partition), offset)| format!("{topic}:{partition}@{offset}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads back what [`encode`] wrote; the error names the malformed entry.
pub(super) fn decode(position: &str) -> Result<Offsets, String> {
    position
        .split_whitespace()
        .map(|entry| {
            let parsed = entry.rsplit_once('@').and_then(|(tp, offset)| {
                let (topic, partition) = tp.rsplit_once(':')?;
                Some((
                    (topic.to_string(), partition.parse().ok()?),
                    offset.parse().ok()?,
                ))
            });
            parsed
                .ok_or_else(|| format!("malformed kafka position entry `{entry}` in `{position}`"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let mut offsets = Offsets::new();
        offsets.insert(("lines".into(), 0), 120);
        offsets.insert(("my.topic-2".into(), 11), 5);
        let text = encode(&offsets);
        assert_eq!(text, "lines:0@120 my.topic-2:11@5");
        assert_eq!(decode(&text).unwrap(), offsets);
        assert!(decode("lines:x@1").unwrap_err().contains("lines:x@1"));
        assert_eq!(decode("").unwrap(), Offsets::new());
    }
}
