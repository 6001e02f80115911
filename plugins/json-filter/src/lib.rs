//! `json-filter`: keeps the records whose value, a JSON object, has a field
//! equal to a given text, and drops the others. Kept records pass unchanged
//! (value, key, headers, timestamp). A value that is not valid JSON fails on
//! its own.
//!
//! Config: `field` (required) = a top-level field name or a dotted path such
//! as `user.country`; `equals` (required) = the text to match. A JSON string
//! matches by its content, anything else by its JSON text: `equals = "42"`
//! matches both `42` and `"42"`, `equals = "true"` matches `true` and
//! `"true"`. A missing field (or a path through something that is not an
//! object) does not match.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct JsonFilter {
    path: Vec<String>,
    equals: String,
}

impl Processor for JsonFilter {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["field", "equals"])?;
        let field = config.require("field")?;
        if field.split('.').any(str::is_empty) {
            return Err(Error::invalid_config(format!(
                "`field`: `{field}` is not a field name or a dotted path like `user.country`"
            )));
        }
        let path = field.split('.').map(str::to_owned).collect();
        let equals = config.require("equals")?.to_owned();
        Ok(JsonFilter { path, equals })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for rec in batch.records() {
            match find(rec.value(), &self.path) {
                Ok(Some(found)) if matches(found, &self.equals) => out.forward(&rec),
                Ok(_) => {}
                Err(e) => out.fail(
                    rec.index(),
                    format!("record {}: value is not valid JSON: {e}", rec.index()),
                ),
            }
        }
        Ok(())
    }
}

sluice_sdk::export!(JsonFilter);

/// Whether a field's raw JSON text matches `equals`: a string by its
/// content, anything else by its text.
fn matches(found: &RawValue, equals: &str) -> bool {
    let text = found.get();
    if !text.starts_with('"') {
        return text == equals;
    }
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return inner == equals;
    }
    serde_json::from_str::<String>(text).is_ok_and(|s| s == equals)
}

/// The raw JSON text at `path` in `value`, after checking that the whole
/// value is valid JSON. Walks the document once without building it: other
/// fields are parsed and skipped.
fn find<'v>(value: &'v [u8], path: &[String]) -> Result<Option<&'v RawValue>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(value);
    let found = PathSeed(path).deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Finds the rest of a path in the value being deserialized.
struct PathSeed<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.0.is_empty() {
            return <&'de RawValue as serde::Deserialize>::deserialize(deserializer).map(Some);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PathSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (head, rest) = self.0.split_first().expect("the path is not empty here");
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(head))? {
            if wanted {
                found = map.next_value_seed(PathSeed(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Reads an object key and says whether it is the wanted one, without
/// allocating.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::{BatchInfo, Record};

    fn kept(field: &str, equals: &str, values: &[&str]) -> (Vec<String>, Vec<(u32, String)>) {
        let config = [("field", field), ("equals", equals)].into_iter().collect();
        let mut stage = JsonFilter::init(&config).unwrap();
        let input = values.iter().map(|v| {
            Record::new(*v)
                .with_key("k")
                .with_header("h", "1")
                .with_timestamp(3)
        });
        let batch = Batch::from_records(BatchInfo::default(), input);
        let mut out = Output::new(&batch);
        stage.process(&batch, &mut out).unwrap();
        let failures = out.failures().map(|(i, m)| (i, m.to_owned())).collect();
        let values = out
            .into_batch()
            .records()
            .inspect(|r| {
                assert_eq!(
                    (r.key(), r.header("h"), r.timestamp()),
                    (Some(&b"k"[..]), Some(&b"1"[..]), 3)
                )
            })
            .map(|r| r.value_str().unwrap().to_owned())
            .collect();
        (values, failures)
    }

    #[test]
    fn matches_strings_by_content_and_others_by_text() {
        let values = [
            r#"{"n":42}"#,
            r#"{"n":"42"}"#,
            r#"{"n":42.0}"#,
            r#"{"m":42}"#,
            r#"{"n":[42]}"#,
            "42",
        ];
        assert_eq!(kept("n", "42", &values).0, [values[0], values[1]]);
        assert_eq!(
            kept("n", "\"x\"", &[r#"{"n":"x"}"#, r#"{"n":"\"x\""}"#]).0,
            [r#"{"n":"\"x\""}"#]
        );
        assert_eq!(
            kept("n", "é", &[r#"{"n":"\u00e9"}"#]).0,
            [r#"{"n":"\u00e9"}"#]
        );
        assert_eq!(
            kept("b", "true", &[r#"{"b":true}"#, r#"{"b":false}"#]).0,
            [r#"{"b":true}"#]
        );
    }

    #[test]
    fn follows_dotted_paths() {
        let values = [
            r#"{"user":{"name":"x","country":"NO"},"n":1}"#,
            r#"{"user":{"country":"SE"}}"#,
            r#"{"user":"NO"}"#,
            r#"{"user":{"country":{"code":"NO"}}}"#,
        ];
        assert_eq!(kept("user.country", "NO", &values).0, [values[0]]);
    }

    #[test]
    fn invalid_json_fails_the_record() {
        let (values, failures) = kept("n", "1", &[r#"{"n":1}"#, r#"{"n":1"#, r#"{"n":1} {}"#]);
        assert_eq!(values, [r#"{"n":1}"#]);
        assert_eq!(failures.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2]);
        assert!(
            failures[0]
                .1
                .starts_with("record 1: value is not valid JSON: "),
            "{}",
            failures[0].1
        );
    }
}
