//! `cumulative-sum`: the running sum of numeric values per key, across
//! batches and restarts. Each record's value is a number in decimal text
//! (`"3.5"`), or, with `field`, a JSON object holding the number in that
//! field; records without a key count under the empty key. For each key of
//! a batch the output has one record: key = the key, value = the sum of
//! every value seen for it so far (Rust's `{}` of an `f64`), timestamp = the
//! latest of the batch's records for it.
//!
//! The sums live in the stage's state, which the engine owns and
//! checkpoints with the source positions. A record whose value is not a
//! number fails on its own.
//!
//! Config: `field` (optional), as for `average`.

#[path = "../../average/src/groups.rs"]
mod groups;
#[path = "../../average/src/number.rs"]
mod number;

use sluice_sdk::state::{self, StateError};
use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct CumulativeSum {
    field: Option<String>,
}

impl Processor for CumulativeSum {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["field"])?;
        Ok(CumulativeSum {
            field: config.get("field").map(str::to_owned),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        let groups = groups::by_key(batch, self.field.as_deref(), out);
        for group in &groups {
            let before = match state::get(group.key)? {
                Some(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or_else(|| Error::failed("a stored sum is not a number"))?,
                None => 0.0,
            };
            let total = before + group.sum;
            match state::put(group.key, total.to_string()) {
                Ok(()) => out.emit_fmt(format_args!("{total}"), Some(group.key), group.latest),
                Err(StateError::TooLarge(why)) => {
                    for &i in &group.records {
                        out.fail(i, format!("cannot keep a sum for this key: {why}"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

sluice_sdk::export!(CumulativeSum);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    fn run(stage: &mut CumulativeSum, records: &[(&str, &str)]) -> (Vec<(String, String)>, usize) {
        let batch = Batch::from_records(
            BatchInfo::default(),
            records.iter().map(|(k, v)| Record::new(*v).with_key(*k)),
        );
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        let failed = out.failures().count();
        let sums = out
            .into_batch()
            .records()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key().unwrap()).into_owned(),
                    r.value_str().unwrap().to_owned(),
                )
            })
            .collect();
        (sums, failed)
    }

    #[test]
    fn sums_carry_over_and_bad_numbers_fail_alone() {
        state::clear();
        let mut stage = CumulativeSum { field: None };
        let (sums, failed) = run(&mut stage, &[("a", "1.5"), ("b", "2"), ("a", "1"), ("a", "x")]);
        assert_eq!(sums, [("a".into(), "2.5".into()), ("b".into(), "2".into())]);
        assert_eq!(failed, 1);
        let (sums, _) = run(&mut stage, &[("a", "0.5"), ("c", "-1")]);
        assert_eq!(sums, [("a".into(), "3".into()), ("c".into(), "-1".into())]);
    }
}
