//! What the NATS source and sink share: connecting (`async-nats`, the NATS
//! maintainers' Rust client, with TLS on rustls and ring) with credentials
//! from the environment, logging the connection's events, and the rules
//! for subjects. The source is `source::nats`, the sink `sink::nats`.
//!
//! The client connects in the background and reconnects without end: a
//! server absent at start, or restarted, is waited for (and the log says
//! so), never a reason to stop.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};

/// How to reach and log in to a NATS server, shared by source and sink.
#[derive(Debug, Clone)]
pub struct Login {
    /// `nats://host:port`, several separated by commas.
    pub url: String,
    /// User name, with `password_env`.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The environment variable holding a token.
    pub token_env: Option<String>,
    /// A PEM file of certificates to trust for TLS.
    pub ca_file: Option<PathBuf>,
    /// The name the connection shows on the server.
    pub name: String,
}

/// Checks `url`: one or more `nats://` (or `tls://`) addresses with a host.
pub fn check_url(url: &str, kind: &str) -> Result<(), String> {
    for one in url.split(',') {
        let one = one.trim();
        let rest = one
            .strip_prefix("nats://")
            .or_else(|| one.strip_prefix("tls://"))
            .ok_or_else(|| {
                format!(
                    "invalid nats {kind} `url` `{url}`: expected nats://host:port (or tls://), \
                     several separated by commas, like `nats://127.0.0.1:4222`"
                )
            })?;
        let host = rest
            .rsplit_once(':')
            .map_or(rest, |(h, p)| if p.parse::<u16>().is_ok() { h } else { "" });
        if host.is_empty() || rest.contains('@') {
            return Err(format!(
                "invalid nats {kind} `url` `{url}`: `{one}` needs a host and a valid port, and \
                 no credentials (use `username` with `password_env`, or `token_env`)"
            ));
        }
    }
    Ok(())
}

/// Checks the credentials keys of a source or sink.
pub fn check_login(
    kind: &str,
    username: &Option<String>,
    password_env: &Option<String>,
    token_env: &Option<String>,
) -> Result<(), String> {
    match (username, password_env, token_env) {
        (Some(_), None, _) => Err(format!(
            "invalid nats {kind}: `username` needs `password_env` (the variable holding the password)"
        )),
        (None, Some(_), _) => Err(format!(
            "invalid nats {kind}: `password_env` needs a `username`"
        )),
        (Some(_), Some(_), Some(_)) => Err(format!(
            "invalid nats {kind}: use `username` with `password_env`, or `token_env`, not both"
        )),
        _ => Ok(()),
    }
}

impl Login {
    /// Connection options, reading secrets from the environment now (a
    /// missing variable is an error naming it). `who` labels log lines.
    pub fn options(&self, who: &str) -> Result<ConnectOptions, String> {
        let read = |key: &str, var: &str| {
            std::env::var(var)
                .map_err(|_| format!("`{key}`: the environment variable `{var}` is not set"))
        };
        let mut options = match (&self.username, &self.password_env, &self.token_env) {
            (Some(user), Some(var), _) => {
                ConnectOptions::with_user_and_password(user.clone(), read("password_env", var)?)
            }
            (_, _, Some(var)) => ConnectOptions::with_token(read("token_env", var)?),
            _ => ConnectOptions::new(),
        };
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        let who = who.to_string();
        Ok(options
            .name(&self.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * 2u64.saturating_pow(attempts.min(6) as u32))
                    .min(Duration::from_secs(5))
            })
            .event_callback(move |event| {
                let who = who.clone();
                async move { log_event(&who, event) }
            }))
    }

    /// Connects (in the background: this returns at once, and the client
    /// waits for the server).
    pub async fn connect(&self, who: &str) -> Result<async_nats::Client, String> {
        tracing::info!("{who}: connecting to {}", self.url);
        self.options(who)?
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))
    }
}

fn log_event(who: &str, event: Event) {
    match event {
        Event::Connected => tracing::info!("{who}: connected"),
        Event::Disconnected => {
            tracing::warn!("{who}: disconnected from the server; waiting for it to come back")
        }
        Event::SlowConsumer(sid) => tracing::warn!(
            "{who}: subscription {sid} is too slow: the client dropped messages (core NATS \
             keeps nothing for a slow subscriber)"
        ),
        Event::ClientError(e) => tracing::warn!("{who}: {e}"),
        Event::ServerError(e) => tracing::warn!("{who}: server error: {e}"),
        other => tracing::info!("{who}: {other}"),
    }
}

/// Checks a subject a sink publishes to: dot-separated tokens, none empty,
/// no wildcards (`*`, `>`), no white space.
pub fn check_subject(subject: &[u8]) -> Result<&str, String> {
    let subject =
        std::str::from_utf8(subject).map_err(|_| "the subject is not UTF-8".to_string())?;
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("subject `{subject}` holds white space"));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!("subject `{subject}` has an empty token"));
        }
        if token == "*" || token == ">" {
            return Err(format!("subject `{subject}` holds a wildcard"));
        }
    }
    Ok(subject)
}

/// Checks a subject a source subscribes to: like a subject, but `*` may
/// stand for a token and `>` for the last ones.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() || filter.chars().any(char::is_whitespace) {
        return Err(format!("subject `{filter}` is empty or holds white space"));
    }
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("subject `{filter}` has an empty token"));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("subject `{filter}`: `>` must be the last token"));
        }
        if token.len() > 1 && token.contains(['*', '>']) {
            return Err(format!(
                "subject `{filter}`: `*` and `>` must be whole tokens"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_subjects_are_checked() {
        check_url("nats://127.0.0.1:4222", "source").unwrap();
        check_url("nats://a:4222, tls://b:4443", "sink").unwrap();
        for bad in [
            "127.0.0.1:4222",
            "nats://",
            "nats://u:p@h:4222",
            "nats://h:x",
        ] {
            assert!(check_url(bad, "source").is_err(), "{bad}");
        }
        assert_eq!(check_subject(b"a.b").unwrap(), "a.b");
        for bad in [&b""[..], b"a..b", b"a.*", b">", b"a b", b"\xff"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a.*.c", "a.>", ">", "*"] {
            check_filter(good).unwrap();
        }
        for bad in ["", "a.>.b", "a*", "a..b", "a b"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(check_login("source", &Some("u".into()), &None, &None).is_err());
        assert!(check_login("source", &None, &Some("P".into()), &None).is_err());
        check_login("source", &None, &None, &Some("T".into())).unwrap();
    }

    #[test]
    fn secrets_come_from_the_named_variables_only() {
        let mut login = Login {
            url: "nats://h:4222".into(),
            username: Some("u".into()),
            password_env: Some("SLUICE_TEST_NATS_PASSWORD_NEVER_SET".into()),
            token_env: None,
            ca_file: None,
            name: "n".into(),
        };
        let err = login.options("test").unwrap_err();
        assert!(
            err.contains("`SLUICE_TEST_NATS_PASSWORD_NEVER_SET` is not set"),
            "{err}"
        );
        login.username = None;
        login.password_env = None;
        login.token_env = Some("SLUICE_TEST_NATS_TOKEN_NEVER_SET".into());
        let err = login.options("test").unwrap_err();
        assert!(err.contains("`token_env`"), "{err}");
    }
}
