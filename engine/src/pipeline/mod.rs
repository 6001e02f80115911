//! Building a pipeline from its file (sources, stages with their plugins,
//! sinks) and running it: the batcher cuts batches, each batch goes through
//! the stages in order and then to every sink, and the figures are recorded.
//! Batches of a pipeline are processed one at a time, in order. How each
//! part works inside belongs to its own module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::batch::{Batch, Batcher, Cut};
use crate::config::{ConfigError, PipelineFile};
use crate::plugin::{Grants, LoadError, PluginHost};
use crate::sink::{BatchMeta, Sink, SinkError};
use crate::source::{Emitter, Source, SourceError};
use crate::stage::{DeadLetter, Grant, InitError, Stage, StageError, StageSettings};
use crate::telemetry::{BatchMetrics, PipelineMetrics, Reporter, StageMetrics, Totals};

/// A pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stage's plugin could not be loaded.
    #[error("{}:{line}:{column}: stage `{stage}`: {source}", file.display())]
    Plugin {
        /// The pipeline file.
        file: PathBuf,
        /// Line of the stage's `plugin` key.
        line: usize,
        /// Column of the stage's `plugin` key.
        column: usize,
        /// Stage name.
        stage: String,
        /// Why.
        source: LoadError,
    },
    /// A plugin's `init` failed.
    #[error("{}:{line}:{column}: {error}", file.display())]
    Init {
        /// Why.
        error: InitError,
        /// The pipeline file.
        file: PathBuf,
        /// Line of the stage's table.
        line: usize,
        /// Column of the stage's table.
        column: usize,
    },
    /// A sink could not be set up.
    #[error("{}: {error}", file.display())]
    Sink {
        /// Why.
        error: SinkError,
        /// The pipeline file.
        file: PathBuf,
    },
}

/// A running pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A stage failed a batch under the `fail` policy, or could not
    /// dead-letter it.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A sink did not take a batch.
    #[error("pipeline `{pipeline}`, batch {batch}: {source}")]
    Sink {
        /// Pipeline name.
        pipeline: String,
        /// Batch id.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// A source failed.
    #[error("pipeline `{pipeline}`: {source}")]
    Source {
        /// Pipeline name.
        pipeline: String,
        /// Why.
        source: SourceError,
    },
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// Totals over the run.
    pub totals: Totals,
}

/// Stages built from a pipeline file: plugins loaded and initialised.
pub fn build_stages(file: &PipelineFile, host: &PluginHost) -> Result<Vec<Stage>, BuildError> {
    let config = &file.config;
    let pipeline = config.name.get_ref().clone();
    let mut stages = Vec::with_capacity(config.stages.len());
    for stage in &config.stages {
        let s = stage.get_ref();
        let name = s.name.get_ref().clone();
        let path = file.resolve(s.plugin.get_ref());
        let plugin = host.load(&path).map_err(|source| {
            let (line, column) = file.line_column(s.plugin.span());
            BuildError::Plugin {
                file: file.path.clone(),
                line,
                column,
                stage: name.clone(),
                source,
            }
        })?;
        let dead_letter = s
            .dead_letter
            .as_ref()
            .map(|d| file.resolve(d))
            .unwrap_or_else(|| {
                file.base_dir()
                    .join("dead-letter")
                    .join(&pipeline)
                    .join(&name)
            });
        let settings = StageSettings {
            pipeline: pipeline.clone(),
            name,
            plugin_path: path.clone(),
            interval_ms: config.batch_interval.get_ref().0.as_millis() as u64,
            config: s
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            limits: crate::plugin::Limits {
                memory: s.memory_limit.get_ref().0,
                time: s.time_limit.get_ref().0,
            },
            grants: Grants {
                clock: s.grants.contains(&Grant::Clock),
                random: s.grants.contains(&Grant::Random),
            },
            on_error: s.on_error,
            retries: *s.retries.get_ref(),
            dead_letter: DeadLetter { dir: dead_letter },
        };
        stages.push(Stage::new(settings, plugin).map_err(|error| {
            let (line, column) = file.line_column(stage.span());
            BuildError::Init {
                error,
                file: file.path.clone(),
                line,
                column,
            }
        })?);
    }
    Ok(stages)
}

/// Sources built from a pipeline file (no side effects: they start reading
/// only when run). Errors point at the source's table.
pub fn build_sources(file: &PipelineFile) -> Result<Vec<Box<dyn Source>>, BuildError> {
    file.config
        .sources
        .iter()
        .map(|s| {
            s.get_ref()
                .build(file)
                .map_err(|error| BuildError::Config(file.error_at(s.span(), error.to_string())))
        })
        .collect()
}

/// A pipeline ready to run.
pub struct Pipeline {
    name: String,
    interval: Duration,
    max_batch_records: usize,
    max_batch_bytes: usize,
    queue_capacity: usize,
    sources: Vec<Box<dyn Source>>,
    stages: Vec<Stage>,
    sinks: Vec<Box<dyn Sink>>,
    metrics: Arc<PipelineMetrics>,
}

impl Pipeline {
    /// Loads the plugins, initialises the stages and sets up sources and
    /// sinks.
    pub fn build(file: &PipelineFile, host: &PluginHost) -> Result<Self, BuildError> {
        let config = &file.config;
        let stages = build_stages(file, host)?;
        let sources = build_sources(file)?;
        let sinks = config
            .sinks
            .iter()
            .map(|s| s.get_ref().build(file))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BuildError::Sink {
                error,
                file: file.path.clone(),
            })?;
        Ok(Pipeline {
            name: config.name.get_ref().clone(),
            interval: config.batch_interval.get_ref().0,
            max_batch_records: *config.max_batch_records.get_ref(),
            max_batch_bytes: config.max_batch_bytes.get_ref().0 as usize,
            queue_capacity: *config.queue_capacity.get_ref(),
            sources,
            stages,
            sinks,
            metrics: Arc::new(PipelineMetrics::default()),
        })
    }

    /// Its stages, for hot reload and the control endpoint.
    pub fn stage_entries(&self) -> Vec<crate::reload::StageEntry> {
        self.stages
            .iter()
            .map(|stage| crate::reload::StageEntry {
                settings: stage.settings().clone(),
                handle: stage.handle(),
            })
            .collect()
    }

    /// The pipeline's figures, live.
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    /// Runs until every source has ended (then the last batch is processed
    /// and the sinks flushed) or `shutdown` turns true (then the sources stop
    /// reading, and what they had read is processed). Blocks the calling
    /// thread, which must not be one of `runtime`'s.
    pub fn run(
        mut self,
        runtime: &Handle,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, RunError> {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let forward = stop_tx.clone();
        let mut global = shutdown;
        runtime.spawn(async move {
            if global.wait_for(|s| *s).await.is_ok() {
                let _ = forward.send(true);
            }
        });
        let descriptions: Vec<String> = self.sources.iter().map(|s| s.describe()).collect();
        tracing::info!(
            pipeline = %self.name,
            "started: batch interval {}ms, sources [{}], stages [{}], {} sink(s)",
            self.interval.as_millis(),
            descriptions.join(", "),
            self.stages.iter().map(|s| format!("{} ({})", s.name(), s.plugin().label())).collect::<Vec<_>>().join(", "),
            self.sinks.len(),
        );
        let tasks: Vec<_> = std::mem::take(&mut self.sources)
            .into_iter()
            .enumerate()
            .map(|(i, source)| {
                runtime.spawn(source.run(Emitter::new(i, tx.clone(), stop_rx.clone())))
            })
            .collect();
        drop(tx);
        let mut batcher = Batcher::new(
            rx,
            self.interval,
            self.max_batch_records,
            self.max_batch_bytes,
        );
        let mut reporter = Reporter::new(&self.name, self.interval);
        let mut last_id = 0;
        let outcome = loop {
            match runtime.block_on(batcher.next()) {
                Cut::Finished => break Ok(()),
                Cut::Batch(batch) => {
                    last_id = batch.id;
                    match self.process(batch) {
                        Ok(metrics) => {
                            self.metrics.record(&metrics);
                            reporter.batch(&metrics);
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        reporter.flush(last_id);
        // Stop the sources; dropping the batcher unblocks any waiting to send.
        let _ = stop_tx.send(true);
        drop(batcher);
        outcome?;
        for sink in &mut self.sinks {
            sink.flush().map_err(|source| RunError::Sink {
                pipeline: self.name.clone(),
                batch: last_id,
                source,
            })?;
        }
        for task in tasks {
            match runtime.block_on(task) {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(RunError::Source {
                        pipeline: self.name.clone(),
                        source,
                    });
                }
                Err(join) => {
                    return Err(RunError::Source {
                        pipeline: self.name.clone(),
                        source: SourceError {
                            source_name: "task".into(),
                            message: format!("panicked: {join}"),
                        },
                    });
                }
            }
        }
        let totals = self.metrics.totals();
        tracing::info!(
            pipeline = %self.name,
            "finished: {} batches ({} with records), {} records in, {} out, {} dead-lettered",
            totals.batches, totals.busy_batches, totals.records_in, totals.records_out, totals.failed
        );
        Ok(RunSummary {
            pipeline: self.name,
            totals,
        })
    }

    /// Runs one batch through the stages and into the sinks.
    fn process(&mut self, batch: Batch) -> Result<BatchMetrics, RunError> {
        let started = Instant::now();
        let records_in = batch.records.len();
        let mut stages = Vec::new();
        let mut records = batch.records;
        if !records.is_empty() {
            for stage in &mut self.stages {
                let count_in = records.len();
                let out = stage.process(batch.id, batch.time_ms, records)?;
                stages.push(StageMetrics {
                    name: stage.name().to_string(),
                    records_in: count_in,
                    records_out: out.records.len(),
                    failed: out.failed,
                    busy: out.busy,
                });
                records = out.records;
                if records.is_empty() {
                    break;
                }
            }
            if !records.is_empty() {
                let meta = BatchMeta {
                    pipeline: &self.name,
                    id: batch.id,
                    time_ms: batch.time_ms,
                };
                for sink in &mut self.sinks {
                    sink.write(meta, &records)
                        .map_err(|source| RunError::Sink {
                            pipeline: self.name.clone(),
                            batch: batch.id,
                            source,
                        })?;
                }
            }
            // Every sink has the batch: its positions are safe to commit.
            // (Sources that can replay from a position commit here once
            // checkpoints land; today positions are only logged.)
            if !batch.positions.is_empty() {
                tracing::debug!(pipeline = %self.name, batch = batch.id, "positions: {:?}", batch.positions);
            }
        }
        let finished = Instant::now();
        let scheduling_delay = started.saturating_duration_since(batch.ready_at);
        let processing_time = finished.duration_since(started);
        Ok(BatchMetrics {
            id: batch.id,
            time_ms: batch.time_ms,
            records_in,
            records_out: records.len(),
            input_rate: records_in as f64 / self.interval.as_secs_f64(),
            scheduling_delay,
            processing_time,
            total_delay: scheduling_delay + processing_time,
            latency: batch.oldest_received.map(|r| finished.duration_since(r)),
            stages,
        })
    }
}
