//! The stage's configuration as `init` receives it, with typed look-ups that
//! turn mistakes into [`Error::invalid_config`] messages naming the key and
//! the value.

use std::fmt::Display;
use std::str::FromStr;

use crate::Error;

/// The stage's `config` table from the pipeline file: (key, value) pairs of
/// text, in the order the engine passes them to `init`.
///
/// ```
/// # use sluice_sdk::{Config, Error};
/// # fn main() -> Result<(), Error> {
/// let config: Config = [("threshold", "30"), ("direction", "below")].into_iter().collect();
/// config.allow_only(&["threshold", "direction", "field"])?;
/// let threshold: f64 = config.parse_required("threshold")?;
/// let direction = config.get_or("direction", "above");
/// let field = config.get("field");
/// assert_eq!((threshold, direction, field), (30.0, "below", None));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    /// A configuration made of these pairs (the SDK builds one for `init`;
    /// this is for tests).
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Config { pairs }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, or an invalid-config error saying it is missing.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::invalid_config(format!("missing required config key `{key}`")))
    }

    /// The value of `key` parsed as a `T`, `None` when it is not set.
    ///
    /// A value that does not parse gives an invalid-config error naming the
    /// key and the value, such as "`threshold`: `abc` is not a valid number
    /// (invalid float literal)".
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key)
            .map(|value| parse_value(key, value))
            .transpose()
    }

    /// The value of `key` parsed as a `T`, or `default` when it is not set.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The value of `key` parsed as a `T`; an invalid-config error when it is
    /// missing or does not parse.
    pub fn parse_required<T>(&self, key: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        parse_value(key, self.require(key)?)
    }

    /// Rejects any key not in `allowed`, with an invalid-config error naming
    /// the unknown key and listing the allowed ones. Call it first in
    /// [`Processor::init`](crate::Processor::init) so that a typo does not
    /// silently fall back to a default.
    pub fn allow_only(&self, allowed: &[&str]) -> Result<(), Error> {
        let Some((unknown, _)) = self
            .pairs
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        else {
            return Ok(());
        };
        let accepted = if allowed.is_empty() {
            "this plugin takes no config keys".to_owned()
        } else {
            let list: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
            format!("allowed keys: {}", list.join(", "))
        };
        Err(Error::invalid_config(format!(
            "unknown config key `{unknown}` ({accepted})"
        )))
    }

    /// Every (key, value) pair, in the order `init` received them.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the stage has no configuration at all.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

fn parse_value<T>(key: &str, value: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|err| {
        Error::invalid_config(format!(
            "`{key}`: `{value}` is not a valid {} ({err})",
            describe::<T>()
        ))
    })
}

/// What a user calls a `T`, for error messages.
fn describe<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    match name {
        "f32" | "f64" => "number",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "integer",
        "bool" => "boolean",
        "char" => "character",
        _ => name.rsplit("::").next().unwrap_or(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parse_names_key_and_value() {
        let err = config(&[("threshold", "abc")])
            .parse::<f64>("threshold")
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
        assert_eq!(
            err.message(),
            "`threshold`: `abc` is not a valid number (invalid float literal)"
        );
        assert_eq!(config(&[]).parse::<f64>("threshold"), Ok(None));
        assert_eq!(config(&[("n", "3")]).parse_or("n", 1u32), Ok(3));
    }

    #[test]
    fn require_and_allow_only() {
        let c = config(&[("field", "x"), ("equal", "1")]);
        assert_eq!(c.require("field"), Ok("x"));
        assert_eq!(
            c.require("equals").unwrap_err().message(),
            "missing required config key `equals`"
        );
        assert_eq!(
            c.allow_only(&["field", "equals"]).unwrap_err().message(),
            "unknown config key `equal` (allowed keys: `field`, `equals`)"
        );
        assert!(c.allow_only(&["field", "equal"]).is_ok());
        assert_eq!(
            c.allow_only(&[]).unwrap_err().message(),
            "unknown config key `field` (this plugin takes no config keys)"
        );
    }
}
