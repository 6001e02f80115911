//! Building a pipeline from its file (sources, stages with their plugins,
//! sinks) and running it: the batcher cuts batches, each batch goes through
//! the stages in order and then to every sink, and the figures are recorded.
//! Batches of a pipeline are processed one at a time per stage, in order;
//! consecutive stages work on consecutive batches at once (`run`). How each
//! part works inside belongs to its own module.

mod link;
mod run;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Delivery, PipelineFile};
use crate::plugin::{Grants, LoadError, PluginHost};
use crate::sink::{Sink, SinkError};
use crate::source::{Source, SourceError};
use crate::stage::{DeadLetter, Grant, InitError, Stage, StageError, StageSettings, Window};
use crate::state::{Checkpoint, StageState, StateError, StateStore};
use crate::telemetry::{PipelineMetrics, Totals};

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
    /// The state file could not be opened or its checkpoint read.
    #[error("{}: {source}", file.display())]
    State {
        /// Why.
        source: StateError,
        /// The pipeline file.
        file: PathBuf,
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
    /// A pipeline thread panicked (a bug in the engine, not in a plugin).
    #[error("pipeline `{pipeline}`: thread `{thread}` panicked: {message}")]
    Panic {
        /// Pipeline name.
        pipeline: String,
        /// The thread.
        thread: String,
        /// The panic's message.
        message: String,
    },
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
    /// A checkpoint could not be written.
    #[error("pipeline `{pipeline}`, batch {batch}: checkpoint failed: {source}")]
    State {
        /// Pipeline name.
        pipeline: String,
        /// Batch id.
        batch: u64,
        /// Why.
        source: StateError,
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

/// Stages built from a pipeline file: plugins loaded and initialised, with
/// their state and windows.
pub fn build_stages(file: &PipelineFile, host: &PluginHost) -> Result<Vec<Stage>, BuildError> {
    stages_of(file, host, true)
}

/// What `sluice check` builds: every plugin loaded and its `init` run on
/// the file's config, without opening the state file (which a running
/// pipeline holds locked).
pub fn check_stages(file: &PipelineFile, host: &PluginHost) -> Result<(), BuildError> {
    stages_of(file, host, false).map(drop)
}

fn stages_of(
    file: &PipelineFile,
    host: &PluginHost,
    with_state: bool,
) -> Result<Vec<Stage>, BuildError> {
    let config = &file.config;
    let pipeline = config.name.get_ref().clone();
    let mut plugins = Vec::with_capacity(config.stages.len());
    for stage in &config.stages {
        let s = stage.get_ref();
        let path = file.resolve(s.plugin.get_ref());
        let plugin = host.load(&path).map_err(|source| {
            let (line, column) = file.line_column(s.plugin.span());
            BuildError::Plugin {
                file: file.path.clone(),
                line,
                column,
                stage: s.name.get_ref().clone(),
                source,
            }
        })?;
        plugins.push((path, plugin));
    }
    // The state store, when a stage needs one (or the file asks for it).
    let windowed = config.stages.iter().any(|s| s.get_ref().window.is_some());
    let store = if with_state {
        open_store(file, windowed || plugins.iter().any(|(_, p)| p.uses_state))?
    } else {
        None
    };
    let mut stages = Vec::with_capacity(config.stages.len());
    for (stage, (path, plugin)) in config.stages.iter().zip(plugins) {
        let s = stage.get_ref();
        let name = s.name.get_ref().clone();
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
        let stage_state = store
            .as_ref()
            .map(|store| StageState::new(store.clone(), &name));
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
            recycle_after: s.recycle_after,
            dead_letter: DeadLetter { dir: dead_letter },
            state: stage_state,
            state_limit: s.state_limit.get_ref().0,
        };
        let mut built = Stage::new(settings, plugin).map_err(|error| {
            let (line, column) = file.line_column(stage.span());
            BuildError::Init {
                error,
                file: file.path.clone(),
                line,
                column,
            }
        })?;
        if let (Some(window), Some(store)) = (&s.window, &store) {
            let interval = config.batch_interval.get_ref().0;
            // Checked when the file was loaded.
            let spec = window
                .get_ref()
                .spec(s.name.get_ref(), interval)
                .map_err(|(span, message)| BuildError::Config(file.error_at(span, message)))?;
            let state = StageState::window(store.clone(), s.name.get_ref());
            let window =
                Window::open(spec, interval.as_millis() as u64, state).map_err(|source| {
                    BuildError::State {
                        source,
                        file: file.path.clone(),
                    }
                })?;
            built = built.with_window(window);
        }
        stages.push(built);
    }
    Ok(stages)
}

/// The pipeline's state file, when `needed`, `state_dir` is set, a source
/// keeps a write-ahead log or the delivery is exactly-once (those
/// checkpoint positions even in stateless pipelines).
fn open_store(file: &PipelineFile, needed: bool) -> Result<Option<Arc<StateStore>>, BuildError> {
    let config = &file.config;
    let exactly_once = *config.delivery.get_ref() == Delivery::ExactlyOnce;
    let wal = config.sources.iter().any(|s| s.get_ref().wal());
    if !(needed || exactly_once || wal || config.state_dir.is_some()) {
        return Ok(None);
    }
    let dir = file.resolve(config.state_dir.as_deref().unwrap_or(Path::new("state")));
    StateStore::open(&dir, config.name.get_ref())
        .map(Some)
        .map_err(|source| BuildError::State {
            source,
            file: file.path.clone(),
        })
}

/// Key of a sink's kept output: the checkpoint's number (8 bytes, big
/// endian), then the records.
pub(crate) const KEPT_OUTPUT: &[u8] = b"output";

/// The output kept for checkpoint `number` in a sink's table, if that is
/// the checkpoint it was kept for.
fn kept(table: &StageState, number: u64) -> Result<Option<crate::batch::Records>, StateError> {
    // Read at start, before any write: this is the checkpointed value.
    let Some(value) = table.get(KEPT_OUTPUT)? else {
        return Ok(None);
    };
    let damaged = || StateError {
        path: table.store().path().to_path_buf(),
        message: format!("the output kept for checkpoint {number} is damaged"),
    };
    let kept_for = u64::from_be_bytes(value.get(..8).ok_or_else(damaged)?.try_into().unwrap());
    if kept_for != number {
        return Ok(None);
    }
    crate::batch::Records::from_bytes(&value[8..])
        .map(Some)
        .ok_or_else(damaged)
}

/// Points the sources at the last checkpoint's positions, so the state
/// and the input carry on together. Returns that checkpoint, which the run
/// goes on from (a source that is quiet in this run keeps its position).
fn resume(
    file: &PipelineFile,
    store: &StateStore,
    sources: &mut [Box<dyn Source>],
) -> Result<Checkpoint, BuildError> {
    let fail = |source: StateError| BuildError::State {
        source,
        file: file.path.clone(),
    };
    let Some(checkpoint) = store.checkpoint().map_err(fail)? else {
        return Ok(Checkpoint::default());
    };
    for (index, source) in sources.iter_mut().enumerate() {
        let Some(position) = checkpoint.positions.get(&index) else {
            continue;
        };
        tracing::debug!("{}: checkpointed position {position:?}", source.describe());
        match source.resume(position) {
            Ok(true) => tracing::info!(
                "{}: resuming from the checkpoint in {}",
                source.describe(),
                store.path().display()
            ),
            Ok(false) => tracing::warn!(
                "{}: cannot replay from the checkpoint in {}; it reads as if new, so state \
                 may count what the last run read but did not checkpoint",
                source.describe(),
                store.path().display()
            ),
            Err(e) => {
                return Err(fail(StateError {
                    path: store.path().to_path_buf(),
                    message: format!("checkpoint of source {index}: {e}"),
                }));
            }
        }
    }
    Ok(checkpoint)
}

/// Sources built from a pipeline file (no side effects: they start reading
/// only when run). Errors point at the source's table.
pub fn build_sources(file: &PipelineFile) -> Result<Vec<Box<dyn Source>>, BuildError> {
    file.config
        .sources
        .iter()
        .enumerate()
        .map(|(index, s)| {
            s.get_ref()
                .build(file, index)
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
    /// Where stage state and checkpoints go, when a stage keeps state.
    state: Option<Arc<StateStore>>,
    /// The checkpoint this run starts from.
    resumed: Checkpoint,
    /// Sinks publish each batch only after its checkpoint.
    exactly_once: bool,
    /// Per sink, where its output is kept with the checkpoint, for sinks
    /// that keep it (exactly-once Kafka).
    kept_output: Vec<Option<Arc<StageState>>>,
    /// A crash to inject, for crash tests.
    crash_at: run::CrashPoint,
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
            .enumerate()
            .map(|(index, s)| s.get_ref().build(file, index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BuildError::Sink {
                error,
                file: file.path.clone(),
            })?;
        let state = match stages
            .iter()
            .find_map(|s| s.settings().state.as_ref().map(|s| s.store().clone()))
        {
            Some(store) => Some(store),
            None => open_store(file, false)?,
        };
        let mut sources = sources;
        let mut sinks = sinks;
        let resumed = match &state {
            Some(store) => resume(file, store, &mut sources)?,
            None => Checkpoint::default(),
        };
        let exactly_once = *config.delivery.get_ref() == Delivery::ExactlyOnce;
        // Output staged before a crash (exactly-once): published if its
        // checkpoint made it, dropped (to be replayed) if not.
        let mut kept_output = Vec::new();
        for (index, sink) in sinks.iter_mut().enumerate() {
            let table = match (&state, exactly_once && sink.keeps_output()) {
                (Some(store), true) => Some(StageState::sink(store.clone(), index)),
                _ => None,
            };
            let output = match &table {
                Some(table) => kept(table, resumed.number).map_err(|source| BuildError::State {
                    source,
                    file: file.path.clone(),
                })?,
                None => None,
            };
            sink.recover(resumed.number, output)
                .map_err(|error| BuildError::Sink {
                    error,
                    file: file.path.clone(),
                })?;
            kept_output.push(table);
        }
        Ok(Pipeline {
            state,
            resumed,
            exactly_once,
            kept_output,
            crash_at: Default::default(),
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
}
