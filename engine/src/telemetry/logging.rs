//! Where log lines go and how they look: text lines for people (the
//! default), or one JSON object per line (`--log-format json`) for a log
//! shipper, with the events' fields (`tenant`, `pipeline`, `stage`,
//! `batch`, …) as top-level keys beside `timestamp`, `level` and `message`.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-02T05:40:00.123Z  INFO pipeline=p: batch 3: …`.
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","message":"batch 3: …","pipeline":"p"}`.
    Json,
}

/// Sends the process's log to standard error, filtered by `filter` (else
/// `RUST_LOG`, else `info`), in `format`.
pub fn init(filter: Option<&str>, format: LogFormat) {
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
