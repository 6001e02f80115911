//! What the network sinks share: their settings for reaching a server
//! (timeouts, TLS, credentials named by environment variables), one HTTP
//! client on a small runtime of their own (sinks run on plain threads and
//! block), and the retry loop that waits out an absent or overloaded server
//! with back-off and says so in the log.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::SinkError;
use crate::units::HumanDuration;

/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause after a failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Connection settings every network sink takes (each sink's table has
/// these keys itself: serde cannot flatten into a table that refuses
/// unknown keys).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Longest wait for one request, e.g. `"30s"` (the default).
    pub timeout: Option<HumanDuration>,
    /// How long a batch is retried while the server is unreachable or
    /// answers `429`/`5xx` before the pipeline fails (its batch is then
    /// read again at the next start). Default: retry until it answers.
    pub give_up_after: Option<HumanDuration>,
    /// A PEM file of extra certificate authorities to trust for `https`
    /// (besides the system's), resolved against the pipeline file.
    pub ca_file: Option<PathBuf>,
    /// A user name for HTTP basic authentication (with `password_env`).
    pub username: Option<String>,
    /// The environment variable holding the basic-auth password.
    pub password_env: Option<String>,
    /// The environment variable holding an API key, sent as
    /// `Authorization: ApiKey <key>` (Elasticsearch) or
    /// `Authorization: Bearer <key>` (the `http` sink).
    pub api_key_env: Option<String>,
}

impl Connection {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.password_env.is_some() && self.username.is_none() {
            return Err("`password_env` needs a `username`".into());
        }
        if self.api_key_env.is_some() && self.username.is_some() {
            return Err("use either `username`/`password_env` or `api_key_env`, not both".into());
        }
        for name in [&self.password_env, &self.api_key_env]
            .into_iter()
            .flatten()
        {
            if name.is_empty() || name.contains('=') {
                return Err(format!(
                    "`{name}` is not an environment variable's name (the `*_env` keys name a \
                     variable holding the secret, never the secret itself)"
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err("`timeout` must be more than 0ms".into());
        }
        Ok(())
    }
}

/// Credentials read from the environment at start.
#[derive(Debug, Clone)]
pub enum Auth {
    /// None.
    None,
    /// HTTP basic.
    Basic(String, Option<String>),
    /// A key for the `Authorization` header.
    Key(String),
}

/// A running sink's client: the HTTP client, its runtime, and the retry
/// policy.
pub struct Client {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Runs the client's futures on the sink's thread.
    pub runtime: tokio::runtime::Runtime,
    /// The credentials.
    pub auth: Auth,
    give_up_after: Option<Duration>,
    /// Who is asking, for log lines: `elasticsearch http://…`.
    pub who: String,
}

impl Client {
    /// A client with `c`'s settings; `who` names the sink in errors.
    pub fn new(c: &Connection, who: String) -> Result<Client, SinkError> {
        let error = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        let env = |name: &str| {
            std::env::var(name).map_err(|_| {
                error(format!(
                    "environment variable `{name}` (named in the pipeline) is not set"
                ))
            })
        };
        let auth = match (&c.username, &c.password_env, &c.api_key_env) {
            (Some(user), password, _) => {
                Auth::Basic(user.clone(), password.as_deref().map(env).transpose()?)
            }
            (None, _, Some(key)) => Auth::Key(env(key)?),
            _ => Auth::None,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(c.timeout.map_or(Duration::from_secs(30), |t| t.0))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4);
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| error(format!("cannot read `ca_file` {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| error(format!("`ca_file` {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| error(format!("cannot set up the HTTP client: {e}")))?;
        let runtime = runtime().map_err(|e| error(format!("cannot start its runtime: {e}")))?;
        Ok(Client {
            http,
            runtime,
            auth,
            give_up_after: c.give_up_after.map(|d| d.0),
            who,
        })
    }

    /// An error of this sink.
    pub fn error(&self, message: impl Into<String>) -> SinkError {
        SinkError {
            sink: self.who.clone(),
            message: message.into(),
        }
    }

    /// Runs `attempt` until it is done or fails for good (see [`retry`]).
    pub fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(&Client) -> Attempt<T>,
    ) -> Result<T, SinkError> {
        retry(&self.who, self.give_up_after, what, || attempt(self))
    }

    /// Adds the credentials to a request.
    pub fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        key_scheme: &str,
    ) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, password.as_deref()),
            Auth::Key(key) => request.header("authorization", format!("{key_scheme} {key}")),
        }
    }
}

/// Runs `attempt` until it is done or fails for good, pausing with
/// back-off (and logging why, as `who`) while it asks to be retried; gives
/// up after `give_up_after` if set.
pub fn retry<T>(
    who: &str,
    give_up_after: Option<Duration>,
    what: &str,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T, SinkError> {
    let error = |message: String| SinkError {
        sink: who.to_string(),
        message,
    };
    let started = Instant::now();
    let mut pause = FIRST_BACKOFF;
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt() {
            Attempt::Done(value) => {
                if tries > 1 {
                    tracing::info!("{who}: {what} went through after {tries} attempts");
                }
                return Ok(value);
            }
            Attempt::Fail(message) => return Err(error(format!("{what}: {message}"))),
            Attempt::Retry(why) => {
                if give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(error(format!(
                        "{what}: gave up after {tries} attempts in {:.1}s: {why}",
                        started.elapsed().as_secs_f64()
                    )));
                }
                // Every attempt at first, then one line in ten.
                if tries <= 3 || tries % 10 == 0 {
                    tracing::warn!(
                        "{who}: waiting for the server: {what} failed ({why}); attempt {tries}, \
                         next in {}ms",
                        pause.as_millis()
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What one attempt came to.
pub enum Attempt<T> {
    /// Done, with its result.
    Done(T),
    /// Worth trying again (unreachable, `429`, `5xx`), with why.
    Retry(String),
    /// Not worth trying again, with why.
    Fail(String),
}

/// Whether an HTTP status is worth retrying: `408`, `429` and `5xx`.
pub fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// A short description of a failed request, with its causes (reqwest's own
/// `Display` leaves out why a connection failed).
pub fn describe(error: &reqwest::Error) -> String {
    error_chain(error)
}

/// An error and its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The runtime a network sink runs its client on: one thread, the sink's.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The part of a response body worth quoting in an error: at most 300
/// bytes, lossy UTF-8.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let mut text = text.trim().replace('\n', " ");
    if body.len() > 300 {
        text.push('…');
    }
    text
}
