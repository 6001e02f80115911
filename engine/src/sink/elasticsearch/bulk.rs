//! The `_bulk` request and response, apart from any network: how a record
//! becomes an action line and a document line, and what the server said of
//! each item (indexed, worth another try, or rejected with its reason).

use super::super::format;
use crate::batch::RecordRef;

/// Appends a record's action and document lines: `{"index": {"_index":
/// …, "_id": …}}` and the document. A value that is a JSON object is the
/// document itself (re-serialised on one line if it spans several);
/// anything else becomes the jsonl sink's `{"key", "value", "timestamp"}`.
pub fn append(out: &mut Vec<u8>, index: &str, id: Option<&str>, record: RecordRef<'_>) {
    out.extend_from_slice(b"{\"index\":{\"_index\":");
    format::json_string(out, index);
    if let Some(id) = id {
        out.extend_from_slice(b",\"_id\":");
        format::json_string(out, id);
    }
    out.extend_from_slice(b"}}\n");
    document(out, record);
}

/// Appends the document for `record`, with its newline.
fn document(out: &mut Vec<u8>, record: RecordRef<'_>) {
    let value = record.value();
    let is_object = value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok();
    if !is_object {
        format::jsonl(out, record, None);
        return;
    }
    if value.iter().any(|&b| b == b'\n' || b == b'\r') {
        // NDJSON allows no line break inside a document.
        let parsed: serde_json::Value =
            serde_json::from_slice(value).expect("checked to be JSON just above");
        serde_json::to_writer(&mut *out, &parsed).expect("writing to a Vec");
    } else {
        out.extend_from_slice(value);
    }
    out.push(b'\n');
}

/// What the server said of one item of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Indexed.
    Done,
    /// Refused for now (`429`, `5xx`): send it again.
    Retry(String),
    /// Refused for good (a mapping error, an id too long): dead-letter it
    /// with this reason.
    Rejected(String),
}

/// Reads a `_bulk` response: one [`Item`] per item sent, in order. Fails
/// when the body is not a bulk response for `sent` items.
pub fn parse_response(body: &[u8], sent: usize) -> Result<Vec<Item>, String> {
    let response: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    let items = response
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or("the response has no `items`")?;
    if items.len() != sent {
        return Err(format!(
            "the response lists {} items for {sent} sent",
            items.len()
        ));
    }
    Ok(items.iter().map(item).collect())
}

fn item(item: &serde_json::Value) -> Item {
    // `{"index": {"status": …, "error": {…}}}`: one key, the operation.
    let Some(result) = item.as_object().and_then(|o| o.values().next()) else {
        return Item::Rejected(format!("unreadable item in the response: {item}"));
    };
    let status = result.get("status").and_then(|s| s.as_u64()).unwrap_or(0);
    if (200..300).contains(&status) {
        return Item::Done;
    }
    let reason = reason(status, result.get("error"));
    if status == 429 || status >= 500 {
        Item::Retry(reason)
    } else {
        Item::Rejected(reason)
    }
}

/// `400 mapper_parsing_exception: failed to parse field [n] … (caused by
/// illegal_argument_exception: For input string: "x")`.
fn reason(status: u64, error: Option<&serde_json::Value>) -> String {
    let text = |e: &serde_json::Value| {
        let kind = e.get("type").and_then(|t| t.as_str()).unwrap_or("error");
        match e.get("reason").and_then(|r| r.as_str()) {
            Some(reason) => format!("{kind}: {reason}"),
            None => kind.to_string(),
        }
    };
    let mut out = format!("{status}");
    match error {
        Some(e) if e.is_object() => {
            out.push(' ');
            out.push_str(&text(e));
            if let Some(cause) = e.get("caused_by") {
                out.push_str(&format!(" (caused by {})", text(cause)));
            }
        }
        Some(serde_json::Value::String(s)) => {
            out.push(' ');
            out.push_str(s);
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Records;

    #[test]
    fn objects_stay_objects_on_one_line_and_other_values_are_wrapped() {
        let mut r = Records::default();
        r.push(Some(b"w"), b"{\"word\": \"a\",\n \"count\": 2}", 5, &[]);
        r.push(Some(b"k"), b"{\"word\":\"b\"}", 6, &[]);
        r.push(None, b"plain \"text\"", 7, &[]);
        r.push(None, b"{not json", 8, &[]);
        let mut out = Vec::new();
        for (i, rec) in r.iter().enumerate() {
            append(&mut out, "idx", Some(&format!("id-{i}")), rec);
        }
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0]["index"]["_index"], "idx");
        assert_eq!(lines[0]["index"]["_id"], "id-0");
        assert_eq!(lines[1], serde_json::json!({"word": "a", "count": 2}));
        assert_eq!(lines[3], serde_json::json!({"word": "b"}));
        assert_eq!(lines[5]["value"], "plain \"text\"");
        assert_eq!(lines[5]["timestamp"], 7);
        assert_eq!(lines[7]["value"], "{not json");
    }

    #[test]
    fn items_are_done_retried_or_rejected_with_the_reason() {
        let body = br#"{"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
            {"index":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}
        ]}"#;
        let items = parse_response(body, 3).unwrap();
        assert_eq!(items[0], Item::Done);
        assert_eq!(
            items[1],
            Item::Rejected(
                "400 mapper_parsing_exception: failed to parse field [n] (caused by \
                 illegal_argument_exception: For input string: \"x\")"
                    .into()
            )
        );
        assert!(matches!(&items[2], Item::Retry(r) if r.contains("queue full")));
        assert!(
            parse_response(body, 2)
                .unwrap_err()
                .contains("3 items for 2 sent")
        );
        assert!(parse_response(b"<html>", 1).is_err());
    }
}
