//! `running-count`: the `updateStateByKey` of word count. Each input
//! record's value is a word (put `word-split` in front); for each distinct
//! word of a batch the output has one record: key = the word, value = how
//! many times it has occurred so far, across every batch (decimal text),
//! timestamp = the latest timestamp of its occurrences in the batch.
//!
//! The totals live in the stage's state, which the engine owns: they
//! survive traps, restarts and new plugin versions, and are checkpointed
//! with the source positions, so a replayed batch does not count twice.
//!
//! No config. A word too long for the stage's `state_limit` fails its
//! records alone (they are dead-lettered).

use std::collections::HashMap;

use sluice_sdk::state::{self, StateError};
use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct RunningCount;

/// One distinct word of the batch.
struct Tally<'a> {
    word: &'a [u8],
    count: u64,
    latest: u64,
    /// The input records holding it, to fail them if it cannot be stored.
    records: Vec<u32>,
}

impl Processor for RunningCount {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&[])?;
        Ok(RunningCount)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut tallies: Vec<Tally<'_>> = Vec::new();
        for rec in batch.records() {
            let next = tallies.len();
            let slot = *index.entry(rec.value()).or_insert(next);
            if slot == next {
                tallies.push(Tally {
                    word: rec.value(),
                    count: 0,
                    latest: 0,
                    records: Vec::new(),
                });
            }
            let tally = &mut tallies[slot];
            tally.count += 1;
            tally.latest = tally.latest.max(rec.timestamp());
            tally.records.push(rec.index());
        }
        for tally in &tallies {
            let before = match state::get(tally.word)? {
                Some(bytes) => parse_total(&bytes)?,
                None => 0,
            };
            let total = before + tally.count;
            match state::put(tally.word, total.to_string()) {
                Ok(()) => out.emit_fmt(format_args!("{total}"), Some(tally.word), tally.latest),
                Err(StateError::TooLarge(why)) => {
                    for &i in &tally.records {
                        out.fail(i, format!("cannot keep a total for this word: {why}"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A stored total: decimal text, as this plugin writes it.
fn parse_total(bytes: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Error::failed(format!(
                "stored total {:?} is not a number",
                String::from_utf8_lossy(bytes)
            ))
        })
}

sluice_sdk::export!(RunningCount);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    fn run(words: &[&str]) -> Vec<(String, String)> {
        let batch = Batch::from_records(BatchInfo::default(), words.iter().map(|w| Record::new(*w)));
        let mut out = Output::new(&batch);
        RunningCount.process(&batch, &mut out).unwrap();
        out.into_batch()
            .records()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key().unwrap()).into_owned(),
                    String::from_utf8_lossy(r.value()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn totals_carry_over_from_batch_to_batch() {
        state::clear();
        assert_eq!(
            run(&["a", "b", "a"]),
            [("a".into(), "2".into()), ("b".into(), "1".into())]
        );
        assert_eq!(
            run(&["b", "c"]),
            [("b".into(), "2".into()), ("c".into(), "1".into())]
        );
        assert_eq!(state::get(b"a").unwrap(), Some(b"2".to_vec()));
    }
}
