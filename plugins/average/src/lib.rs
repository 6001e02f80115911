//! `average`: the mean of numeric values per key, within one batch.
//!
//! Each record's value is a number in decimal text (`"3.5"`); records without
//! a key are grouped under the empty key. The output has one record per key,
//! in order of first appearance: key = the key, value = the average (Rust's
//! `{}` of an `f64`: `"2.5"`, `"3"`), timestamp = the latest of the group.
//! A record whose value is not a number fails on its own.
//!
//! Config: `field` (optional) = a field name: the value is then a JSON
//! object and the number is that field (a JSON number or a numeric string).

mod groups;
mod number;

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct Average {
    field: Option<String>,
}

impl Processor for Average {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["field"])?;
        Ok(Average {
            field: config.get("field").map(str::to_owned),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for group in groups::by_key(batch, self.field.as_deref(), out) {
            let mean = group.sum / group.count as f64;
            out.emit_fmt(format_args!("{mean}"), Some(group.key), group.latest);
        }
        Ok(())
    }
}

sluice_sdk::export!(Average);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    type Row = (Option<String>, String, u64);

    fn run(config: &[(&str, &str)], input: Vec<Record>) -> (Vec<Row>, Vec<(u32, String)>) {
        let mut stage = Average::init(&config.iter().copied().collect()).unwrap();
        let batch = Batch::from_records(BatchInfo::default(), input);
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        let failures = out.failures().map(|(i, m)| (i, m.to_owned())).collect();
        let rows = out
            .into_batch()
            .records()
            .map(|r| {
                let key = r.key_str().unwrap().map(str::to_owned);
                (key, r.value_str().unwrap().to_owned(), r.timestamp())
            })
            .collect();
        (rows, failures)
    }

    #[test]
    fn averages_per_key() {
        let input = vec![
            Record::new("2").with_key("b").with_timestamp(1),
            Record::new("1").with_timestamp(7),
            Record::new("3").with_key("b").with_timestamp(5),
            Record::new("x").with_key("a").with_timestamp(9),
            Record::new("4").with_timestamp(2),
            Record::new("3").with_key("b").with_timestamp(3),
        ];
        let (rows, failures) = run(&[], input);
        let expected = [("b", "2.6666666666666665", 5), ("", "2.5", 7)];
        assert_eq!(
            rows,
            expected.map(|(k, v, t)| (Some(k.to_owned()), v.to_owned(), t))
        );
        assert_eq!(failures, [(3, "value `x` is not a number".to_owned())]);
    }

    #[test]
    fn reads_a_json_field() {
        let input = vec![
            Record::new(r#"{"temp": 20, "room": "a"}"#).with_timestamp(1),
            Record::new(r#"{"temp": "22"}"#).with_timestamp(2),
            Record::new(r#"{"room": "a"}"#).with_timestamp(3),
        ];
        let (rows, failures) = run(&[("field", "temp")], input);
        assert_eq!(rows, [(Some(String::new()), "21".to_owned(), 2)]);
        assert_eq!(failures, [(2, "field `temp` is missing".to_owned())]);
    }
}
