//! A processing stage at run time: a plugin version, its live instance, and
//! the policy for failures — retry on a fresh instance, then fail the
//! pipeline or dead-letter the batch. Loading and sandboxing plugins belongs
//! to `plugin`; ordering batches through stages belongs to `pipeline`.

mod config;
mod dead_letter;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{ConfigText, Grant, OnError, StageConfig};
pub use dead_letter::DeadLetter;

use crate::batch::Records;
use crate::plugin::{CallError, CallInfo, Grants, Instance, Limits, LogTag, Plugin};

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
    /// Whether the whole batch was dead-lettered.
    pub dead_lettered: bool,
    /// Time spent in the plugin, including retries.
    pub busy: Duration,
}

/// Everything a stage needs besides its plugin.
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub name: String,
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
    /// Where failed records go.
    pub dead_letter: DeadLetter,
}

/// A stage, ready to process batches.
pub struct Stage {
    settings: StageSettings,
    plugin: Arc<Plugin>,
    tag: Arc<LogTag>,
    instance: Option<Instance>,
}

impl Stage {
    /// Creates the stage and its first instance, so a plugin that rejects
    /// its config stops the pipeline before any record is read.
    pub fn new(settings: StageSettings, plugin: Arc<Plugin>) -> Result<Self, InitError> {
        let tag = Arc::new(LogTag {
            pipeline: settings.pipeline.clone(),
            stage: settings.name.clone(),
            plugin: plugin.label(),
        });
        let mut stage = Stage {
            settings,
            plugin,
            tag,
            instance: None,
        };
        stage.instance = Some(stage.instantiate().map_err(|error| InitError {
            stage: stage.settings.name.clone(),
            plugin: stage.plugin.label(),
            error,
        })?);
        Ok(stage)
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The plugin version this stage runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn instantiate(&self) -> Result<Instance, CallError> {
        let s = &self.settings;
        Instance::new(
            &self.plugin,
            self.tag.clone(),
            s.limits,
            s.grants,
            &s.config,
        )
    }

    /// Runs one batch through the plugin, applying the failure policy.
    pub fn process(
        &mut self,
        batch_id: u64,
        time_ms: u64,
        input: Records,
    ) -> Result<StageOutput, StageError> {
        let started = Instant::now();
        let info = CallInfo {
            pipeline: &self.settings.pipeline,
            stage: &self.settings.name,
            id: batch_id,
            time_ms,
            interval_ms: self.settings.interval_ms,
        };
        let mut input = input;
        let mut last_error = None;
        for attempt in 0..=self.settings.retries {
            let instance = match self.instance.take() {
                Some(instance) => Ok(instance),
                None => self.instantiate(),
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
                    self.instance = Some(instance);
                    let failed =
                        self.dead_letter_failures(batch_id, time_ms, &input, &output.failures)?;
                    return Ok(StageOutput {
                        records: output.records,
                        failed,
                        dead_lettered: false,
                        busy: started.elapsed(),
                    });
                }
                Err(error) => {
                    self.report(batch_id, attempt, &error);
                    if !error.kills_instance() {
                        self.instance = Some(instance);
                    }
                    last_error = Some(error);
                }
            }
        }
        let error = last_error.expect("at least one attempt was made");
        match self.settings.on_error {
            OnError::Fail => Err(StageError::Plugin {
                pipeline: self.settings.pipeline.clone(),
                stage: self.settings.name.clone(),
                plugin: self.plugin.label(),
                batch: batch_id,
                error,
            }),
            OnError::DeadLetter => {
                let reason = format!("plugin {} {error}", self.plugin.label());
                let all: Vec<(usize, &str)> =
                    (0..input.len()).map(|i| (i, reason.as_str())).collect();
                self.write_dead_letters(batch_id, time_ms, &input, &all)?;
                Ok(StageOutput {
                    records: Records::default(),
                    failed: input.len(),
                    dead_lettered: true,
                    busy: started.elapsed(),
                })
            }
        }
    }

    fn report(&self, batch_id: u64, attempt: u32, error: &CallError) {
        let s = &self.settings;
        let retry = if attempt < s.retries {
            "; retrying on a fresh instance"
        } else {
            ""
        };
        tracing::warn!(
            pipeline = %s.pipeline, stage = %s.name, plugin = %self.tag.plugin, batch = batch_id,
            attempt = attempt + 1,
            "the plugin {error}{retry}"
        );
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
                tracing::warn!(
                    pipeline = %self.settings.pipeline, stage = %self.settings.name, batch = batch_id,
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
        tracing::warn!(
            pipeline = %s.pipeline, stage = %s.name, batch = batch_id,
            "{} record(s) dead-lettered to {}", reasons.len(), path.display()
        );
        Ok(())
    }
}
