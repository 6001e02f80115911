//! A processing stage at run time: its live plugin version and instance,
//! new versions swapped in at batch boundaries (hot reload, with probation
//! and automatic rollback), and the policy for failures — retry on a fresh
//! instance, then fail the pipeline or dead-letter the batch. Loading and
//! sandboxing plugins belongs to `plugin`; ordering batches through stages
//! belongs to `pipeline`; noticing new versions belongs to `reload`.

mod config;
mod dead_letter;
mod versions;
mod window;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{
    ConfigText, Grant, INIT_TIME_FLOOR, OnError, PartitionBy, StageConfig, StageSpec, WindowConfig,
    WindowSpec,
};
pub use dead_letter::DeadLetter;
pub use versions::{StageHandle, StageStatus, Update, VersionInfo};
pub use window::Window;

use crate::batch::Records;
use crate::plugin::{
    CallError, CallInfo, Grants, Instance, Limits, LogTag, Output, Plugin, StateView,
};
use crate::telemetry::StageTelemetry;
use crate::telemetry::events::{
    DeadLettered, InstanceDropped, Next, PluginCall, RolledBack, Trusted, VersionLive,
    WindowRestored,
};

/// A stage could not get a batch through, and nothing may be dropped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The plugin failed the batch (after retries) and the policy is `fail`.
    #[error(
        "pipeline `{pipeline}`, stage `{stage}`, plugin {plugin}, batch {batch}: the plugin {error}"
    )]
    Plugin {
        /// Pipeline name.
        pipeline: String,
        /// Stage name.
        stage: String,
        /// Plugin label (`file.wasm@hash`).
        plugin: String,
        /// Batch id.
        batch: u64,
        /// What went wrong on the last attempt.
        error: CallError,
    },
    /// Records had to be dead-lettered but could not be written.
    #[error("pipeline `{pipeline}`, stage `{stage}`, batch {batch}: cannot write dead-lettered records to {}: {source}", dir.display())]
    DeadLetter {
        /// Pipeline name.
        pipeline: String,
        /// Stage name.
        stage: String,
        /// Batch id.
        batch: u64,
        /// The dead-letter folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A stage could not be built.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}`: plugin {plugin} {error}")]
pub struct InitError {
    /// Stage name.
    pub stage: String,
    /// Plugin label.
    pub plugin: String,
    /// Why `init` (or instantiation) failed.
    pub error: CallError,
}

/// What a stage did with one batch.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// The records for the next stage or the sinks.
    pub records: Records,
    /// Input records dead-lettered one by one.
    pub failed: usize,
    /// Time spent in the plugin, including retries.
    pub busy: Duration,
    /// The batch's writes to the stage's state (to checkpoint).
    pub writes: crate::state::Writes,
    /// A windowed stage's changes to its window (to checkpoint).
    pub window_writes: Option<(Arc<crate::state::StageState>, crate::state::Writes)>,
    /// The plugin version that processed the batch.
    pub version: Option<Arc<str>>,
}

/// Everything a stage needs besides its plugin.
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub name: String,
    /// The plugin file named in the pipeline file (watched for new
    /// versions).
    pub plugin_path: PathBuf,
    /// Batch interval, ms.
    pub interval_ms: u64,
    /// `init` config.
    pub config: Vec<(String, String)>,
    /// Resource limits per instance.
    pub limits: Limits,
    /// Capabilities granted.
    pub grants: Grants,
    /// Failure policy.
    pub on_error: OnError,
    /// Retries before the policy applies.
    pub retries: u32,
    /// Batches per instance before a fresh one replaces it (0: never).
    pub recycle_after: u64,
    /// Drop the instance after this long without a batch with records, so
    /// an idle pipeline holds no Wasm memory (`sluice serve`); the next
    /// batch makes a fresh one. `None` keeps it.
    pub release_idle: Option<Duration>,
    /// Where failed records go.
    pub dead_letter: DeadLetter,
    /// The stage's state, when the pipeline keeps a state store.
    pub state: Option<Arc<crate::state::StageState>>,
    /// Largest key + value a plugin may put into its state, in bytes.
    pub state_limit: u64,
    /// Where the stage's events are counted (and its log lines labelled).
    pub telemetry: StageTelemetry,
}

/// How many batches a new version must process without failing before it
/// is trusted; until then a failed batch rolls it back.
pub const PROBATION_BATCHES: u32 = 10;

/// A plugin version with its instance.
struct Version {
    plugin: Arc<Plugin>,
    /// `file.wasm@hash`, made once.
    label: Arc<str>,
    tag: Arc<LogTag>,
    instance: Option<Instance>,
    /// Batches the current instance has processed.
    batches_on_instance: u64,
}

impl Version {
    fn new(settings: &StageSettings, plugin: Arc<Plugin>, instance: Option<Instance>) -> Self {
        let tag = Arc::new(LogTag {
            pipeline: settings.pipeline.clone(),
            stage: settings.name.clone(),
            plugin: plugin.label(),
        });
        Version {
            label: tag.plugin.as_str().into(),
            plugin,
            tag,
            instance,
            batches_on_instance: 0,
        }
    }
}

/// A stage, ready to process batches.
pub struct Stage {
    settings: StageSettings,
    current: Version,
    /// The version `current` replaced, kept ready while `current` is on
    /// probation.
    fallback: Option<Version>,
    probation_left: u32,
    handle: Arc<StageHandle>,
    /// The records a windowed stage holds.
    window: Option<Window>,
    /// When the stage last had records to process.
    last_busy: Instant,
    /// Calls that ran out of time since [`Stage::take_timeouts`].
    timeouts: u32,
}

/// Instantiates `plugin` for a stage and runs its `init` with the stage's
/// config: what a new version must pass before it may go live.
pub fn prepare(settings: &StageSettings, plugin: &Arc<Plugin>) -> Result<Instance, CallError> {
    let tag = Version::new(settings, plugin.clone(), None).tag;
    Instance::new(
        plugin,
        tag,
        settings.limits,
        settings.grants,
        &settings.config,
        StateView::new(settings.state.clone(), settings.state_limit),
    )
}

impl Stage {
    /// Creates the stage and its first instance, so a plugin that rejects
    /// its config stops the pipeline before any record is read.
    pub fn new(settings: StageSettings, plugin: Arc<Plugin>) -> Result<Self, InitError> {
        let instance = prepare(&settings, &plugin).map_err(|error| InitError {
            stage: settings.name.clone(),
            plugin: plugin.label(),
            error,
        })?;
        let handle = StageHandle::new(&settings.name, plugin.clone());
        let current = Version::new(&settings, plugin, Some(instance));
        settings.telemetry.set_version(current.label.clone());
        if let Some(instance) = &current.instance {
            settings
                .telemetry
                .memory
                .set(instance.memory_bytes() as i64);
        }
        Ok(Stage {
            current,
            settings,
            fallback: None,
            probation_left: 0,
            handle,
            window: None,
            last_busy: Instant::now(),
            timeouts: 0,
        })
    }

    /// Calls that ran out of time since the last time this was asked (the
    /// worker pool backs off a tenant whose calls keep timing out).
    pub fn take_timeouts(&mut self) -> u32 {
        std::mem::take(&mut self.timeouts)
    }

    /// Drops the live instance (and a fallback's) when the stage has had
    /// no records for `release_idle`: an idle stage then holds no Wasm
    /// memory. A windowed stage keeps its instance (its window fires on
    /// time, not on input).
    pub fn release_if_idle(&mut self) {
        let Some(after) = self.settings.release_idle else {
            return;
        };
        if self.window.is_some() || self.last_busy.elapsed() < after {
            return;
        }
        if self.current.instance.take().is_some() {
            InstanceDropped {
                stage: &self.settings.telemetry,
                why: format!("idle for {}s: instance released", after.as_secs()),
            }
            .emit();
        }
        if let Some(fallback) = &mut self.fallback {
            fallback.instance = None;
        }
    }

    /// Makes the stage windowed: it is called with `window`'s records when
    /// a call is due, and not at all in between.
    pub fn with_window(mut self, window: Window) -> Self {
        WindowRestored {
            stage: &self.settings.telemetry,
            held: window.held_records(),
        }
        .emit();
        self.window = Some(window);
        self
    }

    /// Whether the stage is windowed (it then takes every batch, empty
    /// ones too, since time moves its window).
    pub fn is_windowed(&self) -> bool {
        self.window.is_some()
    }

    /// Runs one batch: straight through the plugin, or, for a windowed
    /// stage, into its window, with the window through the plugin when a
    /// call is due (`ends_interval`: the batch is its interval's last).
    pub fn process_batch(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        ends_interval: bool,
        input: Records,
    ) -> Result<StageOutput, StageError> {
        let Some(window) = &mut self.window else {
            return self.process(batch_id, time_ms, input);
        };
        let step = window.take(time_ms, ends_interval, input);
        let state = window.state().clone();
        let mut out = match step.fire {
            Some(records) if !records.is_empty() => self.process(batch_id, time_ms, records)?,
            _ => StageOutput::default(),
        };
        out.window_writes = Some((state, step.writes));
        Ok(out)
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The live plugin version.
    pub fn plugin(&self) -> &Plugin {
        &self.current.plugin
    }

    /// The stage's settings (for preparing new versions).
    pub fn settings(&self) -> &StageSettings {
        &self.settings
    }

    /// The handle through which new versions are offered and status read.
    pub fn handle(&self) -> Arc<StageHandle> {
        self.handle.clone()
    }

    /// Puts the prepared version live, if one is waiting. Called at a batch
    /// boundary only, so every batch is processed entirely by one version.
    fn take_updates(&mut self) {
        let Some(update) = self.handle.take_pending() else {
            return;
        };
        let rollback = update.cause == "rollback";
        let new = Version::new(&self.settings, update.plugin, Some(update.instance));
        let old = std::mem::replace(&mut self.current, new);
        let (live, cause, replaced) = (&self.current.label, update.cause, &old.label);
        VersionLive {
            stage: &self.settings.telemetry,
            live,
            cause: &cause,
            replaced,
        }
        .emit();
        self.handle
            .event(format!("{live} live ({cause}), replacing {replaced}"));
        if rollback {
            // Back to a version already trusted: no probation.
            self.fallback = None;
            self.probation_left = 0;
        } else {
            // The fallback is the last trusted version: a version replaced
            // while still on probation never becomes one.
            if self.fallback.is_none() {
                self.fallback = Some(old);
            }
            self.probation_left = PROBATION_BATCHES;
        }
        self.handle
            .went_live(&self.current.plugin, !rollback, rollback);
    }

    /// Runs one batch through the plugin, applying the failure policy.
    pub fn process(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        input: Records,
    ) -> Result<StageOutput, StageError> {
        self.take_updates();
        let started = Instant::now();
        if !input.is_empty() {
            self.last_busy = started;
        }
        let mut out = self.process_here(batch_id, time_ms, input)?;
        out.busy = started.elapsed();
        out.version = Some(self.current.label.clone());
        Ok(out)
    }

    /// Runs one batch on the live version (no swap here: a batch that a new
    /// version fails on probation is redone by the fallback, not by a newer
    /// version that arrived meanwhile).
    fn process_here(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        input: Records,
    ) -> Result<StageOutput, StageError> {
        match self.attempt(batch_id, time_ms, input) {
            Ok((output, input)) => {
                let count_in = input.len();
                let rejected = output.failures.len();
                if self.fallback.is_some() && rejected > 0 && rejected * 2 >= count_in {
                    // On probation and rejecting half the batch: its output
                    // is dropped and the fallback redoes the batch.
                    self.roll_back(
                        batch_id,
                        &format!("it rejected {rejected} of {count_in} records"),
                    );
                    return self.process_here(batch_id, time_ms, input);
                }
                let failed =
                    self.dead_letter_failures(batch_id, time_ms, &input, &output.failures)?;
                self.count_probation_batch();
                if let Some(state) = &self.settings.state {
                    state.absorb(batch_id, &output.writes);
                }
                Ok(StageOutput {
                    records: output.records,
                    failed,
                    writes: output.writes,
                    ..StageOutput::default()
                })
            }
            Err((input, error)) if self.fallback.is_some() => {
                // A new version failed a batch on probation: back to the
                // previous one, which processes this batch instead.
                self.roll_back(batch_id, &format!("it {error}"));
                self.process_here(batch_id, time_ms, input)
            }
            Err((input, error)) => self.give_up(batch_id, time_ms, input, error),
        }
    }

    /// Counts a good batch against a new version's probation.
    fn count_probation_batch(&mut self) {
        if self.fallback.is_none() {
            return;
        }
        self.probation_left = self.probation_left.saturating_sub(1);
        if self.probation_left == 0 {
            self.fallback = None;
            self.handle.passed_probation();
            self.handle
                .event(format!("{} passed probation", self.current.label));
            Trusted {
                stage: &self.settings.telemetry,
                label: &self.current.label,
            }
            .emit();
        }
    }

    fn roll_back(&mut self, batch_id: u64, why: &str) {
        let fallback = self.fallback.take().expect("rolling back needs a fallback");
        let failed = std::mem::replace(&mut self.current, fallback);
        self.probation_left = 0;
        let (bad, good) = (&failed.label, &self.current.label);
        RolledBack {
            stage: &self.settings.telemetry,
            bad,
            good,
            batch: batch_id,
            why,
        }
        .emit();
        self.handle.event(format!(
            "{bad} rolled back to {good} at batch {batch_id}: {why}"
        ));
        self.handle.went_live(&self.current.plugin, false, true);
    }

    /// Keeps a healthy instance for the next batch, unless it has done its
    /// `recycle_after` batches: then it is dropped (its memory goes back to
    /// the pool) and the next batch gets a fresh one.
    fn keep_or_recycle(&mut self, instance: Instance) {
        let v = &mut self.current;
        v.batches_on_instance += 1;
        let limit = self.settings.recycle_after;
        if limit > 0 && v.batches_on_instance >= limit {
            InstanceDropped {
                stage: &self.settings.telemetry,
                why: format!(
                    "instance of {} recycled after {} batches",
                    v.label, v.batches_on_instance
                ),
            }
            .emit();
            v.batches_on_instance = 0;
            drop(instance);
        } else {
            v.instance = Some(instance);
        }
    }

    /// Runs the batch on the current version, retrying on fresh instances.
    /// Gives the input back with the last error when every attempt failed.
    #[allow(clippy::type_complexity)]
    fn attempt(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        input: Records,
    ) -> Result<(Output, Records), (Records, CallError)> {
        let info = CallInfo {
            id: batch_id,
            time_ms,
            interval_ms: self.settings.interval_ms,
        };
        let mut input = input;
        let mut last_error = None;
        for attempt in 0..=self.settings.retries {
            let instance = match self.current.instance.take() {
                Some(instance) => Ok(instance),
                None => {
                    self.current.batches_on_instance = 0;
                    prepare(&self.settings, &self.current.plugin)
                }
            };
            let mut instance = match instance {
                Ok(instance) => instance,
                Err(error) => {
                    self.report(batch_id, attempt, &error);
                    last_error = Some(error);
                    continue;
                }
            };
            let (back, outcome) = instance.process(info, input);
            input = back;
            match outcome {
                Ok(output) => {
                    PluginCall {
                        stage: &self.settings.telemetry,
                        plugin: &self.current.label,
                        batch: batch_id,
                        attempt: attempt + 1,
                        outcome: Ok(()),
                        next: Next::Policy,
                        memory: Some(instance.memory_bytes()),
                    }
                    .emit();
                    self.keep_or_recycle(instance);
                    return Ok((output, input));
                }
                Err(error) => {
                    self.report(batch_id, attempt, &error);
                    if matches!(error, CallError::Timeout(_)) {
                        self.timeouts += 1;
                    }
                    if !error.kills_instance() {
                        self.current.instance = Some(instance);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err((input, last_error.expect("at least one attempt was made")))
    }

    /// Every attempt failed: the stage's policy decides.
    fn give_up(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        input: Records,
        error: CallError,
    ) -> Result<StageOutput, StageError> {
        let label = self.current.plugin.label();
        match self.settings.on_error {
            OnError::Fail => Err(StageError::Plugin {
                pipeline: self.settings.pipeline.clone(),
                stage: self.settings.name.clone(),
                plugin: label,
                batch: batch_id,
                error,
            }),
            OnError::DeadLetter => {
                let reason = format!("plugin {label} {error}");
                let all: Vec<(usize, &str)> =
                    (0..input.len()).map(|i| (i, reason.as_str())).collect();
                self.write_dead_letters(batch_id, time_ms, &input, &all)?;
                Ok(StageOutput {
                    records: Records::default(),
                    failed: input.len(),
                    ..Default::default()
                })
            }
        }
    }

    fn report(&self, batch_id: u64, attempt: u32, error: &CallError) {
        let s = &self.settings;
        let next = match (attempt < s.retries, error.kills_instance()) {
            (false, _) => Next::Policy,
            (true, true) => Next::RetryFresh,
            (true, false) => Next::Retry,
        };
        PluginCall {
            stage: &s.telemetry,
            plugin: &self.current.label,
            batch: batch_id,
            attempt: attempt + 1,
            outcome: Err(error),
            next,
            memory: None,
        }
        .emit();
    }

    fn dead_letter_failures(
        &self,
        batch_id: u64,
        time_ms: u64,
        input: &Records,
        failures: &[(u32, String)],
    ) -> Result<usize, StageError> {
        if failures.is_empty() {
            return Ok(0);
        }
        let mut reasons: Vec<(usize, &str)> = Vec::with_capacity(failures.len());
        for (index, message) in failures {
            let index = *index as usize;
            if index < input.len() {
                reasons.push((index, message.as_str()));
            } else {
                let s = &self.settings.telemetry;
                tracing::warn!(
                    tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
                    batch = batch_id,
                    "the plugin reported a failure for record {index}, but the batch has {} records; ignored",
                    input.len()
                );
            }
        }
        reasons.sort_by_key(|r| r.0);
        reasons.dedup_by_key(|r| r.0);
        self.write_dead_letters(batch_id, time_ms, input, &reasons)?;
        Ok(reasons.len())
    }

    fn write_dead_letters(
        &self,
        batch_id: u64,
        time_ms: u64,
        input: &Records,
        reasons: &[(usize, &str)],
    ) -> Result<(), StageError> {
        let s = &self.settings;
        let path = s
            .dead_letter
            .write(batch_id, time_ms, input, reasons)
            .map_err(|source| StageError::DeadLetter {
                pipeline: s.pipeline.clone(),
                stage: s.name.clone(),
                batch: batch_id,
                dir: s.dead_letter.dir.clone(),
                source,
            })?;
        DeadLettered {
            stage: &s.telemetry,
            batch: batch_id,
            records: reasons.len(),
            path: &path,
            reason: reasons.first().map_or("", |r| r.1),
        }
        .emit();
        Ok(())
    }
}
