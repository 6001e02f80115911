//! `type = "console"`: records to standard output.

use std::io::Write;

use serde::Deserialize;

use super::{BatchMeta, Format, Sink, SinkError, format};
use crate::batch::Records;

/// Prints each batch's records to standard output.
///
/// ```toml
/// [[sinks]]
/// type = "console"
/// format = "text"   # or "jsonl"
/// limit = 10        # at most 10 records per batch, then "…"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `"text"` (default): the value, or `key<TAB>value`; `"jsonl"`: one
    /// JSON object per record.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Most records printed per batch, like Spark's `print(n)`; the rest is
    /// summarised in one line. Default: all.
    pub limit: Option<usize>,
    /// Print a header line (`-- batch 3 at 09:30:02.182 UTC: 12 records`)
    /// before each batch. Default false.
    #[serde(default)]
    pub header: bool,
}

fn default_format() -> Format {
    Format::Text
}

/// The running console sink.
pub struct ConsoleSink {
    format: Format,
    limit: Option<usize>,
    header: bool,
    buffer: Vec<u8>,
}

impl ConsoleSink {
    /// From its config.
    pub fn new(config: &ConsoleConfig) -> Self {
        ConsoleSink {
            format: config.format,
            limit: config.limit,
            header: config.header,
            buffer: Vec::new(),
        }
    }
}

impl Sink for ConsoleSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        self.buffer.clear();
        if self.header {
            self.buffer.extend_from_slice(
                format!(
                    "-- batch {} at {} UTC: {} records\n",
                    batch.id,
                    crate::telemetry::clock_time(batch.time_ms),
                    records.len()
                )
                .as_bytes(),
            );
        }
        let shown = self.limit.unwrap_or(usize::MAX).min(records.len());
        for record in records.iter().take(shown) {
            format::write(&mut self.buffer, self.format, record);
        }
        if shown < records.len() {
            self.buffer
                .extend_from_slice(format!("… {} more\n", records.len() - shown).as_bytes());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buffer)
            .and_then(|()| out.flush())
            .map_err(|e| SinkError {
                sink: "console".into(),
                message: format!("cannot write to standard output: {e}"),
            })
    }
}
