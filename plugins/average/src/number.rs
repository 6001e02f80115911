//! Reading a record's number: the value itself as decimal text, or one field
//! of a JSON object value (a JSON number, or a string holding one).
//!
//! The same file serves `average`, `threshold-alert`, `cumulative-sum` and
//! `moving-average` (which include it by path).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The longest excerpt of a bad value quoted in a failure message, in
/// characters.
const EXCERPT_CHARS: usize = 64;

/// The number in `value`: the whole value when `field` is `None`, else the
/// top-level `field` of the JSON object it holds. The error is a message for
/// [`Output::fail`](sluice_sdk::Output::fail) naming the value.
pub fn read(value: &[u8], field: Option<&str>) -> Result<f64, String> {
    match field {
        None => {
            let text = String::from_utf8_lossy(value);
            parse(&text).ok_or_else(|| format!("value `{}` is not a number", excerpt(&text)))
        }
        Some(field) => {
            let raw = field_of(value, field)?;
            let text = raw.get();
            let number = match text.strip_prefix('"') {
                Some(_) => serde_json::from_str::<Cow<'_, str>>(text)
                    .ok()
                    .and_then(|s| parse(&s)),
                None => parse(text),
            };
            number.ok_or_else(|| format!("field `{field}`: `{}` is not a number", excerpt(text)))
        }
    }
}

/// Decimal text as a finite number, ignoring surrounding whitespace.
fn parse(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `text`, cut to [`EXCERPT_CHARS`] characters.
fn excerpt(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

/// The raw JSON text of the top-level `field` of the object in `value`. The
/// whole value is checked to be valid JSON, but only that field is kept.
fn field_of<'v>(value: &'v [u8], field: &str) -> Result<&'v RawValue, String> {
    if value.trim_ascii_start().first() != Some(&b'{') {
        return Err("value is not a JSON object".to_owned());
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let found = (&mut de)
        .deserialize_map(FieldOf(field))
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| format!("value is not valid JSON: {e}"))?;
    found.ok_or_else(|| format!("field `{field}` is missing"))
}

/// Visits a JSON object, keeping the raw value of one field.
struct FieldOf<'f>(&'f str);

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.0))? {
            if wanted {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
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
    use super::read;

    #[test]
    fn plain_values() {
        assert_eq!(read(b"3.5", None), Ok(3.5));
        assert_eq!(read(b" -2 ", None), Ok(-2.0));
        assert_eq!(
            read(b"abc", None),
            Err("value `abc` is not a number".to_owned())
        );
        assert_eq!(
            read(b"inf", None),
            Err("value `inf` is not a number".to_owned())
        );
        let long = "x".repeat(100);
        assert_eq!(
            read(long.as_bytes(), None),
            Err(format!("value `{}…` is not a number", "x".repeat(64)))
        );
    }

    #[test]
    fn json_fields() {
        let t = Some("t");
        assert_eq!(read(br#"{"a":[1,{"t":9}],"t":21.5}"#, t), Ok(21.5));
        assert_eq!(read(br#"{"t":"4"}"#, t), Ok(4.0));
        assert_eq!(read(br#"{"\u0074":1e2}"#, t), Ok(100.0));
        assert_eq!(
            read(br#"{"t":true}"#, t),
            Err("field `t`: `true` is not a number".to_owned())
        );
        assert_eq!(
            read(br#"{"u":1}"#, t),
            Err("field `t` is missing".to_owned())
        );
        assert_eq!(
            read(b"[1]", t),
            Err("value is not a JSON object".to_owned())
        );
        assert!(
            read(br#"{"t":1"#, t)
                .unwrap_err()
                .starts_with("value is not valid JSON: ")
        );
        assert!(
            read(br#"{"t":1} x"#, t)
                .unwrap_err()
                .starts_with("value is not valid JSON: ")
        );
    }
}
