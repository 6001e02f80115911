//! Building a pipeline from its resolved form (sources, stages with their
//! plugins, sinks, the state file) and running it: the batcher cuts
//! batches, each batch goes through the stages in order and then to
//! `delivery`, and the figures are recorded. Batches of a pipeline are
//! processed one at a time per stage, in order; consecutive stages work on
//! consecutive batches at once (`run`). How each part works inside belongs
//! to its own module; which pipelines run is the supervisor's business.

mod cancel;
mod link;
mod pool;
mod pooled;
mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Location, PipelineSpec};
use crate::delivery::{Delivery, DeliveryError};
use crate::plugin::{Grants, LoadError, PluginHost};
use crate::sink::{SinkContext, SinkError};
use crate::source::{Source, SourceContext, SourceError};
use crate::stage::{DeadLetter, Grant, InitError, Stage, StageError, StageSettings, Window};
use crate::state::{StageState, StateError, StateStore};
use crate::telemetry::series::kind_name;
use crate::telemetry::{Labels, PipelineMetrics, Shape, StageSeries, Totals};

pub use cancel::Cancel;
pub use pool::{Job, MAX_BACKOFF, Step, WorkerPool};
pub use pooled::{OnDone, PooledRun, Pools};

/// A pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stage's plugin could not be loaded.
    #[error("{}:{}:{}: stage `{stage}`: {source}", file.display(), at.line, at.column)]
    Plugin {
        /// The pipeline file.
        file: PathBuf,
        /// Where the stage's `plugin` key is.
        at: Location,
        /// Stage name.
        stage: String,
        /// Why.
        source: LoadError,
    },
    /// A plugin's `init` failed.
    #[error("{}:{}:{}: {error}", file.display(), at.line, at.column)]
    Init {
        /// Why.
        error: InitError,
        /// The pipeline file.
        file: PathBuf,
        /// Where the stage's table is.
        at: Location,
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
    /// A batch could not be delivered to the sinks or checkpointed.
    #[error("pipeline `{pipeline}`, {source}")]
    Delivery {
        /// Pipeline name.
        pipeline: String,
        /// Why.
        source: DeliveryError,
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

/// What a resolved pipeline's telemetry looks like: its labels, stages,
/// sources and sinks by name.
pub fn shape_of(spec: &PipelineSpec) -> Shape {
    Shape {
        labels: Labels {
            tenant: spec.tenant.clone(),
            pipeline: spec.name.clone(),
        },
        interval: spec.interval,
        stages: spec.stages.iter().map(|s| s.spec.name.clone()).collect(),
        sources: spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| kind_name(&s.value, i))
            .collect(),
        sinks: spec
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| kind_name(&s.value, i))
            .collect(),
        queue_capacity: spec.queue_capacity,
    }
}

/// Stages built from a resolved pipeline: plugins loaded and initialised,
/// with their state and windows, reporting into `metrics`.
pub fn build_stages(
    spec: &PipelineSpec,
    host: &PluginHost,
    metrics: &PipelineMetrics,
) -> Result<Vec<Stage>, BuildError> {
    stages_of(spec, host, Some(metrics)).map(|(stages, _)| stages)
}

/// What `sluice check` builds: every plugin loaded and its `init` run on
/// the stage's config, without opening the state file (which a running
/// pipeline holds locked). Returns whether a plugin uses the state
/// interface.
pub fn check_stages(spec: &PipelineSpec, host: &PluginHost) -> Result<bool, BuildError> {
    stages_of(spec, host, None).map(|(_, uses_state)| uses_state)
}

/// With `metrics`, the stages of a pipeline that runs (with its state
/// file); without, `sluice check`'s.
fn stages_of(
    spec: &PipelineSpec,
    host: &PluginHost,
    metrics: Option<&PipelineMetrics>,
) -> Result<(Vec<Stage>, bool), BuildError> {
    let with_state = metrics.is_some();
    let plugins = load_plugins(spec, host)?;
    let uses_state = plugins.iter().any(|p| p.uses_state);
    // The state store, when a stage needs one (or the pipeline does).
    let store = if with_state {
        open_store(spec, uses_state)?
    } else {
        None
    };
    let stages = stages_with(spec, plugins, store, metrics)?;
    Ok((stages, uses_state))
}

/// Stages of `spec` whose state lives in `store` (a task's own file, for a
/// partitioned pipeline), reporting into `metrics` (the pipeline's, shared
/// by its tasks).
pub fn build_stages_in(
    spec: &PipelineSpec,
    host: &PluginHost,
    store: Option<Arc<StateStore>>,
    metrics: &PipelineMetrics,
) -> Result<Vec<Stage>, BuildError> {
    let plugins = load_plugins(spec, host)?;
    stages_with(spec, plugins, store, Some(metrics))
}

/// Every stage's plugin, loaded (compiled once per version and process).
pub fn load_plugins(
    spec: &PipelineSpec,
    host: &PluginHost,
) -> Result<Vec<Arc<crate::plugin::Plugin>>, BuildError> {
    let mut plugins = Vec::with_capacity(spec.stages.len());
    for stage in &spec.stages {
        let plugin = host
            .load_as(&stage.spec.plugin, stage.spec.plugin_label.as_deref())
            .map_err(|source| BuildError::Plugin {
                file: spec.file.clone(),
                at: stage.plugin_at,
                stage: stage.spec.name.clone(),
                source,
            })?;
        plugins.push(plugin);
    }
    Ok(plugins)
}

fn stages_with(
    spec: &PipelineSpec,
    plugins: Vec<Arc<crate::plugin::Plugin>>,
    store: Option<Arc<StateStore>>,
    metrics: Option<&PipelineMetrics>,
) -> Result<Vec<Stage>, BuildError> {
    let mut stages = Vec::with_capacity(spec.stages.len());
    for (stage, plugin) in spec.stages.iter().zip(plugins) {
        let s = &stage.spec;
        let telemetry = match metrics {
            // By name: a task runs a part of the pipeline's stages.
            Some(m) => m
                .stages
                .iter()
                .find(|series| *series.name == *s.name)
                .cloned()
                .unwrap_or_else(|| StageSeries::detached(&spec.name, &s.name)),
            None => StageSeries::detached(&spec.name, &s.name),
        };
        let settings = StageSettings {
            pipeline: spec.name.clone(),
            name: s.name.clone(),
            plugin_path: s.plugin.clone(),
            interval_ms: spec.interval.as_millis() as u64,
            config: s.config.clone(),
            limits: crate::plugin::Limits {
                memory: s.memory_limit,
                time: s.time_limit,
            },
            grants: Grants {
                clock: s.grants.contains(&Grant::Clock),
                random: s.grants.contains(&Grant::Random),
            },
            on_error: s.on_error,
            retries: s.retries,
            recycle_after: s.recycle_after,
            release_idle: spec.release_idle,
            dead_letter: DeadLetter {
                dir: s.dead_letter.clone(),
                budget: spec.dead_letter_budget.clone(),
            },
            state: store
                .as_ref()
                .map(|store| StageState::new(store.clone(), &s.name)),
            state_limit: s.state_limit,
            telemetry,
        };
        let mut built = Stage::new(settings, plugin).map_err(|error| BuildError::Init {
            error,
            file: spec.file.clone(),
            at: stage.at,
        })?;
        if let (Some(window), Some(store)) = (s.window, &store) {
            let state = StageState::window(store.clone(), &s.name);
            let window = Window::open(window, spec.interval.as_millis() as u64, state).map_err(
                |source| BuildError::State {
                    source,
                    file: spec.file.clone(),
                },
            )?;
            built = built.with_window(window);
        }
        stages.push(built);
    }
    Ok(stages)
}

/// The pipeline's state file, when a stage's plugin uses state (`needed`)
/// or the pipeline keeps one anyway ([`PipelineSpec::needs_state_file`]).
fn open_store(spec: &PipelineSpec, needed: bool) -> Result<Option<Arc<StateStore>>, BuildError> {
    if !(needed || spec.needs_state_file()) {
        return Ok(None);
    }
    StateStore::open(&spec.state_dir, &spec.name)
        .map(Some)
        .map_err(|source| BuildError::State {
            source,
            file: spec.file.clone(),
        })
}

/// Sources built from a resolved pipeline (no side effects: they start
/// reading only when run). Errors point at the source's table.
pub fn build_sources(spec: &PipelineSpec) -> Result<Vec<Box<dyn Source>>, BuildError> {
    spec.sources
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let cx = SourceContext {
                pipeline: &spec.name,
                index,
                dead_letter: DeadLetter {
                    dir: s.dead_letter.clone(),
                    budget: spec.dead_letter_budget.clone(),
                },
                wal_dir: spec.wal_dir(index),
                ingest: spec
                    .ingest
                    .clone()
                    .map(|points| (points, spec.ingest_key())),
            };
            s.value
                .build(&cx)
                .map_err(|error| BuildError::Config(spec.error_at(s.at, error.to_string())))
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
    delivery: Delivery,
    metrics: Arc<PipelineMetrics>,
    exactly_once: bool,
    cancel: Cancel,
}

impl Pipeline {
    /// Loads the plugins, initialises the stages, sets up sources and
    /// sinks, and recovers from the last checkpoint.
    pub fn build(spec: &PipelineSpec, host: &PluginHost) -> Result<Self, BuildError> {
        let metrics = PipelineMetrics::new(shape_of(spec));
        let stages = build_stages(spec, host, &metrics)?;
        let sources = build_sources(spec)?;
        let sinks = spec
            .sinks
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let dead_letter = DeadLetter {
                    dir: s.dead_letter.clone(),
                    budget: spec.dead_letter_budget.clone(),
                };
                s.value.build(&SinkContext {
                    pipeline: &spec.name,
                    index,
                    exactly_once: spec.exactly_once(),
                    dead_letter: &dead_letter,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BuildError::Sink {
                error,
                file: spec.file.clone(),
            })?;
        let store = match stages
            .iter()
            .find_map(|s| s.settings().state.as_ref().map(|s| s.store().clone()))
        {
            Some(store) => Some(store),
            None => open_store(spec, false)?,
        };
        if let Some(store) = &store {
            let _ = metrics.state_file.set(store.path().to_path_buf());
        }
        Self::assemble(spec, stages, sources, sinks, store, metrics)
    }

    /// A pipeline from parts built elsewhere (a task of a partitioned
    /// pipeline brings its own source, sinks and state file):
    /// recovers from the last checkpoint in `store`.
    pub fn assemble(
        spec: &PipelineSpec,
        stages: Vec<Stage>,
        mut sources: Vec<Box<dyn Source>>,
        sinks: Vec<Box<dyn crate::sink::Sink>>,
        store: Option<Arc<StateStore>>,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, BuildError> {
        let delivery =
            Delivery::recover(&spec.name, store, spec.exactly_once(), &mut sources, sinks)
                .map_err(|e| match e {
                    DeliveryError::Recover(error) => BuildError::Sink {
                        error,
                        file: spec.file.clone(),
                    },
                    DeliveryError::Resume(source) => BuildError::State {
                        source,
                        file: spec.file.clone(),
                    },
                    other => BuildError::State {
                        source: StateError {
                            path: spec.state_dir.clone(),
                            message: other.to_string(),
                        },
                        file: spec.file.clone(),
                    },
                })?
                .observed(metrics.clone());
        Ok(Pipeline {
            name: spec.name.clone(),
            interval: spec.interval,
            max_batch_records: spec.max_batch_records,
            max_batch_bytes: spec.max_batch_bytes,
            queue_capacity: spec.queue_capacity,
            sources,
            stages,
            delivery,
            metrics,
            exactly_once: spec.exactly_once(),
            cancel: Cancel::default(),
        })
    }

    /// Leaves its sinks out of the figures: they are the engine's own (a
    /// task's repartition topic), not the pipeline's.
    pub fn without_sink_figures(mut self) -> Self {
        self.delivery = self.delivery.without_sink_figures();
        self
    }

    /// Leaves its sources out of the figures: they are the engine's own (a
    /// task reading a repartition topic), not the pipeline's input.
    pub fn without_source_figures(mut self) -> Self {
        self.delivery = self.delivery.without_source_figures();
        self
    }

    /// Shares `cancel` with its owner (a task takes its partitioned
    /// pipeline's, so one signal cancels every task).
    pub fn cancelled_by(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// What cancels its run (see [`Cancel`]).
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
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

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
