//! What an HTTP ingest body may hold, by its `Content-Type`:
//!
//! | content type | body | records |
//! |---|---|---|
//! | `text/plain` or none | lines (`\n` or `\r\n`) | one per line, the line as value |
//! | `application/x-ndjson`, `application/jsonl` | one JSON object per line | `value` (text, required), `key` (text), `timestamp` (ms), `headers` (object of texts) |
//! | `application/json` | an array of such objects, or of Flume events `{"headers": {…}, "body": "…"}` | the same; a Flume event's `body` is the value and its headers the record's |
//!
//! A malformed body is refused whole, with the line or element at fault
//! named, so nothing of it is half taken.

use serde::Deserialize;

use crate::batch::{Records, now_ms};
use crate::source::LineSplitter;

/// How a body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// Lines of text.
    Lines,
    /// One JSON object per line.
    JsonLines,
    /// A JSON array of objects (records or Flume events).
    JsonArray,
}

impl BodyFormat {
    /// The format a `Content-Type` names (its parameters ignored); lines
    /// when there is none or it is not one of the JSON types.
    pub fn of(content_type: Option<&str>) -> BodyFormat {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => {
                BodyFormat::JsonLines
            }
            Some("application/json") => BodyFormat::JsonArray,
            _ => BodyFormat::Lines,
        }
    }
}

/// A record as JSON: `value` or (Flume) `body`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    value: Option<String>,
    body: Option<String>,
    key: Option<String>,
    timestamp: Option<u64>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// The records of a body.
pub fn parse(format: BodyFormat, body: &[u8]) -> Result<Records, String> {
    match format {
        BodyFormat::Lines => {
            let mut records = Records::default();
            let mut splitter = LineSplitter::default();
            splitter.feed(body, &mut records);
            splitter.finish(&mut records);
            Ok(records)
        }
        BodyFormat::JsonLines => {
            let text = std::str::from_utf8(body)
                .map_err(|e| format!("the body is not UTF-8 JSON lines: {e}"))?;
            let mut records = Records::default();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let record: JsonRecord =
                    serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
                push(&mut records, record).map_err(|e| format!("line {}: {e}", n + 1))?;
            }
            Ok(records)
        }
        BodyFormat::JsonArray => {
            let items: Vec<JsonRecord> = serde_json::from_slice(body).map_err(|e| {
                format!("the body is not a JSON array of records or Flume events: {e}")
            })?;
            let mut records = Records::default();
            for (n, record) in items.into_iter().enumerate() {
                push(&mut records, record).map_err(|e| format!("element {n}: {e}"))?;
            }
            Ok(records)
        }
    }
}

fn push(records: &mut Records, record: JsonRecord) -> Result<(), String> {
    let value = match (record.value, record.body) {
        (Some(value), None) | (None, Some(value)) => value,
        (Some(_), Some(_)) => return Err("has both `value` and `body`".into()),
        (None, None) => return Err("has no `value` (or Flume `body`)".into()),
    };
    let headers: Vec<(&[u8], &[u8])> = record
        .headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    records.push(
        record.key.as_deref().map(str::as_bytes),
        value.as_bytes(),
        record.timestamp.unwrap_or_else(now_ms),
        &headers,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_json_lines_and_flume_events() {
        let r = parse(BodyFormat::Lines, b"a b\r\nc\n\nlast").unwrap();
        let values: Vec<&[u8]> = r.iter().map(|r| r.value()).collect();
        assert_eq!(values, [&b"a b"[..], b"c", b"", b"last"]);

        let r = parse(
            BodyFormat::of(Some("application/x-ndjson; charset=utf-8")),
            b"{\"value\": \"v\", \"key\": \"k\", \"timestamp\": 7, \"headers\": {\"h\": \"1\"}}\n\n{\"value\": \"w\"}\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(0).key(), Some(&b"k"[..]));
        assert_eq!(r.get(0).timestamp(), 7);
        assert_eq!(
            r.get(0).headers().collect::<Vec<_>>(),
            [(&b"h"[..], &b"1"[..])]
        );
        assert_eq!(r.get(1).value(), b"w");

        let r = parse(
            BodyFormat::of(Some("application/json")),
            br#"[{"headers": {"host": "web1"}, "body": "GET /"}, {"body": "POST /x"}]"#,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(0).value(), b"GET /");
        assert_eq!(
            r.get(0).headers().collect::<Vec<_>>(),
            [(&b"host"[..], &b"web1"[..])]
        );
    }

    #[test]
    fn a_bad_element_refuses_the_whole_body_and_is_named() {
        let err = parse(
            BodyFormat::JsonLines,
            b"{\"value\": \"ok\"}\n{\"valeu\": 1}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse(BodyFormat::JsonArray, br#"[{"body": "x"}, {"key": "k"}]"#).unwrap_err();
        assert_eq!(err, "element 1: has no `value` (or Flume `body`)");
        assert!(parse(BodyFormat::JsonArray, b"{}").is_err());
    }
}
