//! From a ZeroMQ message (one or more frames) to a record, and the messages
//! that make no record, on their way to the dead-letter folder.

use zeromq::ZmqMessage;

use crate::batch::{Records, now_ms};
use crate::stage::DeadLetter;

/// Appends `message` to `records`: with `key_frame`, the first frame is the
/// key and the rest the value; without, every frame is the value. Frames
/// of the value are joined back to back. The time received is the
/// record's timestamp (ZeroMQ messages carry none).
pub fn push(records: &mut Records, message: &ZmqMessage, key_frame: bool) -> Result<(), String> {
    let ts = now_ms();
    let (key, value_frames) = if key_frame {
        if message.len() < 2 {
            return Err(format!(
                "a message of {} frame(s): `key_frame = true` needs a key frame and at least \
                 one value frame",
                message.len()
            ));
        }
        (message.get(0).map(|k| k.as_ref()), 1)
    } else {
        (None, 0)
    };
    if message.len() == value_frames + 1 {
        let value = message.get(value_frames).expect("counted above");
        records.push(key, value, ts, &[]);
    } else {
        let mut value = Vec::new();
        for frame in message.iter().skip(value_frames) {
            value.extend_from_slice(frame);
        }
        records.push(key, &value, ts, &[]);
    }
    Ok(())
}

/// Messages that made no record, with why, until written out.
pub struct Refused {
    dead_letter: DeadLetter,
    records: Records,
    reasons: Vec<String>,
}

impl Refused {
    pub fn new(dead_letter: DeadLetter) -> Self {
        Refused {
            dead_letter,
            records: Records::default(),
            reasons: Vec::new(),
        }
    }

    /// Keeps message number `index` of this run (frames back to back as its
    /// value), refused for `why`.
    pub fn add(&mut self, message: &ZmqMessage, index: u64, why: String) {
        let mut value = Vec::new();
        for frame in message.iter() {
            value.extend_from_slice(frame);
        }
        self.records.push_value(&value, now_ms());
        tracing::warn!(
            "zeromq message {index} dead-lettered to {}: {why}",
            self.dead_letter.dir.display()
        );
        self.reasons.push(why);
    }

    /// Writes what was refused since the last call, if anything.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let reasons = std::mem::take(&mut self.reasons);
        let dead_letter = self.dead_letter.clone();
        tokio::task::spawn_blocking(move || {
            let indexed: Vec<(usize, &str)> = reasons
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.as_str()))
                .collect();
            dead_letter.write_refused(&records, &indexed)
        })
        .await
        .map_err(|e| e.to_string())?
        .map(drop)
        .map_err(|e| format!("cannot write dead letters: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(frames: &[&str]) -> ZmqMessage {
        let mut m = ZmqMessage::from(Bytes::from(frames[0].to_string()));
        for f in &frames[1..] {
            m.push_back(Bytes::from(f.to_string()));
        }
        m
    }

    #[test]
    fn frames_become_key_and_value() {
        let mut records = Records::default();
        push(&mut records, &message(&["one"]), false).unwrap();
        push(&mut records, &message(&["a", "b", "c"]), false).unwrap();
        push(&mut records, &message(&["topic", "payload"]), true).unwrap();
        push(&mut records, &message(&["k", "v1", "v2"]), true).unwrap();
        let got: Vec<(Option<Vec<u8>>, Vec<u8>)> = records
            .iter()
            .map(|r| (r.key().map(<[u8]>::to_vec), r.value().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, b"one".to_vec()),
                (None, b"abc".to_vec()),
                (Some(b"topic".to_vec()), b"payload".to_vec()),
                (Some(b"k".to_vec()), b"v1v2".to_vec()),
            ]
        );
        let err = push(&mut records, &message(&["alone"]), true).unwrap_err();
        assert!(err.contains("1 frame(s)"), "{err}");
        assert_eq!(records.len(), 4, "a refused message adds no record");
    }
}
