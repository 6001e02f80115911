//! Pipeline files: reading a TOML file into a [`PipelineConfig`], checking
//! it, and reporting every problem with the file, line and column it comes
//! from. This module knows the shape of the file; what each source, stage
//! and sink does with its settings belongs to those modules, which own their
//! `…Config` types.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::units::{ByteSize, HumanDuration};

use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::stage::StageConfig;

/// Most stages in one pipeline. Each stage holds up to three instances at
/// once (the live one, a fallback on probation, one prepared), and the
/// engine sizes its instance pool from the stages it runs.
pub const MAX_STAGES: usize = 100;

/// Longest pipeline or stage name: names become parts of file names
/// (`<name>.redb`, `.staged-<20 digits>-<name>-<time>-<id>.jsonl.tmp`),
/// which may be 255 bytes at most.
pub const MAX_NAME: usize = 100;

/// Most chunks the ingest queue may hold (each up to 64 KiB: 1 GiB).
pub const MAX_QUEUE_CAPACITY: usize = 16_384;

/// Most records one batch may hold.
pub const MAX_BATCH_RECORDS: usize = 10_000_000;

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
    /// file names: letters, digits, `-`, `_` and `.`, starting with a
    /// letter or digit, at most 100 characters.
    pub name: Spanned<String>,
    /// How often a micro-batch is cut: every record received in one interval
    /// goes into one batch. `ms`, `s`, `m` or `h`, e.g. `"200ms"`.
    pub batch_interval: Spanned<HumanDuration>,
    /// Most records in one batch. An interval that brings more is cut into
    /// several batches (with the same batch time), each sent on as soon as
    /// it is full. Default 100,000; at most 10,000,000.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: Spanned<usize>,
    /// Most bytes of keys and values in one batch, e.g. `"16MiB"` (the
    /// default); cut like `max_batch_records`. Keeps each stage's input, and
    /// so its memory, bounded.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: Spanned<ByteSize>,
    /// Capacity of the ingest queue between the sources and the batcher, in
    /// chunks of up to 1,024 records or 64 KiB each. A full queue makes the
    /// sources wait: this bounds memory. Default 64; at most 16,384.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: Spanned<usize>,
    /// The folder of the pipeline's state file (`<name>.redb`: every
    /// stage's state and the checkpoint), relative to this file. Default
    /// `state`. The file is created when a stage's plugin uses the `state`
    /// interface or is windowed, a source keeps its place there (`directory`,
    /// `wal = true`), the delivery is exactly-once, or this key is set.
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
    /// How a pipeline reading Kafka runs. `"one"` (the default): one chain
    /// of stages takes every partition this process is assigned, so a
    /// stage's state (a running count, a window) covers all of them.
    /// `"per-partition"`: a task per assigned partition, each with its own
    /// stage instances, batches, delivery and state file
    /// (`<name>.p<N>.redb`), so one process uses every core and several
    /// processes in the consumer group share the partitions. Needs one
    /// `kafka` source reading one topic. A stage's state is per task and
    /// moves with its partition through a changelog topic; a stage with
    /// `partition_by` starts tasks over a repartition topic, so keyed state
    /// sees whole keys. With exactly-once delivery (one `kafka` sink), each
    /// task's batches are Kafka transactions of output, changelog and
    /// input offsets (see the README, "Exactly-once across processes").
    #[serde(default = "default_tasks")]
    pub tasks: Spanned<Tasks>,
    /// With `tasks = "per-partition"`: `1` keeps a warm copy of every task
    /// this process does not run (its state followed from the changelog
    /// into the local state file), so that taking over a partition restores
    /// only the changelog's last moments; `0` (the default) keeps none. With
    /// two processes each task has one standby, with N processes N − 1.
    #[serde(default = "default_standby_replicas")]
    pub standby_replicas: Spanned<u32>,
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

/// Consumer properties `tasks = "per-partition"` sets itself, and why.
#[cfg(feature = "kafka")]
const PER_PARTITION_OWNED: &[(&str, &str)] = &[(
    "partition.assignment.strategy",
    "is cooperative-sticky with `tasks = \"per-partition\"`, so a rebalance stops only the \
         tasks that move",
)];

/// How a pipeline reading Kafka is split into tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tasks {
    /// One chain of stages for every partition the process is assigned.
    #[default]
    One,
    /// A task per assigned partition, with state that moves with it.
    PerPartition,
}

fn default_tasks() -> Spanned<Tasks> {
    Spanned::new(0..0, Tasks::One)
}

fn default_standby_replicas() -> Spanned<u32> {
    Spanned::new(0..0, 0)
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
        let records = *c.max_batch_records.get_ref();
        if !(1..=MAX_BATCH_RECORDS).contains(&records) {
            return Err(self.error_at(
                c.max_batch_records.span(),
                format!("invalid `max_batch_records` `{records}`: must be between 1 and {MAX_BATCH_RECORDS}"),
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
        let capacity = *c.queue_capacity.get_ref();
        if !(1..=MAX_QUEUE_CAPACITY).contains(&capacity) {
            return Err(self.error_at(
                c.queue_capacity.span(),
                format!(
                    "invalid `queue_capacity` `{capacity}`: must be between 1 and {MAX_QUEUE_CAPACITY} \
                     (chunks of up to 64KiB each)"
                ),
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
        if c.stages.len() > MAX_STAGES {
            let span = c.stages[MAX_STAGES].span();
            return Err(self.error_at(
                span,
                format!(
                    "{} stages: a pipeline may have at most {MAX_STAGES}",
                    c.stages.len()
                ),
            ));
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
        self.validate_tasks()
    }

    /// What `tasks = "per-partition"` and `partition_by` need: one Kafka
    /// source of one topic (tasks are its partitions); exactly-once delivery
    /// with tasks, a single Kafka sink.
    fn validate_tasks(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        let per_partition = *c.tasks.get_ref() == Tasks::PerPartition;
        let standby = *c.standby_replicas.get_ref();
        if standby > 1 {
            return Err(self.error_at(
                c.standby_replicas.span(),
                format!(
                    "`standby_replicas = {standby}`: only 0 or 1 (with 1, each process keeps a warm \
                     copy of every task it does not run, so with N processes a task has N − 1)"
                ),
            ));
        }
        if !per_partition {
            if standby > 0 {
                return Err(self.error_at(
                    c.standby_replicas.span(),
                    "`standby_replicas` needs `tasks = \"per-partition\"` (and a Kafka source): \
                     a standby is a warm copy of a task's state, followed from its changelog topic"
                        .to_string(),
                ));
            }
            for stage in &c.stages {
                if let Some(by) = &stage.get_ref().partition_by {
                    return Err(self.error_at(
                        by.span(),
                        format!(
                            "`partition_by` in stage `{}` needs `tasks = \"per-partition\"` (and a \
                             Kafka source): records are sent to the tasks that own their keys \
                             through a Kafka topic",
                            stage.get_ref().name.get_ref()
                        ),
                    ));
                }
            }
            return Ok(());
        }
        let (tasks_line, _) = self.line_column(c.tasks.span());
        if *c.delivery.get_ref() == Delivery::ExactlyOnce {
            let why = "a task's Kafka transaction carries its output, its state's changelog and \
                       its input offsets together, and only a Kafka sink can take part";
            match c.sinks.as_slice() {
                [sink] if matches!(sink.get_ref(), SinkConfig::Kafka(_)) => {}
                [_] => {
                    return Err(self.error_at(
                        c.sinks[0].span(),
                        format!(
                            "`delivery = \"exactly-once\"` with `tasks = \"per-partition\"` \
                             (line {tasks_line}) needs a `kafka` sink: {why}"
                        ),
                    ));
                }
                _ => {
                    return Err(self.error_at(
                        c.delivery.span(),
                        format!(
                            "`delivery = \"exactly-once\"` with `tasks = \"per-partition\"` \
                             (line {tasks_line}) needs exactly one sink, of type `kafka`: {why}"
                        ),
                    ));
                }
            }
        }
        for (i, source) in c.sources.iter().enumerate() {
            let SourceConfig::Kafka(kafka) = source.get_ref() else {
                return Err(self.error_at(
                    source.span(),
                    format!(
                        "`tasks = \"per-partition\"` (line {tasks_line}) needs a Kafka source: this \
                         source has no partitions to split into tasks (a pipeline reading other \
                         sources runs in one process, with `tasks = \"one\"`)"
                    ),
                ));
            };
            if i > 0 {
                return Err(self.error_at(
                    source.span(),
                    format!(
                        "`tasks = \"per-partition\"` (line {tasks_line}) reads one Kafka source, \
                         whose partitions are the tasks: this is a second source"
                    ),
                ));
            }
            // Without the `kafka` feature its settings are not parsed, and
            // the source itself was refused already.
            #[cfg(not(feature = "kafka"))]
            let _ = kafka;
            #[cfg(feature = "kafka")]
            for (property, why) in PER_PARTITION_OWNED {
                if kafka.options.contains_key(*property) {
                    return Err(self.error_at(
                        source.span(),
                        format!("invalid kafka source: `options` sets `{property}`, which {why}"),
                    ));
                }
            }
            #[cfg(feature = "kafka")]
            if *c.delivery.get_ref() == Delivery::ExactlyOnce {
                if let Some(SinkConfig::Kafka(sink)) = c.sinks.first().map(|s| s.get_ref()) {
                    if sink.brokers != kafka.brokers {
                        return Err(self.error_at(
                            c.sinks[0].span(),
                            format!(
                                "`delivery = \"exactly-once\"` with `tasks = \"per-partition\"` \
                                 (line {tasks_line}) writes in the transactions of the source's \
                                 cluster: the sink's `brokers` (\"{}\") must be the source's \
                                 (\"{}\"), and the source's `options` (security settings \
                                 included) are the ones used",
                                sink.brokers, kafka.brokers
                            ),
                        ));
                    }
                }
                if kafka
                    .options
                    .get("isolation.level")
                    .is_some_and(|v| v.to_string() != "read_committed")
                {
                    return Err(self.error_at(
                        source.span(),
                        format!(
                            "invalid kafka source: `options` sets `isolation.level`, which must \
                             stay `read_committed` under `delivery = \"exactly-once\"` with \
                             `tasks = \"per-partition\"` (line {tasks_line}): tasks read their \
                             repartition topics and changelogs, where aborted transactions' \
                             records must not count"
                        ),
                    ));
                }
            }
            #[cfg(feature = "kafka")]
            if kafka.topics.len() != 1 || kafka.topics[0].starts_with('^') {
                return Err(self.error_at(
                    source.span(),
                    format!(
                        "`tasks = \"per-partition\"` (line {tasks_line}) reads one topic named \
                         outright (a task is one of its partitions): `topics` is {:?}",
                        kafka.topics
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a name used in logs and file names: letters, digits, `-`, `_`
/// and `.`, starting with a letter or digit (so never `.` or `..`), at most
/// [`MAX_NAME`] characters; `what` names the key in the message.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!(
            "invalid {what} `{}…`: at most {MAX_NAME} characters (it becomes part of file names)",
            &name[..name.char_indices().nth(20).map_or(name.len(), |(i, _)| i)]
        ));
    }
    if !name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(format!(
            "invalid {what} `{name}`: use letters, digits, `-`, `_` and `.` only, starting with a letter or digit"
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

    /// Property tests: no text, however malformed, makes parsing or resolving
    /// panic; it is a pipeline or an error naming a place in the file.
    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::config::FolderBase;

        const KEYS: &[&str] = &[
            "name",
            "batch_interval",
            "max_batch_records",
            "max_batch_bytes",
            "queue_capacity",
            "state_dir",
            "delivery",
            "type",
            "path",
            "plugin",
            "config",
            "window",
            "length",
            "slide",
            "time_limit",
            "memory_limit",
            "state_limit",
            "retries",
            "recycle_after",
            "on_error",
            "grants",
            "dead_letter",
            "rate",
            "count",
            "words_per_line",
            "settle",
            "address",
            "brokers",
            "topics",
            "group",
            "topic",
            "limit",
            "format",
            "wal",
            "follow_links",
            "existing",
            "watch",
            "options",
        ];
        const TABLES: &[&str] = &[
            "[[sources]]",
            "[[stages]]",
            "[[sinks]]",
            "[window]",
            "[config]",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "\"[0-9]{0,22}(ms|s|m|h|d|KiB|MiB|GiB|KB|B|x)?\"",
                "\"[a-z./_ -]{0,10}\"",
                Just("\"..\"".to_string()),
                Just("\"directory\"".to_string()),
                Just("\"stdin\"".to_string()),
                Just("\"generator\"".to_string()),
                Just("\"exactly-once\"".to_string()),
                Just("true".to_string()),
                Just("1e400".to_string()),
                Just("-0.0".to_string()),
                Just("[]".to_string()),
                Just("[\"clock\", 3]".to_string()),
                Just("{ length = \"0ms\", slide = \"99999999999h\" }".to_string()),
                Just("{}".to_string()),
            ]
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(TABLES).prop_map(str::to_string),
                (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
                "[ -~]{0,20}",
            ]
        }

        fn check(text: &str) {
            if let Ok(file) = PipelineFile::parse(Path::new("p.toml"), text.to_string()) {
                let _ = file.resolve(&FolderBase::of_file(Path::new("p.toml")));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn pipeline_like_text_never_panics(lines in proptest::collection::vec(line(), 0..30)) {
                check(&lines.join("\n"));
                let valid_start = format!(
                    "name = \"p\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n[[sinks]]\ntype = \"console\"\n{}",
                    lines.join("\n")
                );
                check(&valid_start);
            }

            #[test]
            fn any_text_never_panics(text in any::<String>()) {
                check(&text);
            }
        }
    }
}
