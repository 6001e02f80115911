//! Human-written quantities in pipeline files: durations (`200ms`, `2s`,
//! `1m`) and byte sizes (`64MiB`). Parsing only; what they limit is decided
//! elsewhere.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written as a whole number and a unit: `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `200ms`, `2s`, `1m`, `1h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| duration_help(text))?;
        let millis = match unit.trim() {
            "ms" => Some(amount),
            "s" => amount.checked_mul(1000),
            "m" => amount.checked_mul(60_000),
            "h" => amount.checked_mul(3_600_000),
            _ => return Err(duration_help(text)),
        };
        // Nothing in a pipeline needs more than a week.
        match millis {
            Some(ms) if ms <= MAX_MS => Ok(HumanDuration(Duration::from_millis(ms))),
            _ => Err(format!("invalid duration `{text}`: at most 7 days (168h)")),
        }
    }
}

/// Longest duration accepted, in milliseconds: a week.
const MAX_MS: u64 = 7 * 24 * 3_600_000;

fn duration_help(text: &str) -> String {
    format!(
        "invalid duration `{text}`: expected a whole number and a unit (ms, s, m or h), like `200ms` or `2s`"
    )
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 && ms > 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"200ms\", \"2s\" or \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: a unit is required, like \"{v}ms\" or \"{v}s\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: a unit is required, like \"{v}ms\" or \"{v}s\""
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A number of bytes written with an optional unit: `B`, `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `65536`, `64KiB`, `64MiB`, `1GiB`, `10MB`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| size_help(text))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(size_help(text)),
        };
        amount
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| size_help(text))
    }
}

fn size_help(text: &str) -> String {
    format!(
        "invalid size `{text}`: expected a whole number and a unit (B, KiB, MiB, GiB, KB, MB or GB), like `64MiB`"
    )
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b % (1 << 30) == 0 {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            HumanDuration::parse("200ms").unwrap().0,
            Duration::from_millis(200)
        );
        assert_eq!(
            HumanDuration::parse("2s").unwrap().0,
            Duration::from_secs(2)
        );
        assert_eq!(
            HumanDuration::parse("3m").unwrap().0,
            Duration::from_secs(180)
        );
        assert!(HumanDuration::parse("2").unwrap_err().contains("`2`"));
        assert!(HumanDuration::parse("fast").is_err());
        assert!(HumanDuration::parse("1.5s").is_err());
        assert!(
            HumanDuration::parse("99999999999999999h")
                .unwrap_err()
                .contains("at most")
        );
        assert!(
            HumanDuration::parse("200h")
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(
            ByteSize::parse("64 parsecs")
                .unwrap_err()
                .contains("64 parsecs")
        );
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }
}
