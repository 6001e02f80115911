//! One type per thing that happens to a pipeline, each emitting its log
//! line and its metrics (and, where the dashboard shows it, its note)
//! together in [`emit`](BatchDone::emit), so the two cannot drift apart
//! and no caller repeats the pipeline's and stage's fields by hand (the
//! shape of Vector's `internal_events`). The log fields are `tenant`
//! (hosted pipelines only), `pipeline`, `stage` and `batch` where they
//! apply; with `--log-format json` they are the JSON object's keys.

use std::path::Path;
use std::time::Duration;

use super::figures::{BatchMetrics, Totals};
use super::journal::{Note, NoteKind};
use super::pipeline::{CheckpointInfo, PipelineMetrics};
use super::report::Reporter;
use super::series::{CallOutcome, Labels, SinkSeries, StageSeries};
use crate::batch::now_ms;
use crate::plugin::CallError;

fn note(stage: &StageSeries, kind: NoteKind, batch: Option<u64>, text: String) {
    stage.journal.add(Note {
        time_ms: now_ms(),
        kind,
        stage: Some(stage.name.clone()),
        batch,
        records: None,
        text,
    });
}

/// A pipeline started.
pub struct Started<'a> {
    /// Its labels.
    pub labels: &'a Labels,
    /// Its batch interval.
    pub interval: Duration,
    /// Its sources, described.
    pub sources: &'a [String],
    /// Its stages with their plugin versions.
    pub stages: &'a [String],
    /// How many sinks.
    pub sinks: usize,
    /// Whether delivery is exactly-once.
    pub exactly_once: bool,
}

impl Started<'_> {
    /// Logs it.
    pub fn emit(self) {
        tracing::info!(
            tenant = self.labels.tenant.as_deref(), pipeline = %self.labels.pipeline,
            "started: batch interval {}ms, sources [{}], stages [{}], {} sink(s), {} delivery",
            self.interval.as_millis(),
            self.sources.join(", "),
            self.stages.join(", "),
            self.sinks,
            if self.exactly_once { "exactly-once" } else { "at-least-once" },
        );
    }
}

/// A batch went through every stage and sink.
pub struct BatchDone<'a> {
    /// The pipeline's telemetry.
    pub metrics: &'a PipelineMetrics,
    /// The pipeline's log of batches.
    pub reporter: &'a mut Reporter,
    /// The batch's figures.
    pub batch: &'a BatchMetrics,
}

impl BatchDone<'_> {
    /// Counts the batch (batches, records per stage, the delay histograms,
    /// the dashboard's timeline) and logs it (per batch, or a summary per
    /// second for short intervals).
    pub fn emit(self) {
        self.metrics.record(self.batch);
        self.reporter.batch(self.batch);
    }
}

/// A pipeline's run ended; returns its totals.
pub struct Finished<'a> {
    /// The pipeline's telemetry.
    pub metrics: &'a PipelineMetrics,
}

impl Finished<'_> {
    /// Logs the delay distributions and the totals.
    pub fn emit(self) -> Totals {
        let labels = &self.metrics.labels;
        if let Some(delays) = self.metrics.delay_summary() {
            tracing::info!(tenant = labels.tenant.as_deref(), pipeline = %labels.pipeline, "{delays}");
        }
        let totals = self.metrics.totals();
        tracing::info!(
            tenant = labels.tenant.as_deref(), pipeline = %labels.pipeline,
            "finished: {} batches ({} with records), {} records in, {} out, {} dead-lettered",
            totals.batches, totals.busy_batches, totals.records_in, totals.records_out, totals.failed
        );
        totals
    }
}

/// A pipeline stopped with an error.
pub struct Failed<'a> {
    /// The pipeline's telemetry.
    pub metrics: &'a PipelineMetrics,
    /// Why.
    pub error: &'a str,
}

impl Failed<'_> {
    /// Logs it and notes it for the dashboard.
    pub fn emit(self) {
        let labels = &self.metrics.labels;
        tracing::error!(tenant = labels.tenant.as_deref(), pipeline = %labels.pipeline, "failed: {}", self.error);
        self.metrics.journal.add(Note {
            time_ms: now_ms(),
            kind: NoteKind::Failed,
            stage: None,
            batch: None,
            records: None,
            text: self.error.to_string(),
        });
    }
}

/// What a failed call leads to next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The stage's policy (no retries left).
    Policy,
    /// Another attempt on the same instance.
    Retry,
    /// Another attempt on a fresh instance.
    RetryFresh,
}

/// One call into a plugin's `process` (or the instantiation before it).
pub struct PluginCall<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The plugin version's label.
    pub plugin: &'a str,
    /// The batch.
    pub batch: u64,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Result<(), &'a CallError>,
    /// What comes after a failure.
    pub next: Next,
    /// The instance's linear memory after the call, if it lives on.
    pub memory: Option<u64>,
}

impl PluginCall<'_> {
    /// The outcome label of a call's result.
    pub fn outcome_of(outcome: Result<(), &CallError>) -> CallOutcome {
        match outcome {
            Ok(()) => CallOutcome::Ok,
            Err(CallError::Trap(_)) => CallOutcome::Trap,
            Err(CallError::Timeout(_)) => CallOutcome::Timeout,
            Err(CallError::OutOfMemory(_)) => CallOutcome::OutOfMemory,
            Err(CallError::Failed(_) | CallError::BadOutput(_) | CallError::InvalidConfig(_)) => {
                CallOutcome::Failed
            }
        }
    }

    /// Counts the call by outcome; a failure is logged and noted.
    pub fn emit(self) {
        let outcome = Self::outcome_of(self.outcome);
        let index = CallOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.stage.calls[index].add(1);
        match self.memory {
            Some(bytes) => self.stage.memory.set(bytes as i64),
            None if self.outcome.is_err() => self.stage.memory.set(0),
            None => {}
        }
        let Err(error) = self.outcome else { return };
        let s = self.stage;
        let retry = match self.next {
            Next::Policy => "",
            Next::RetryFresh => "; retrying on a fresh instance",
            Next::Retry => "; retrying",
        };
        tracing::warn!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            plugin = %self.plugin, batch = self.batch, attempt = self.attempt,
            "the plugin {error}{retry}"
        );
        note(
            s,
            NoteKind::PluginError,
            Some(self.batch),
            format!("plugin {} {error}{retry}", self.plugin),
        );
    }
}

/// A stage's records were written to its dead-letter folder.
pub struct DeadLettered<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The batch.
    pub batch: u64,
    /// How many records.
    pub records: usize,
    /// The file they went to.
    pub path: &'a Path,
    /// The first record's reason.
    pub reason: &'a str,
}

impl DeadLettered<'_> {
    /// Counts, logs and notes them.
    pub fn emit(self) {
        let s = self.stage;
        s.dead_letters.add(self.records as u64);
        tracing::warn!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            batch = self.batch,
            "{} record(s) dead-lettered to {}", self.records, self.path.display()
        );
        s.journal.add(Note {
            time_ms: now_ms(),
            kind: NoteKind::DeadLetters,
            stage: Some(s.name.clone()),
            batch: Some(self.batch),
            records: Some(self.records as u64),
            text: self.reason.to_string(),
        });
    }
}

/// A new version was compiled and `init`-ed, and waits for the next batch.
pub struct VersionReady<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The version's label.
    pub label: &'a str,
    /// What brought it (`file change`, `deploy`, `rollback`).
    pub cause: &'a str,
}

impl VersionReady<'_> {
    /// Logs it.
    pub fn emit(self) {
        let s = self.stage;
        tracing::info!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "version {} ready ({}); live at the next batch", self.label, self.cause
        );
    }
}

/// A new version could not be loaded or `init`-ed.
pub struct VersionRejected<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// What brought it.
    pub cause: &'a str,
    /// Why it was rejected.
    pub reason: &'a str,
}

impl VersionRejected<'_> {
    /// Counts, logs and notes it.
    pub fn emit(self) {
        let s = self.stage;
        s.reloads[1].add(1);
        tracing::warn!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "new version rejected ({}): {}; not reloaded, the running version carries on", self.cause, self.reason
        );
        note(
            s,
            NoteKind::Rejected,
            None,
            format!("rejected ({}): {}", self.cause, self.reason),
        );
    }
}

/// A version went live at a batch boundary.
pub struct VersionLive<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The new live version.
    pub live: &'a str,
    /// What brought it.
    pub cause: &'a str,
    /// The version it replaced.
    pub replaced: &'a str,
}

impl VersionLive<'_> {
    /// Counts, logs and notes it.
    pub fn emit(self) {
        let s = self.stage;
        s.reloads[0].add(1);
        s.set_version(self.live.into());
        tracing::info!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "version {} live ({}), replacing {}", self.live, self.cause, self.replaced
        );
        note(
            s,
            NoteKind::Live,
            None,
            format!(
                "{} live ({}), replacing {}",
                self.live, self.cause, self.replaced
            ),
        );
    }
}

/// A version on probation failed a batch and the previous one came back.
pub struct RolledBack<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The version that failed.
    pub bad: &'a str,
    /// The version back live.
    pub good: &'a str,
    /// The batch it failed (redone by `good`).
    pub batch: u64,
    /// How it failed.
    pub why: &'a str,
}

impl RolledBack<'_> {
    /// Counts, logs and notes it.
    pub fn emit(self) {
        let s = self.stage;
        s.reloads[2].add(1);
        s.set_version(self.good.into());
        tracing::error!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            batch = self.batch,
            "version {} rolled back to {}: on probation, {}; the batch is redone by {}",
            self.bad, self.good, self.why, self.good
        );
        note(
            s,
            NoteKind::RolledBack,
            Some(self.batch),
            format!("{} rolled back to {}: {}", self.bad, self.good, self.why),
        );
    }
}

/// A version finished its probation.
pub struct Trusted<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// The version.
    pub label: &'a str,
}

impl Trusted<'_> {
    /// Logs and notes it.
    pub fn emit(self) {
        let s = self.stage;
        tracing::info!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "version {} passed probation", self.label
        );
        note(
            s,
            NoteKind::Trusted,
            None,
            format!("{} passed probation", self.label),
        );
    }
}

/// An idle stage dropped its instance, or a busy one recycled it.
pub struct InstanceDropped<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// Why, as the log says it.
    pub why: String,
}

impl InstanceDropped<'_> {
    /// Logs it (at debug level) and sets the stage's memory to what it
    /// holds now: nothing until the next batch.
    pub fn emit(self) {
        let s = self.stage;
        s.memory.set(0);
        tracing::debug!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "{}", self.why
        );
    }
}

/// A windowed stage came back with records held from the last checkpoint.
pub struct WindowRestored<'a> {
    /// The stage.
    pub stage: &'a StageSeries,
    /// Records its window holds.
    pub held: usize,
}

impl WindowRestored<'_> {
    /// Logs it.
    pub fn emit(self) {
        let s = self.stage;
        tracing::info!(
            tenant = s.labels.tenant.as_deref(), pipeline = %s.labels.pipeline, stage = %s.name,
            "window holds {} record(s) from the last checkpoint", self.held
        );
    }
}

/// A checkpoint was written.
pub struct Checkpointed<'a> {
    /// The pipeline's telemetry.
    pub metrics: &'a PipelineMetrics,
    /// Its number.
    pub number: u64,
    /// The batch it covers.
    pub batch: u64,
    /// How long it took.
    pub took: Duration,
}

impl Checkpointed<'_> {
    /// Counts it, keeps it as the last one and logs it at debug level.
    pub fn emit(self) {
        let labels = &self.metrics.labels;
        self.metrics.checkpointed(CheckpointInfo {
            number: self.number,
            batch: self.batch,
            time_ms: now_ms(),
            took_us: self.took.as_micros() as u64,
        });
        tracing::debug!(
            tenant = labels.tenant.as_deref(), pipeline = %labels.pipeline, batch = self.batch,
            "checkpoint {} written in {}", self.number, super::ms(self.took)
        );
    }
}

/// A sink took a batch's records (the batch's log line says how many; this
/// counts them per sink).
pub struct SinkWrote<'a> {
    /// The sink.
    pub sink: &'a SinkSeries,
    /// How many records.
    pub records: usize,
}

impl SinkWrote<'_> {
    /// Counts them.
    pub fn emit(self) {
        self.sink.records.add(self.records as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Shape, series::ReloadOutcome};

    fn metrics() -> std::sync::Arc<PipelineMetrics> {
        PipelineMetrics::new(Shape {
            labels: Labels {
                tenant: Some("acme".into()),
                pipeline: "p".into(),
            },
            interval: Duration::from_millis(100),
            stages: vec!["split".into()],
            sources: vec!["stdin-0".into()],
            sinks: vec!["null-0".into()],
            queue_capacity: 8,
        })
    }

    #[test]
    fn a_failed_call_counts_under_its_outcome_and_is_noted() {
        let m = metrics();
        let stage = &m.stages[0];
        let trap = CallError::Trap("unreachable".into());
        for (outcome, memory) in [(Ok(()), Some(65536)), (Err(&trap), None)] {
            PluginCall {
                stage,
                plugin: "split.wasm@1234",
                batch: 7,
                attempt: 1,
                outcome,
                next: Next::Policy,
                memory,
            }
            .emit();
        }
        assert_eq!(stage.calls[0].get(), 1, "ok");
        assert_eq!(stage.calls[1].get(), 1, "trap");
        // The trapped instance is gone: no memory held.
        assert_eq!(stage.memory.get(), 0);
        let problems = m.journal.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].batch, Some(7));
        assert!(
            problems[0].text.contains("trapped: unreachable"),
            "{}",
            problems[0].text
        );
    }

    #[test]
    fn reload_outcomes_count_apart_and_set_the_live_version() {
        let m = metrics();
        let stage = &m.stages[0];
        VersionLive {
            stage,
            live: "b",
            cause: "deploy",
            replaced: "a",
        }
        .emit();
        assert_eq!(&*stage.version(), "b");
        RolledBack {
            stage,
            bad: "b",
            good: "a",
            batch: 3,
            why: "it trapped",
        }
        .emit();
        VersionRejected {
            stage,
            cause: "deploy",
            reason: "not a component",
        }
        .emit();
        let counts: Vec<u64> = ReloadOutcome::ALL
            .iter()
            .enumerate()
            .map(|(i, _)| stage.reloads[i].get())
            .collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(&*stage.version(), "a");
        assert_eq!(m.journal.versions().len(), 3);
    }
}
