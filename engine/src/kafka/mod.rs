//! What the Kafka source and sink share: client settings from a pipeline
//! file, and a client context that sends librdkafka's errors and log lines
//! to the engine log (each distinct line at most once per
//! [`REPEAT_AFTER`], so a broker that is down for an hour does not flood
//! it). The source is `source::kafka`, the sink `sink::kafka`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use serde::Deserialize;

/// The same librdkafka line is logged again only after this long.
pub const REPEAT_AFTER: Duration = Duration::from_secs(10);

/// A librdkafka property value in `options = { ... }`: TOML strings,
/// integers and booleans are all passed on as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// `"1"`
    Text(String),
    /// `1`
    Integer(i64),
    /// `true`
    Bool(bool),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Text(s) => f.write_str(s),
            OptionValue::Integer(n) => write!(f, "{n}"),
            OptionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `options = { ... }`: librdkafka properties, passed through.
pub type Options = BTreeMap<String, OptionValue>;

/// Checks `brokers` and that `options` does not set what a dedicated key or
/// the engine itself owns (`owned`: property, and why).
pub fn validate(
    kind: &str,
    brokers: &str,
    options: &Options,
    owned: &[(&str, &str)],
) -> Result<(), String> {
    if brokers.trim().is_empty() {
        return Err(format!(
            "invalid kafka {kind}: `brokers` is empty (expected host:port, like `127.0.0.1:9092`)"
        ));
    }
    for (property, why) in owned {
        if options.contains_key(*property) {
            return Err(format!(
                "invalid kafka {kind}: `options` sets `{property}`, which {why}"
            ));
        }
    }
    // librdkafka checks names and values as they are set; nothing connects.
    client_config(brokers, &[], options)
        .create_native_config()
        .map(drop)
        .map_err(|e| format!("invalid kafka {kind} `options`: {}", plain(&e)))
}

/// A librdkafka configuration error without rdkafka's prefix and trailer.
fn plain(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, description, key, value) => {
            format!("`{key}` = `{value}`: {description}")
        }
        other => other.to_string(),
    }
}

/// librdkafka settings: `bootstrap.servers`, then the engine's defaults,
/// then the user's `options` over them.
pub fn client_config(brokers: &str, defaults: &[(&str, &str)], options: &Options) -> ClientConfig {
    let mut config = ClientConfig::new();
    // Let every line through to the context, which filters by level (and
    // librdkafka only writes debug lines for the `debug` contexts asked for).
    config.set_log_level(RDKafkaLogLevel::Debug);
    config.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in options {
        config.set(key, value.to_string());
    }
    config
}

/// Sends librdkafka's errors and warnings to the engine log, naming the
/// connector, and holds back repeats.
pub struct LogContext {
    /// Who is talking, e.g. `kafka source lines (group wordcount)`.
    pub who: String,
    seen: Mutex<HashMap<String, Instant>>,
}

impl LogContext {
    /// A context for the connector described by `who`.
    pub fn new(who: String) -> Self {
        LogContext {
            who,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `line` was not logged within [`REPEAT_AFTER`].
    fn fresh(&self, line: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() > 1000 {
            seen.retain(|_, at| now.duration_since(*at) < REPEAT_AFTER);
        }
        match seen.get(line) {
            Some(at) if now.duration_since(*at) < REPEAT_AFTER => false,
            _ => {
                seen.insert(line.to_string(), now);
                true
            }
        }
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let line = format!("{facility}: {message}");
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.fresh(&line) {
                    tracing::warn!("{}: {line}", self.who);
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!("{}: {line}", self.who)
            }
            RDKafkaLogLevel::Debug => tracing::trace!("{}: {line}", self.who),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let line = format!("{error}: {reason}");
        if self.fresh(&line) {
            tracing::warn!("{}: {line} (retrying)", self.who);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_defaults_and_render_as_text() {
        let mut options = Options::new();
        options.insert("linger.ms".into(), OptionValue::Integer(7));
        options.insert("check.crcs".into(), OptionValue::Bool(true));
        let config = client_config("b:1", &[("linger.ms", "5")], &options);
        assert_eq!(config.get("linger.ms"), Some("7"));
        assert_eq!(config.get("check.crcs"), Some("true"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:1"));
    }

    #[test]
    fn owned_properties_are_refused_with_the_reason() {
        let mut options = Options::new();
        options.insert("group.id".into(), OptionValue::Text("x".into()));
        let err = validate(
            "source",
            "b:1",
            &options,
            &[("group.id", "is set by `group`")],
        )
        .unwrap_err();
        assert!(err.contains("`group.id`, which is set by `group`"), "{err}");
        assert!(
            validate("sink", " ", &Options::new(), &[])
                .unwrap_err()
                .contains("`brokers` is empty")
        );
    }

    #[test]
    fn unknown_properties_and_bad_values_are_refused() {
        let mut options = Options::new();
        options.insert("linger.ms".into(), OptionValue::Text("soon".into()));
        let err = validate("sink", "b:1", &options, &[]).unwrap_err();
        assert!(err.contains("linger.ms") && err.contains("soon"), "{err}");
        let mut options = Options::new();
        options.insert("no.such.property".into(), OptionValue::Integer(1));
        let err = validate("source", "b:1", &options, &[]).unwrap_err();
        assert!(err.contains("no.such.property"), "{err}");
    }

    #[test]
    fn repeats_are_held_back() {
        let context = LogContext::new("t".into());
        assert!(context.fresh("a"));
        assert!(!context.fresh("a"));
        assert!(context.fresh("b"));
    }
}
