//! `word-count`: the `reduceByKey` of word count, within one batch. Each input
//! record's value is a word; the output has one record per distinct word, in
//! order of first appearance: key = the word, value = how many times it
//! occurred in the batch (decimal text), timestamp = the latest timestamp of
//! its occurrences.
//!
//! No config. Words are compared as bytes: put `word-split` with
//! `lowercase = "true"` in front to count case-insensitively. Counts over a
//! longer span than a batch come from the stage's `window`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct WordCount;

/// One distinct word of the batch.
struct Tally<'a> {
    word: &'a [u8],
    count: u64,
    latest: u64,
}

impl Processor for WordCount {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&[])?;
        Ok(WordCount)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        // Words borrow from the input batch: counting copies no bytes.
        let mut index: HashMap<&[u8], usize, BuildHasherDefault<FxHasher>> =
            HashMap::with_capacity_and_hasher(batch.len().min(1 << 16), Default::default());
        let mut tallies: Vec<Tally<'_>> = Vec::new();
        for rec in batch.records() {
            let word = rec.value();
            let timestamp = rec.timestamp();
            let next = tallies.len();
            let slot = *index.entry(word).or_insert(next);
            if slot == next {
                tallies.push(Tally {
                    word,
                    count: 1,
                    latest: timestamp,
                });
            } else {
                let tally = &mut tallies[slot];
                tally.count += 1;
                tally.latest = tally.latest.max(timestamp);
            }
        }
        for tally in &tallies {
            out.emit_fmt(
                format_args!("{}", tally.count),
                Some(tally.word),
                tally.latest,
            );
        }
        Ok(())
    }
}

sluice_sdk::export!(WordCount);

/// The Fx hash (Firefox, rustc): fast on short keys and deterministic. The
/// standard `HashMap` hasher seeds itself from randomness, which the engine
/// provides only deterministically, so it would buy nothing here.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some((chunk, rest)) = bytes.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*chunk));
            bytes = rest;
        }
        if let Some((chunk, rest)) = bytes.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*chunk)));
            bytes = rest;
        }
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    #[test]
    fn counts_in_order_of_first_appearance() {
        let words = [
            ("to", 5),
            ("be", 1),
            ("or", 2),
            ("not", 3),
            ("to", 4),
            ("be", 9),
            ("to", 0),
        ];
        let input = words.map(|(w, t)| Record::new(w).with_timestamp(t));
        let batch = Batch::from_records(BatchInfo::default(), input);
        let mut out = Output::new(&batch);
        WordCount::init(&Config::default())
            .unwrap()
            .process(&batch, &mut out)
            .unwrap();
        let counts: Vec<_> = out
            .into_batch()
            .records()
            .map(|r| {
                (
                    r.key_str().unwrap().unwrap().to_owned(),
                    r.value_str().unwrap().to_owned(),
                    r.timestamp(),
                )
            })
            .collect();
        let expected = [
            ("to", "3", 5),
            ("be", "2", 9),
            ("or", "1", 2),
            ("not", "1", 3),
        ];
        assert_eq!(
            counts,
            expected.map(|(k, v, t)| (k.to_owned(), v.to_owned(), t))
        );
    }
}
