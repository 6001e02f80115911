//! `[[stages]]` in a pipeline file ([`StageConfig`]) and the plain,
//! checked form a stage is built from ([`StageSpec`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::units::{ByteSize, HumanDuration};

/// One processing stage: a plugin and how to run it.
///
/// ```toml
/// [[stages]]
/// name = "split"
/// plugin = "plugins/word_split.wasm"
/// config = { lowercase = "true" }
/// on_error = "dead-letter"
/// memory_limit = "64MiB"
/// time_limit = "2s"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The stage's name, unique in the pipeline; shown in logs and metrics.
    /// Letters, digits, `-`, `_` and `.` only.
    pub name: Spanned<String>,
    /// The plugin: a WebAssembly component file implementing
    /// `sluice:plugin/stage`, relative to the pipeline file.
    pub plugin: Spanned<PathBuf>,
    /// Settings handed to the plugin's `init` as (key, value) text pairs,
    /// sorted by key. Values may be strings, numbers or booleans.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigText>,
    /// What happens to a batch the plugin cannot process (it traps, runs out
    /// of time or memory, or returns an error), once `retries` fresh
    /// instances have failed too: `"fail"` stops the pipeline with an error
    /// (the default); `"dead-letter"` writes the batch to `dead_letter` and
    /// goes on. Records a plugin rejects one by one are always dead-lettered.
    #[serde(default)]
    pub on_error: OnError,
    /// How many times a failed batch is retried before `on_error` applies
    /// (on a fresh instance when the plugin trapped or ran out of time or
    /// memory). Default 1.
    #[serde(default = "default_retries")]
    pub retries: Spanned<u32>,
    /// Folder for dead-lettered records, relative to the pipeline file: one
    /// JSON-lines file per batch, each record with the error. Default
    /// `dead-letter/<pipeline>/<stage>`.
    pub dead_letter: Option<PathBuf>,
    /// Largest size of each of the instance's linear memories. Default
    /// `256MiB`, at most `4GiB`.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: Spanned<ByteSize>,
    /// Longest one `process` call may run before it is stopped
    /// (wall-clock time per batch, enforced by epoch interruption in 5ms
    /// steps). Default `10s`. The plugin's start-up (instantiation and
    /// `init`) gets at least 2s whatever this says.
    #[serde(default = "default_time_limit")]
    pub time_limit: Spanned<HumanDuration>,
    /// Capabilities beyond the sandbox: `"clock"` (the real wall clock
    /// instead of the batch time) and `"random"` (real randomness instead of
    /// a deterministic sequence). Default none.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Batches an instance processes before it is replaced by a fresh one,
    /// so its memory does not stay at its high-water mark forever (wasmtime
    /// stores are meant to be short-lived). Default 1000; 0 never replaces.
    #[serde(default = "default_recycle_after")]
    pub recycle_after: u64,
    /// Largest key plus value the plugin may store in its state, e.g.
    /// `"64KiB"`; a larger `put` fails that call with `too-large`.
    /// Default `"1MiB"`.
    #[serde(default = "default_state_limit")]
    pub state_limit: Spanned<ByteSize>,
    /// Makes the stage windowed, as `window = { length = "30s", slide =
    /// "10s" }`: every `slide` the plugin is called once with the records
    /// of the last `length` (the engine keeps them, in the state file, so
    /// a window survives restarts); between calls it sees nothing. Both
    /// are multiples of `batch_interval`; `slide` defaults to it. See
    /// [`WindowConfig`].
    pub window: Option<Spanned<WindowConfig>>,
    /// Sends the records arriving at this stage to the task that owns
    /// their key, so that a keyed stage (a running count by word) sees
    /// every record of a key: `"key"` (the record's key) or `"value"` (its
    /// value, for records whose value is the key, as `word-split`'s words
    /// are). They go through the topic `<pipeline>-<stage>-repartition`,
    /// partitioned like the input, and this stage and the ones after it run
    /// as tasks over its partitions. Needs `tasks = "per-partition"`.
    pub partition_by: Option<Spanned<PartitionBy>>,
}

/// What a repartitioning stage groups records by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionBy {
    /// The record's key (records without one all go to one partition).
    Key,
    /// The record's value.
    Value,
}

/// A stage's sliding window, counted in batch intervals.
///
/// A window's intervals are those the pipeline ran: time the engine was
/// stopped does not count, so after a restart a window carries on with the
/// records it held, then those the sources bring (or replay).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// How far back the plugin sees, e.g. `"30s"`.
    pub length: Spanned<HumanDuration>,
    /// How often the plugin is called. Default: every batch interval.
    pub slide: Option<Spanned<HumanDuration>>,
}

/// A window in batch intervals, checked against the batch interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Intervals the window covers.
    pub length: u64,
    /// Intervals between calls.
    pub slide: u64,
}

/// Most intervals one window may cover: its records are kept in memory.
const MAX_WINDOW_INTERVALS: u64 = 100_000;

impl WindowConfig {
    /// The window in intervals of `interval`, or an error with the span of
    /// the offending value.
    pub fn spec(
        &self,
        stage: &str,
        interval: Duration,
    ) -> Result<WindowSpec, (Range<usize>, String)> {
        let interval_ms = interval.as_millis().max(1) as u64;
        let count = |field: &str, value: &Spanned<HumanDuration>| {
            let ms = value.get_ref().0.as_millis() as u64;
            let shown = value.get_ref();
            let batch = HumanDuration(interval);
            if ms == 0 || ms % interval_ms != 0 {
                return Err((
                    value.span(),
                    format!(
                        "invalid window `{field}` `{shown}` in stage `{stage}`: must be a \
                         non-zero multiple of `batch_interval` ({batch})"
                    ),
                ));
            }
            Ok(ms / interval_ms)
        };
        let length = count("length", &self.length)?;
        let slide = match &self.slide {
            Some(slide) => count("slide", slide)?,
            None => 1,
        };
        if slide > length {
            let span = self.slide.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err((
                span,
                format!(
                    "invalid window in stage `{stage}`: `slide` ({}) is longer than `length` \
                     ({}), so some records would never be seen",
                    HumanDuration(interval * slide as u32),
                    self.length.get_ref()
                ),
            ));
        }
        if length > MAX_WINDOW_INTERVALS {
            return Err((
                self.length.span(),
                format!(
                    "invalid window `length` `{}` in stage `{stage}`: at most \
                     {MAX_WINDOW_INTERVALS} batch intervals (the window is kept in memory)",
                    self.length.get_ref()
                ),
            ));
        }
        Ok(WindowSpec { length, slide })
    }
}

fn default_state_limit() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(1 << 20))
}

fn default_recycle_after() -> u64 {
    1000
}

/// What to do with a batch a plugin cannot process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop the pipeline with an error naming the stage, plugin and batch.
    #[default]
    Fail,
    /// Write the batch's records to the dead-letter folder and go on.
    DeadLetter,
}

/// A capability a stage may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// The real wall clock.
    Clock,
    /// Real randomness.
    Random,
}

fn default_retries() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn default_memory_limit() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(256 << 20))
}

fn default_time_limit() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(10)))
}

/// A `config` value, as the text the plugin receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigText(pub String);

impl<'de> Deserialize<'de> for ConfigText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigText, E> {
                Ok(ConfigText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigText, E> {
                Ok(ConfigText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigText, E> {
                Ok(ConfigText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigText, E> {
                Ok(ConfigText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigText, E> {
                Ok(ConfigText(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Shortest time `init` is given, whatever the stage's `time_limit`: a
/// plugin's start-up (a Python runtime's, say) may take longer than a batch
/// should, and a limit too close to it would pass one run and fail the next.
pub const INIT_TIME_FLOOR: Duration = Duration::from_secs(2);

/// Largest `state_limit`: one key and value the engine holds in memory
/// and writes in one checkpoint.
pub const MAX_STATE_LIMIT: u64 = 64 << 20;

/// A stage, checked and with its paths resolved: what building it needs.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Unique in the pipeline.
    pub name: String,
    /// The plugin file.
    pub plugin: PathBuf,
    /// How the pipeline named the plugin (a path, or `name@sha256:…` for a
    /// hosted tenant's stored plugin), for messages.
    pub plugin_name: String,
    /// The name its versions go by in logs and status, when not the
    /// file's (a hosted tenant's plugin is stored by digest).
    pub plugin_label: Option<String>,
    /// `init` config, sorted by key.
    pub config: Vec<(String, String)>,
    /// Failure policy.
    pub on_error: OnError,
    /// Retries before `on_error` applies.
    pub retries: u32,
    /// Dead-letter folder.
    pub dead_letter: PathBuf,
    /// Linear memory limit, bytes.
    pub memory_limit: u64,
    /// Wall-clock limit per `process` call.
    pub time_limit: Duration,
    /// Granted capabilities.
    pub grants: Vec<Grant>,
    /// Batches per instance (0: never recycled).
    pub recycle_after: u64,
    /// Largest key + value in state, bytes.
    pub state_limit: u64,
    /// The window, in batch intervals.
    pub window: Option<WindowSpec>,
    /// Whether records reach this stage through a repartition topic, and
    /// by what.
    pub partition_by: Option<PartitionBy>,
}

impl StageConfig {
    /// The plain form, with the plugin and dead-letter paths the caller
    /// resolved; errors come with the span of the offending value.
    pub fn spec(
        &self,
        plugin: PathBuf,
        dead_letter: PathBuf,
        interval: Duration,
    ) -> Result<StageSpec, (Range<usize>, String)> {
        self.validate()?;
        let window = match &self.window {
            Some(window) => Some(
                window
                    .get_ref()
                    .spec(self.name.get_ref(), interval)
                    .map_err(|(span, message)| {
                        let span = if span.is_empty() { window.span() } else { span };
                        (span, message)
                    })?,
            ),
            None => None,
        };
        Ok(StageSpec {
            name: self.name.get_ref().clone(),
            plugin,
            plugin_name: self.plugin.get_ref().display().to_string(),
            plugin_label: None,
            config: self
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            on_error: self.on_error,
            retries: *self.retries.get_ref(),
            dead_letter,
            memory_limit: self.memory_limit.get_ref().0,
            time_limit: self.time_limit.get_ref().0,
            grants: self.grants.clone(),
            recycle_after: self.recycle_after,
            state_limit: self.state_limit.get_ref().0,
            window,
            partition_by: self.partition_by.as_ref().map(|p| *p.get_ref()),
        })
    }

    /// Checks what serde cannot; the error comes with the span of the
    /// offending value.
    pub fn validate(&self) -> Result<(), (Range<usize>, String)> {
        let name = self.name.get_ref();
        crate::config::check_name("stage `name`", name).map_err(|m| (self.name.span(), m))?;
        let memory = self.memory_limit.get_ref();
        if !(1 << 20..=4 << 30).contains(&memory.0) {
            return Err((
                self.memory_limit.span(),
                format!(
                    "invalid `memory_limit` `{memory}` in stage `{name}`: must be between 1MiB and 4GiB"
                ),
            ));
        }
        if self.time_limit.get_ref().0.is_zero() {
            return Err((
                self.time_limit.span(),
                format!("invalid `time_limit` `0ms` in stage `{name}`: must be at least 1ms"),
            ));
        }
        let state_limit = self.state_limit.get_ref();
        if !(1..=MAX_STATE_LIMIT).contains(&state_limit.0) {
            return Err((
                self.state_limit.span(),
                format!(
                    "invalid `state_limit` `{state_limit}` in stage `{name}`: must be between 1B and {}",
                    ByteSize(MAX_STATE_LIMIT)
                ),
            ));
        }
        if *self.retries.get_ref() > 100 {
            return Err((
                self.retries.span(),
                format!(
                    "invalid `retries` `{}` in stage `{name}`: at most 100",
                    self.retries.get_ref()
                ),
            ));
        }
        Ok(())
    }
}
