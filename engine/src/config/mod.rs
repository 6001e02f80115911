//! Pipeline files: reading a TOML file into a [`PipelineConfig`], checking
//! it, and reporting every problem with the file, line and column it comes
//! from. This module knows the shape of the file; what each source, stage
//! and sink does with its settings belongs to those modules, which own their
//! `…Config` types.

mod units;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use units::{ByteSize, HumanDuration};

use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::stage::StageConfig;

/// One pipeline: sources → stages → sinks, as written in its TOML file.
///
/// ```toml
/// name = "wordcount"
/// batch_interval = "200ms"
///
/// [[sources]]
/// type = "directory"
/// path = "input"
///
/// [[stages]]
/// name = "split"
/// plugin = "plugins/word_split.wasm"
///
/// [[sinks]]
/// type = "console"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline's name, used in logs, metrics, output and dead-letter
    /// file names. Letters, digits, `-`, `_` and `.` only.
    pub name: Spanned<String>,
    /// How often a micro-batch is cut: every record received in one interval
    /// goes into one batch. `ms`, `s`, `m` or `h`, e.g. `"200ms"`.
    pub batch_interval: Spanned<HumanDuration>,
    /// Most records in one batch. An interval that brings more is cut into
    /// several batches (with the same batch time), each sent on as soon as
    /// it is full. Default 100,000.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: Spanned<usize>,
    /// Most bytes of keys and values in one batch, e.g. `"16MiB"` (the
    /// default); cut like `max_batch_records`. Keeps each stage's input, and
    /// so its memory, bounded.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: Spanned<ByteSize>,
    /// Capacity of the ingest queue between the sources and the batcher, in
    /// chunks of up to 1,024 records or 64 KiB each. A full queue makes the
    /// sources wait: this bounds memory. Default 64.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: Spanned<usize>,
    /// The folder of the pipeline's state file (`<name>.redb`: every
    /// stage's state and the checkpoint), relative to this file. Default
    /// `state`. The file is created when a stage's plugin uses the `state`
    /// interface, or when this key is set.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// `"at-least-once"` (the default): after a crash, sinks may see the
    /// output of replayed batches again. `"exactly-once"`: every sink
    /// publishes a batch only after its checkpoint, so each batch's output
    /// appears once, crash or not. It needs sources that replay
    /// (`directory`, `kafka`, `socket`/`stdin` with `wal = true`) and sinks
    /// that can hold a batch back (`directory`, `kafka` with transactions,
    /// `null`), and keeps a state file for the checkpoint.
    #[serde(default = "default_delivery")]
    pub delivery: Spanned<Delivery>,
    /// Where records come from; at least one.
    #[serde(default)]
    pub sources: Vec<Spanned<SourceConfig>>,
    /// The processing stages, applied in order; none means records go to
    /// the sinks unchanged.
    #[serde(default)]
    pub stages: Vec<Spanned<StageConfig>>,
    /// Where each batch's output goes; at least one.
    #[serde(default)]
    pub sinks: Vec<Spanned<SinkConfig>>,
}

/// What a pipeline promises about its output after a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Nothing lost; replayed batches may be written again.
    #[default]
    AtLeastOnce,
    /// Nothing lost and nothing written twice.
    ExactlyOnce,
}

fn default_delivery() -> Spanned<Delivery> {
    Spanned::new(0..0, Delivery::AtLeastOnce)
}

fn default_max_batch_records() -> Spanned<usize> {
    Spanned::new(0..0, 100_000)
}

fn default_max_batch_bytes() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(16 << 20))
}

fn default_queue_capacity() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}

/// A pipeline file as read from disk: its path, its text (for locating
/// errors) and what it declares.
#[derive(Debug)]
pub struct PipelineFile {
    /// The file as given on the command line.
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
    /// What the file declares.
    pub config: PipelineConfig,
}

/// A problem with a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid pipeline; the message names the key and value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key and the value.
        message: String,
    },
}

impl PipelineFile {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text)
    }

    /// Parses and checks pipeline text that came from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let config: PipelineConfig = match toml::from_str(&text) {
            Ok(config) => config,
            Err(err) => {
                let span = err.span().unwrap_or(0..0);
                let message = err.message().trim_end().to_string();
                return Err(locate(path, &text, span, message));
            }
        };
        let file = PipelineFile {
            path: path.to_path_buf(),
            text,
            config,
        };
        file.validate()?;
        Ok(file)
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Resolves a path written in the file against the file's folder.
    pub fn resolve(&self, written: &Path) -> PathBuf {
        if written.is_absolute() {
            written.to_path_buf()
        } else {
            self.base_dir().join(written)
        }
    }

    /// The 1-based line and column where `span` starts in this file.
    pub fn line_column(&self, span: std::ops::Range<usize>) -> (usize, usize) {
        line_column(&self.text, span)
    }

    /// An error located at `span` of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        locate(&self.path, &self.text, span, message.into())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        check_name("`name`", c.name.get_ref()).map_err(|m| self.error_at(c.name.span(), m))?;
        let interval = c.batch_interval.get_ref().0;
        if interval.is_zero() {
            return Err(self.error_at(
                c.batch_interval.span(),
                "invalid `batch_interval` `0ms`: must be at least 1ms",
            ));
        }
        if *c.max_batch_records.get_ref() == 0 {
            return Err(self.error_at(
                c.max_batch_records.span(),
                "invalid `max_batch_records` `0`: must be at least 1",
            ));
        }
        let bytes = c.max_batch_bytes.get_ref().0;
        if !(64 << 10..=1 << 30).contains(&bytes) {
            return Err(self.error_at(
                c.max_batch_bytes.span(),
                format!(
                    "invalid `max_batch_bytes` `{}`: must be between 64KiB and 1GiB",
                    c.max_batch_bytes.get_ref()
                ),
            ));
        }
        if *c.queue_capacity.get_ref() == 0 {
            return Err(self.error_at(
                c.queue_capacity.span(),
                "invalid `queue_capacity` `0`: must be at least 1",
            ));
        }
        if c.sources.is_empty() {
            return Err(self.error_at(
                0..0,
                "no `[[sources]]`: a pipeline needs at least one source",
            ));
        }
        if c.sinks.is_empty() {
            return Err(self.error_at(0..0, "no `[[sinks]]`: a pipeline needs at least one sink"));
        }
        for source in &c.sources {
            source
                .get_ref()
                .validate()
                .map_err(|message| self.error_at(source.span(), message))?;
        }
        let mut seen = std::collections::HashSet::new();
        for stage in &c.stages {
            let s = stage.get_ref();
            s.validate().map_err(|(span, message)| {
                // Defaults carry no span: point at the stage then.
                let span = if span.is_empty() { stage.span() } else { span };
                self.error_at(span, message)
            })?;
            if let Some(window) = &s.window {
                window
                    .get_ref()
                    .spec(s.name.get_ref(), interval)
                    .map_err(|(span, message)| {
                        let span = if span.is_empty() { window.span() } else { span };
                        self.error_at(span, message)
                    })?;
            }
            if !seen.insert(s.name.get_ref().as_str()) {
                return Err(self.error_at(
                    s.name.span(),
                    format!(
                        "duplicate stage name `{}`: stage names must be unique",
                        s.name.get_ref()
                    ),
                ));
            }
        }
        for sink in &c.sinks {
            sink.get_ref()
                .validate()
                .map_err(|message| self.error_at(sink.span(), message))?;
        }
        if *c.delivery.get_ref() == Delivery::ExactlyOnce {
            for source in &c.sources {
                if let Some(why) = source.get_ref().cannot_replay() {
                    return Err(self.error_at(
                        source.span(),
                        format!("`delivery = \"exactly-once\"` needs sources that replay after a crash: {why}"),
                    ));
                }
            }
            for sink in &c.sinks {
                if let Some(why) = sink.get_ref().cannot_hold_back() {
                    return Err(self.error_at(
                        sink.span(),
                        format!("`delivery = \"exactly-once\"` needs sinks that publish a batch only after its checkpoint: {why}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a name used in logs and file names: letters, digits, `-`, `_`
/// and `.`; `what` names the key in the message.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(format!(
            "invalid {what} `{name}`: use letters, digits, `-`, `_` and `.` only"
        ));
    }
    Ok(())
}

/// The 1-based line and column where `span` starts in `text`.
fn line_column(text: &str, span: std::ops::Range<usize>) -> (usize, usize) {
    let at = span.start.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// An error at `span` of `text`, which came from `path`.
fn locate(path: &Path, text: &str, span: std::ops::Range<usize>, message: String) -> ConfigError {
    let (line, column) = line_column(text, span);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PipelineFile, ConfigError> {
        PipelineFile::parse(Path::new("p.toml"), text.to_string())
    }

    const MINIMAL: &str = "name = \"p\"\nbatch_interval = \"200ms\"\n[[sources]]\ntype = \"stdin\"\n[[sinks]]\ntype = \"console\"\n";

    #[test]
    fn minimal_pipeline_parses() {
        let file = parse(MINIMAL).unwrap();
        assert_eq!(file.config.name.get_ref(), "p");
        assert_eq!(file.config.batch_interval.get_ref().0.as_millis(), 200);
        assert_eq!(*file.config.max_batch_records.get_ref(), 100_000);
        assert_eq!(file.config.max_batch_bytes.get_ref().0, 16 << 20);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse(&format!("{MINIMAL}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        // `bogus` sits after the [[sinks]] table, so TOML reads it as a sink key.
        assert!(err.starts_with("p.toml:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_interval_is_located() {
        let err = parse("name = \"p\"\nbatch_interval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:2:18:"), "{err}");
        assert!(err.contains("`soon`"), "{err}");
    }
}
