//! `moving-average`: the mean of numeric values per key over a sliding
//! window, meant for a windowed stage (`window = { length, slide }`): the
//! engine calls it every `slide` with every record of the last `length`,
//! and keeps those records itself, so the plugin holds nothing between
//! calls.
//!
//! Each record's value is a number in decimal text (`"3.5"`), or, with
//! `field`, a JSON object holding the number in that field; records without
//! a key count under the empty key. Per key in the window, in order of
//! first appearance, the output has one record: key = the key, value = the
//! mean (Rust's `{}` of an `f64`), timestamp = the latest of the key's
//! records, and a header `count` with how many values the mean is over. A
//! record whose value is not a number fails on its own (once per call it
//! is in).
//!
//! Config: `field` (optional), as for `average`.

#[path = "../../average/src/groups.rs"]
mod groups;
#[path = "../../average/src/number.rs"]
mod number;

use sluice_sdk::{Batch, Config, Error, Output, Processor, Record};

struct MovingAverage {
    field: Option<String>,
}

impl Processor for MovingAverage {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["field"])?;
        Ok(MovingAverage {
            field: config.get("field").map(str::to_owned),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for group in groups::by_key(batch, self.field.as_deref(), out) {
            let mean = group.sum / group.count as f64;
            out.push(
                Record::new(mean.to_string())
                    .with_key(group.key)
                    .with_timestamp(group.latest)
                    .with_header("count", group.count.to_string()),
            );
        }
        Ok(())
    }
}

sluice_sdk::export!(MovingAverage);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::BatchInfo;

    #[test]
    fn means_per_key_with_their_counts() {
        let mut stage = MovingAverage { field: None };
        let input = vec![
            Record::new("2").with_key("b").with_timestamp(1),
            Record::new("x").with_key("b").with_timestamp(2),
            Record::new("5").with_key("b").with_timestamp(4),
            Record::new("1").with_timestamp(3),
        ];
        let batch = Batch::from_records(BatchInfo::default(), input);
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        assert_eq!(out.failures().count(), 1);
        let rows: Vec<_> = out
            .into_batch()
            .records()
            .map(|r| {
                let count = r.headers().find(|(n, _)| *n == b"count").unwrap().1.to_vec();
                (
                    r.key_str().unwrap().unwrap().to_owned(),
                    r.value_str().unwrap().to_owned(),
                    String::from_utf8(count).unwrap(),
                    r.timestamp(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("b".into(), "3.5".into(), "2".into(), 4),
                ("".into(), "1".into(), "1".into(), 3)
            ]
        );
    }
}
