//! What the MQTT source and sink share: the broker's address from a
//! pipeline file (`mqtt://host:port`, or `mqtts://` for TLS on the engine's
//! rustls), credentials from the environment, client options, and the
//! rules for topic names and filters (MQTT 3.1.1, section 4.7). The
//! source is `source::mqtt`, the sink `sink::mqtt`.
//!
//! The client is `rumqttc` (MQTT 3.1.1): asynchronous on tokio, with
//! manual acknowledgements (the source acknowledges a QoS 1 message only
//! after the checkpoint of its batch), and TLS through rustls without
//! bringing a crypto library of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// The largest MQTT packet (the protocol's limit, 256 MiB).
pub const MAX_PACKET: usize = 268_435_455;

/// Where a broker is, from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// Port: from the URL, else 1883 (8883 with TLS).
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

impl Broker {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`; `kind` names
    /// the source or sink in the message.
    pub fn parse(url: &str, kind: &str) -> Result<Broker, String> {
        let bad = |why: &str| {
            format!(
                "invalid mqtt {kind} `url` `{url}`: {why} (expected mqtt://host:port or \
                 mqtts://host:port, like `mqtt://127.0.0.1:1883`)"
            )
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(bad("unknown scheme"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') {
            return Err(bad("a path or user name does not belong in it"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(']') || host.ends_with(']') => {
                let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
                (host, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Broker {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// How to reach and log in to the broker, shared by source and sink.
#[derive(Debug, Clone)]
pub struct Login {
    /// The broker.
    pub broker: Broker,
    /// The client id.
    pub client_id: String,
    /// User name, if any.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// A PEM file of certificates to trust for TLS, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Whether the broker should forget the session on disconnect.
    pub clean_session: bool,
}

impl Login {
    /// Client options for `rumqttc`, reading the password from the
    /// environment now (a missing variable is an error naming it).
    pub fn options(&self) -> Result<MqttOptions, String> {
        let mut options = MqttOptions::new(&self.client_id, &self.broker.host, self.broker.port);
        options
            .set_keep_alive(self.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(self.clean_session)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        match (&self.username, &self.password_env) {
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    format!("`password_env`: the environment variable `{var}` is not set")
                })?;
                options.set_credentials(user, password);
            }
            (Some(user), None) => {
                options.set_credentials(user, "");
            }
            (None, Some(_)) => return Err("`password_env` needs a `username`".into()),
            (None, None) => {}
        }
        if self.broker.tls {
            let config = crate::control::client::tls_config(self.ca_file.as_deref())?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::clone(&config),
            )));
        }
        Ok(options)
    }
}

/// Checks a topic filter a source subscribes to: not empty, `+` only as a
/// whole level, `#` only as the whole last level.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("an empty topic filter".into());
    }
    if filter.contains('\0') {
        return Err(format!("topic filter `{filter}` holds a NUL character"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "topic filter `{filter}`: `#` must be a whole level, and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "topic filter `{filter}`: `+` must be a whole level"
            ));
        }
    }
    Ok(())
}

/// Checks a topic name a sink publishes to: not empty, no wildcards, no
/// NUL, UTF-8, at most 65,535 bytes.
pub fn check_topic(topic: &[u8]) -> Result<&str, String> {
    let topic = std::str::from_utf8(topic).map_err(|_| "the topic is not UTF-8".to_string())?;
    if topic.is_empty() {
        return Err("the topic is empty".into());
    }
    if topic.len() > 65_535 {
        return Err(format!(
            "the topic is {} bytes long (at most 65535)",
            topic.len()
        ));
    }
    if topic.contains(['+', '#']) {
        return Err(format!("topic `{topic}` holds a wildcard (`+` or `#`)"));
    }
    if topic.contains('\0') {
        return Err(format!("topic `{topic}` holds a NUL character"));
    }
    Ok(topic)
}

/// The default client id of a pipeline's `index`-th source or sink.
pub fn default_client_id(pipeline: &str, role: &str, index: usize) -> String {
    format!("sluice-{pipeline}-{role}{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_port_and_tls() {
        let b = Broker::parse("mqtt://127.0.0.1:1884", "source").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1884, false));
        let b = Broker::parse("mqtts://broker.example", "sink").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 8883, true)
        );
        let b = Broker::parse("mqtt://[::1]:1883/", "sink").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1883));
        for bad in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:99999",
            "mqtt://u@h",
            "mqtt://h/t",
        ] {
            let err = Broker::parse(bad, "source").unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn filters_and_topics_follow_the_protocol() {
        for good in ["a", "a/b", "+/b", "a/+/c", "#", "a/#", "/"] {
            check_filter(good).unwrap();
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(check_topic(b"a/b").unwrap(), "a/b");
        for bad in [&b""[..], b"a/+", b"#", b"\xff", b"a\0"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_password_comes_from_the_named_variable_only() {
        let login = Login {
            broker: Broker::parse("mqtt://h:1", "source").unwrap(),
            client_id: "c".into(),
            username: Some("u".into()),
            password_env: Some("SLUICE_TEST_MQTT_PASSWORD_NEVER_SET".into()),
            ca_file: None,
            keep_alive: Duration::from_secs(5),
            clean_session: false,
        };
        let err = login.options().unwrap_err();
        assert!(
            err.contains("`SLUICE_TEST_MQTT_PASSWORD_NEVER_SET` is not set"),
            "{err}"
        );
    }
}
