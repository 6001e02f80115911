//! `word-split`: the `flatMap` of word count. Splits each record's value
//! (UTF-8 text) on Unicode whitespace and emits one record per word: value =
//! the word, no key, timestamp = the input record's.
//!
//! Config: `lowercase` = `"true"` | `"false"` (default `"false"`) lowercases
//! the words. A value that is not UTF-8 fails that record alone.

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct WordSplit {
    lowercase: bool,
    /// Reused for lowercased ASCII words, so that they cost no allocation.
    scratch: Vec<u8>,
}

impl Processor for WordSplit {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["lowercase"])?;
        let lowercase = config.parse_or("lowercase", false)?;
        Ok(WordSplit {
            lowercase,
            scratch: Vec::new(),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for rec in batch.records() {
            let text = match rec.value_str() {
                Ok(text) => text,
                Err(e) => {
                    out.fail(rec.index(), e.to_string());
                    continue;
                }
            };
            let timestamp = rec.timestamp();
            for word in text.split_whitespace() {
                if !self.lowercase {
                    out.emit(word, None, timestamp);
                } else if word.is_ascii() {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(word.as_bytes());
                    self.scratch.make_ascii_lowercase();
                    out.emit(&self.scratch, None, timestamp);
                } else {
                    out.emit(word.to_lowercase(), None, timestamp);
                }
            }
        }
        Ok(())
    }
}

sluice_sdk::export!(WordSplit);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    /// Output (word, timestamp) pairs and (index, message) failures.
    type Outcome = (Vec<(String, u64)>, Vec<(u32, String)>);

    fn run(config: &[(&str, &str)], values: &[&[u8]]) -> Outcome {
        let mut stage = WordSplit::init(&config.iter().copied().collect()).unwrap();
        let records = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record::new(*v).with_timestamp(i as u64));
        let batch = Batch::from_records(BatchInfo::default(), records);
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        let failures = out.failures().map(|(i, m)| (i, m.to_owned())).collect();
        let words = out
            .into_batch()
            .records()
            .inspect(|r| assert_eq!(r.key(), None))
            .map(|r| (r.value_str().unwrap().to_owned(), r.timestamp()))
            .collect();
        (words, failures)
    }

    #[test]
    fn splits_on_unicode_whitespace() {
        let (words, failures) = run(
            &[],
            &[
                "  To be\tor\u{a0}NOT ".as_bytes(),
                b"",
                b"\xffx",
                "Ä Ö".as_bytes(),
            ],
        );
        let expected = [
            ("To", 0),
            ("be", 0),
            ("or", 0),
            ("NOT", 0),
            ("Ä", 3),
            ("Ö", 3),
        ];
        assert_eq!(words, expected.map(|(w, t)| (w.to_owned(), t)));
        assert_eq!(
            failures,
            [(2, "value is not valid UTF-8 at byte 0".to_owned())]
        );
    }

    #[test]
    fn lowercases_when_asked() {
        let (words, _) = run(&[("lowercase", "true")], &["To BE Ärger".as_bytes()]);
        assert_eq!(
            words,
            [("to", 0), ("be", 0), ("ärger", 0)].map(|(w, t)| (w.to_owned(), t))
        );
    }

    #[test]
    fn rejects_bad_config() {
        let err = |pairs: &[(&str, &str)]| {
            WordSplit::init(&pairs.iter().copied().collect())
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err(&[("lowercase", "yes")]),
            "`lowercase`: `yes` is not a valid boolean (provided string was not `true` or `false`)"
        );
        assert_eq!(
            err(&[("lower", "true")]),
            "unknown config key `lower` (allowed keys: `lowercase`)"
        );
    }
}
