//! `type = "directory"`: one file per batch, renamed into place complete.

use std::path::PathBuf;

use serde::Deserialize;

use super::{BatchMeta, Format, Sink, SinkError, format, write_atomically};
use crate::batch::Records;
use crate::config::PipelineFile;

/// Writes each non-empty batch to its own file,
/// `<path>/<pipeline>-<batch time ms>-<batch id>.<format>`. Files appear
/// complete: each is written under a dot-prefixed temporary name, synced,
/// then renamed.
///
/// ```toml
/// [[sinks]]
/// type = "directory"
/// path = "output"
/// format = "jsonl"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The folder, relative to the pipeline file; created if missing.
    pub path: PathBuf,
    /// `"jsonl"` (default) or `"text"`.
    #[serde(default = "default_format")]
    pub format: Format,
}

fn default_format() -> Format {
    Format::Jsonl
}

/// The running directory sink.
pub struct DirectorySink {
    dir: PathBuf,
    format: Format,
    buffer: Vec<u8>,
}

impl DirectorySink {
    /// Creates the folder if needed.
    pub fn new(config: &DirectoryConfig, file: &PipelineFile) -> Result<Self, SinkError> {
        let dir = file.resolve(&config.path);
        std::fs::create_dir_all(&dir).map_err(|e| SinkError {
            sink: format!("directory {}", dir.display()),
            message: format!("cannot create the folder: {e}"),
        })?;
        Ok(DirectorySink {
            dir,
            format: config.format,
            buffer: Vec::new(),
        })
    }
}

impl Sink for DirectorySink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        self.buffer.clear();
        for record in records.iter() {
            format::write(&mut self.buffer, self.format, record);
        }
        let extension = match self.format {
            Format::Jsonl => "jsonl",
            Format::Text => "txt",
        };
        let name = format!(
            "{}-{}-{:06}.{extension}",
            batch.pipeline, batch.time_ms, batch.id
        );
        write_atomically(&self.dir, &name, &self.buffer)
            .map(|_| ())
            .map_err(|e| SinkError {
                sink: format!("directory {}", self.dir.display()),
                message: format!("cannot write {name}: {e}"),
            })
    }
}
