//! `threshold-alert`: emits an alert for every record whose number is
//! strictly above (or below) a threshold; other records produce nothing.
//!
//! The alert keeps the input's key (if any) and timestamp; its value is JSON:
//! `{"key":"sensor-1","value":31.5,"threshold":30,"direction":"above"}`
//! (`"key":null` without a key; numbers printed with Rust's `{}` of an
//! `f64`). A record whose value is not a number fails on its own.
//!
//! Config: `threshold` (required, a number); `direction` = `"above"`
//! (default) | `"below"`; `field` (optional): the value is then a JSON object
//! and the number is that field (a JSON number or a numeric string).

// Shared with `average`: one file, compiled into both plugins.
#[path = "../../average/src/number.rs"]
mod number;

use std::fmt;

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct ThresholdAlert {
    threshold: f64,
    direction: Direction,
    field: Option<String>,
}

#[derive(Clone, Copy)]
enum Direction {
    Above,
    Below,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }

    fn crossed(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::Above => value > threshold,
            Direction::Below => value < threshold,
        }
    }
}

impl Processor for ThresholdAlert {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["threshold", "direction", "field"])?;
        let threshold: f64 = config.parse_required("threshold")?;
        if !threshold.is_finite() {
            return Err(Error::invalid_config(format!(
                "`threshold`: `{threshold}` is not a finite number"
            )));
        }
        let direction = match config.get_or("direction", "above") {
            "above" => Direction::Above,
            "below" => Direction::Below,
            other => {
                return Err(Error::invalid_config(format!(
                    "`direction`: `{other}` is not one of `above`, `below`"
                )));
            }
        };
        let field = config.get("field").map(str::to_owned);
        Ok(ThresholdAlert {
            threshold,
            direction,
            field,
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for rec in batch.records() {
            let value = match number::read(rec.value(), self.field.as_deref()) {
                Ok(value) => value,
                Err(message) => {
                    out.fail(rec.index(), message);
                    continue;
                }
            };
            if !self.direction.crossed(value, self.threshold) {
                continue;
            }
            let key = rec.key();
            out.emit_fmt(
                format_args!(
                    r#"{{"key":{},"value":{value},"threshold":{},"direction":"{}"}}"#,
                    JsonKey(key),
                    self.threshold,
                    self.direction.name(),
                ),
                key,
                rec.timestamp(),
            );
        }
        Ok(())
    }
}

sluice_sdk::export!(ThresholdAlert);

/// A record key as JSON: a string (bytes that are not UTF-8 become U+FFFD),
/// or `null` without a key.
struct JsonKey<'a>(Option<&'a [u8]>);

impl fmt::Display for JsonKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(key) = self.0 else {
            return f.write_str("null");
        };
        f.write_str("\"")?;
        for chunk in key.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c < ' ' => write!(f, "\\u{:04x}", c as u32)?,
                    c => fmt::Write::write_char(f, c)?,
                }
            }
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    /// Output (key, value, timestamp) rows and failed input indexes.
    type Outcome = (Vec<(Option<String>, String, u64)>, Vec<u32>);

    fn run(config: &[(&str, &str)], input: Vec<Record>) -> Outcome {
        let mut stage = ThresholdAlert::init(&config.iter().copied().collect()).unwrap();
        let batch = Batch::from_records(BatchInfo::default(), input);
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        let failures = out.failures().map(|(i, _)| i).collect();
        let rows = out
            .into_batch()
            .records()
            .map(|r| {
                (
                    r.key_str().unwrap().map(str::to_owned),
                    r.value_str().unwrap().to_owned(),
                    r.timestamp(),
                )
            })
            .collect();
        (rows, failures)
    }

    #[test]
    fn alerts_above() {
        let input = vec![
            Record::new("31.5").with_key("sensor-1").with_timestamp(4),
            Record::new("30").with_key("sensor-1").with_timestamp(5),
            Record::new("42").with_timestamp(6),
            Record::new("hot").with_timestamp(7),
            Record::new("50").with_key("a\"b").with_timestamp(8),
        ];
        let (rows, failures) = run(&[("threshold", "30")], input);
        assert_eq!(
            rows,
            [
                (
                    Some("sensor-1".into()),
                    r#"{"key":"sensor-1","value":31.5,"threshold":30,"direction":"above"}"#.into(),
                    4
                ),
                (
                    None,
                    r#"{"key":null,"value":42,"threshold":30,"direction":"above"}"#.into(),
                    6
                ),
                (
                    Some("a\"b".into()),
                    r#"{"key":"a\"b","value":50,"threshold":30,"direction":"above"}"#.into(),
                    8
                ),
            ]
        );
        assert_eq!(failures, [3]);
    }

    #[test]
    fn alerts_below_on_a_field() {
        let input = vec![Record::new(r#"{"t":-1.5}"#), Record::new(r#"{"t":0}"#)];
        let (rows, _) = run(
            &[("threshold", "0"), ("direction", "below"), ("field", "t")],
            input,
        );
        assert_eq!(
            rows,
            [(
                None,
                r#"{"key":null,"value":-1.5,"threshold":0,"direction":"below"}"#.into(),
                0
            )]
        );
    }

    #[test]
    fn rejects_bad_config() {
        let err = |pairs: &[(&str, &str)]| {
            ThresholdAlert::init(&pairs.iter().copied().collect())
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(err(&[]), "missing required config key `threshold`");
        assert_eq!(
            err(&[("threshold", "abc")]),
            "`threshold`: `abc` is not a valid number (invalid float literal)"
        );
        assert_eq!(
            err(&[("threshold", "1"), ("direction", "up")]),
            "`direction`: `up` is not one of `above`, `below`"
        );
    }
}
