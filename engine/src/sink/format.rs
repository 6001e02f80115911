//! How records are written as text: `jsonl` (one JSON object per record) and
//! `text` (the value, or `key<TAB>value`).

use std::io::Write as _;

use serde::Deserialize;

use crate::batch::RecordRef;

/// Output format of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `{"key": …, "value": …, "timestamp": …}` per line. Key is `null`
    /// when absent; a key or value that is not UTF-8 is written as
    /// `key_base64` / `value_base64` instead; `headers` (a list of
    /// `[name, value]` pairs) appears only when the record has headers.
    Jsonl,
    /// The value as text, or `key<TAB>value` when the record has a key;
    /// bytes that are not UTF-8 become U+FFFD.
    Text,
}

/// Appends one record in `format`, with a newline.
pub fn write(out: &mut Vec<u8>, format: Format, record: RecordRef<'_>) {
    match format {
        Format::Jsonl => jsonl(out, record, None),
        Format::Text => text(out, record),
    }
}

/// The body of one message for a messaging sink (MQTT, NATS): the record's
/// value as it is without a `format`, else the record in `format` without
/// its newline (so that a key, which such messages cannot carry, survives).
pub fn message(format: Option<Format>, record: RecordRef<'_>) -> Vec<u8> {
    match format {
        None => record.value().to_vec(),
        Some(format) => {
            let mut out = Vec::with_capacity(record.value().len() + 32);
            write(&mut out, format, record);
            out.pop();
            out
        }
    }
}

/// Appends one record as a JSON line, with an `error` field when given.
pub fn jsonl(out: &mut Vec<u8>, record: RecordRef<'_>, error: Option<&str>) {
    out.push(b'{');
    match record.key() {
        None => out.extend_from_slice(b"\"key\":null"),
        Some(key) => bytes_field(out, "key", key),
    }
    out.push(b',');
    bytes_field(out, "value", record.value());
    out.extend_from_slice(b",\"timestamp\":");
    // Formatted in place: no `String` per record.
    let _ = write!(out, "{}", record.timestamp());
    let mut headers = record.headers().peekable();
    if headers.peek().is_some() {
        out.extend_from_slice(b",\"headers\":[");
        for (i, (name, value)) in headers.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json_string(out, &String::from_utf8_lossy(name));
            out.push(b',');
            json_string(out, &String::from_utf8_lossy(value));
            out.push(b']');
        }
        out.push(b']');
    }
    if let Some(error) = error {
        out.extend_from_slice(b",\"error\":");
        json_string(out, error);
    }
    out.extend_from_slice(b"}\n");
}

fn text(out: &mut Vec<u8>, record: RecordRef<'_>) {
    if let Some(key) = record.key() {
        out.extend_from_slice(String::from_utf8_lossy(key).as_bytes());
        out.push(b'\t');
    }
    out.extend_from_slice(String::from_utf8_lossy(record.value()).as_bytes());
    out.push(b'\n');
}

fn bytes_field(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            json_string(out, name);
            out.push(b':');
            json_string(out, text);
        }
        Err(_) => {
            json_string(out, &format!("{name}_base64"));
            out.push(b':');
            out.push(b'"');
            base64(out, bytes);
            out.push(b'"');
        }
    }
}

/// Appends `s` as a JSON string, quoted and escaped.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(ALPHABET[(v >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Records;

    #[test]
    fn jsonl_is_valid_json_with_escapes_and_base64() {
        let mut r = Records::default();
        r.push(
            Some(b"k\"1"),
            b"line\twith \\ and \x01",
            42,
            &[(b"h", b"v")],
        );
        r.push(None, &[0xff, 0xfe, 0x00], 7, &[]);
        let mut out = Vec::new();
        for rec in r.iter() {
            jsonl(&mut out, rec, None);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["key"], "k\"1");
        assert_eq!(lines[0]["value"], "line\twith \\ and \u{1}");
        assert_eq!(lines[0]["timestamp"], 42);
        assert_eq!(lines[0]["headers"][0][1], "v");
        assert_eq!(lines[1]["key"], serde_json::Value::Null);
        assert_eq!(lines[1]["value_base64"], "//4A");
    }

    #[test]
    fn text_has_key_tab_value() {
        let mut r = Records::default();
        r.push(Some(b"word"), b"3", 0, &[]);
        r.push_value(b"plain", 0);
        let mut out = Vec::new();
        for rec in r.iter() {
            write(&mut out, Format::Text, rec);
        }
        assert_eq!(out, b"word\t3\nplain\n");
    }
}
