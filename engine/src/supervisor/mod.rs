//! The running pipelines of a process, keyed by tenant and name: starting
//! one (build it, give it a thread), stopping one (its sources stop, the
//! batches in flight finish and are checkpointed), removing one, finding a
//! stage for a new plugin version, and hearing when one ends. `sluice run`
//! starts a fixed set and waits for them; `sluice serve` adds and removes
//! them as tenants ask. What a pipeline does while it runs is `pipeline`'s
//! business; who may ask for what is the control API's.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::PipelineSpec;
use crate::pipeline::{BuildError, Cancel, Pipeline, PooledRun, Pools, RunSummary};
use crate::plugin::PluginHost;
use crate::reload::StageEntry;
#[cfg(feature = "kafka")]
use crate::tasks::Partitioned;
use crate::tasks::TaskBoard;
use crate::telemetry::PipelineMetrics;

/// A pipeline's identity in a process: its tenant (under `sluice serve`)
/// and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineKey {
    /// The tenant, or `None` for `sluice run`'s pipelines.
    pub tenant: Option<String>,
    /// The pipeline's name.
    pub name: String,
}

impl PipelineKey {
    /// The key of `spec`.
    pub fn of(spec: &PipelineSpec) -> Self {
        PipelineKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        }
    }
}

impl std::fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tenant {
            Some(tenant) => write!(f, "{tenant}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Processing batches.
    Running,
    /// Asked to stop; finishing the batches in flight.
    Stopping,
    /// Ended on its own (its sources ended) or stopped.
    Finished,
    /// Ended with this error.
    Failed(String),
}

/// How a pipeline's run ended.
pub type Outcome = Result<RunSummary, String>;

/// Called with each pipeline that ends, and how.
pub type OnEnd = Box<dyn Fn(&PipelineKey, &Outcome) + Send + Sync>;

/// Could not start a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// One with the same key is already there.
    #[error("pipeline `{0}` is already running in this process")]
    Duplicate(PipelineKey),
    /// It could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Its thread could not be started.
    #[error("cannot start a thread for pipeline `{0}`: {1}")]
    Thread(PipelineKey, std::io::Error),
}

/// Where a run's outcome lands, for whoever waits for it.
#[derive(Default)]
struct OutcomeSlot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl OutcomeSlot {
    fn set(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap() = Some(outcome);
        self.ready.notify_all();
    }

    fn wait(&self) -> Outcome {
        let mut outcome = self.outcome.lock().unwrap();
        loop {
            if let Some(outcome) = &*outcome {
                return outcome.clone();
            }
            outcome = self.ready.wait(outcome).unwrap();
        }
    }
}

/// How pipelines get their threads.
#[derive(Clone)]
pub enum Executor {
    /// A thread per stage and one for the sinks (`sluice run`).
    Threads,
    /// Shared worker pools, fair across tenants (`sluice serve`).
    Pools(Pools),
}

/// A pipeline ready to launch: one chain of stages, or a task per
/// assigned Kafka partition (`tasks = "per-partition"`).
pub enum Runnable {
    /// One chain of stages.
    Chain(Pipeline),
    /// Tasks per partition.
    #[cfg(feature = "kafka")]
    Tasks(Partitioned),
}

impl Runnable {
    /// Builds `spec` as it asks to run.
    pub fn build(spec: &PipelineSpec, host: &Arc<PluginHost>) -> Result<Self, BuildError> {
        // Without the `kafka` feature the config checks refuse a Kafka
        // source, and so `tasks = "per-partition"`.
        #[cfg(feature = "kafka")]
        if spec.per_partition() {
            return Ok(Runnable::Tasks(Partitioned::build(spec, host.clone())?));
        }
        Ok(Runnable::Chain(Pipeline::build(spec, host)?))
    }

    /// Its stages, for hot reload and status (a partitioned pipeline's
    /// stages belong to its tasks, which come and go: none).
    pub fn stage_entries(&self) -> Vec<StageEntry> {
        match self {
            Runnable::Chain(pipeline) => pipeline.stage_entries(),
            #[cfg(feature = "kafka")]
            Runnable::Tasks(_) => Vec::new(),
        }
    }

    fn canceller(&self) -> Cancel {
        match self {
            Runnable::Chain(pipeline) => pipeline.canceller(),
            #[cfg(feature = "kafka")]
            Runnable::Tasks(tasks) => tasks.canceller(),
        }
    }

    fn metrics(&self) -> Arc<PipelineMetrics> {
        match self {
            Runnable::Chain(pipeline) => pipeline.metrics(),
            #[cfg(feature = "kafka")]
            Runnable::Tasks(tasks) => tasks.metrics(),
        }
    }
}

impl From<Pipeline> for Runnable {
    fn from(pipeline: Pipeline) -> Self {
        Runnable::Chain(pipeline)
    }
}

struct Running {
    stages: Vec<StageEntry>,
    /// A partitioned pipeline's tasks in this process.
    tasks: Option<Arc<TaskBoard>>,
    metrics: Arc<PipelineMetrics>,
    stop: watch::Sender<bool>,
    cancel: Cancel,
    state: Arc<Mutex<RunState>>,
    outcome: Arc<OutcomeSlot>,
    /// A pooled run's jobs, alive while it runs.
    _pooled: Option<PooledRun>,
}

/// What a caller sees of a pipeline.
#[derive(Clone)]
pub struct PipelineInfo {
    /// Its key.
    pub key: PipelineKey,
    /// Where it is in its life.
    pub state: RunState,
    /// Its stages (version state, for status and hot reload).
    pub stages: Vec<StageEntry>,
    /// Its figures.
    pub metrics: Arc<PipelineMetrics>,
    /// A partitioned pipeline's tasks in this process.
    pub tasks: Option<Arc<TaskBoard>>,
}

/// The running pipelines.
pub struct Supervisor {
    host: Arc<PluginHost>,
    runtime: Handle,
    executor: Executor,
    running: Mutex<BTreeMap<PipelineKey, Running>>,
    on_end: Option<Arc<OnEnd>>,
    /// `stop_all` was called: a pipeline launched later starts stopped.
    stopping: std::sync::atomic::AtomicBool,
}

impl Supervisor {
    /// A supervisor whose pipelines load plugins with `host` and run their
    /// sources on `runtime`; `on_end` hears of each pipeline that ends.
    pub fn new(host: Arc<PluginHost>, runtime: Handle, on_end: Option<OnEnd>) -> Arc<Self> {
        Self::with_executor(host, runtime, Executor::Threads, on_end)
    }

    /// A supervisor whose pipelines run on `executor`.
    pub fn with_executor(
        host: Arc<PluginHost>,
        runtime: Handle,
        executor: Executor,
        on_end: Option<OnEnd>,
    ) -> Arc<Self> {
        Arc::new(Supervisor {
            host,
            runtime,
            executor,
            running: Mutex::new(BTreeMap::new()),
            on_end: on_end.map(Arc::new),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The plugin host.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Builds `spec` (slow: it loads plugins and opens the state file; call
    /// it off the async runtime) and runs it on a thread of its own.
    pub fn start(&self, spec: &PipelineSpec) -> Result<(), StartError> {
        let key = PipelineKey::of(spec);
        if self.running.lock().unwrap().contains_key(&key) {
            return Err(StartError::Duplicate(key));
        }
        let pipeline = {
            let _guard = self.runtime.enter();
            Runnable::build(spec, &self.host)?
        };
        self.launch(key, pipeline)
    }

    /// Runs an already built pipeline.
    pub fn launch(
        &self,
        key: PipelineKey,
        pipeline: impl Into<Runnable>,
    ) -> Result<(), StartError> {
        let pipeline = pipeline.into();
        let mut running = self.running.lock().unwrap();
        if running.contains_key(&key) {
            return Err(StartError::Duplicate(key));
        }
        // Under the lock `stop_all` takes too, so none is missed.
        let stopped = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let (stop, stop_rx) = watch::channel(stopped);
        let state = Arc::new(Mutex::new(if stopped {
            RunState::Stopping
        } else {
            RunState::Running
        }));
        let slot = Arc::new(OutcomeSlot::default());
        let stages = pipeline.stage_entries();
        let metrics = pipeline.metrics();
        let cancel = pipeline.canceller();
        let tasks = match &pipeline {
            #[cfg(feature = "kafka")]
            Runnable::Tasks(tasks) => Some(tasks.board()),
            Runnable::Chain(_) => None,
        };
        let finish: Box<dyn FnOnce(Outcome) + Send> = {
            let (state, slot, on_end, key) = (
                state.clone(),
                slot.clone(),
                self.on_end.clone(),
                key.clone(),
            );
            let metrics = metrics.clone();
            Box::new(move |outcome: Outcome| {
                if let Err(error) = &outcome {
                    crate::telemetry::events::Failed {
                        metrics: &metrics,
                        error,
                    }
                    .emit();
                }
                *state.lock().unwrap() = match &outcome {
                    Ok(_) => RunState::Finished,
                    Err(e) => RunState::Failed(e.clone()),
                };
                if let Some(on_end) = on_end {
                    on_end(&key, &outcome);
                }
                slot.set(outcome);
            })
        };
        let pooled = match (pipeline, &self.executor) {
            (Runnable::Chain(pipeline), Executor::Threads) => {
                let runtime = self.runtime.clone();
                let thread_key = key.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-pipeline-{}", key.name))
                    .spawn(move || {
                        // A bug that panics ends this pipeline only, as a
                        // failure.
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                pipeline.run(&runtime, stop_rx)
                            }));
                        finish(match outcome {
                            Ok(result) => result.map_err(|e| e.to_string()),
                            Err(_) => Err(format!(
                                "pipeline `{thread_key}`: a pipeline thread panicked"
                            )),
                        });
                    })
                    .map_err(|e| StartError::Thread(key.clone(), e))?;
                None
            }
            (Runnable::Chain(pipeline), Executor::Pools(pools)) => Some(pipeline.start_pooled(
                &self.runtime,
                stop_rx,
                pools,
                key.tenant.as_deref(),
                Box::new(move |result| finish(result.map_err(|e| e.to_string()))),
            )),
            #[cfg(feature = "kafka")]
            (Runnable::Tasks(tasks), executor) => {
                // The group member's loop has a thread of its own; its tasks
                // run on threads or on the pools like any pipeline.
                let (runtime, executor, tenant) =
                    (self.runtime.clone(), executor.clone(), key.tenant.clone());
                let thread_key = key.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-member-{}", key.name))
                    .spawn(move || {
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                tasks.run(&runtime, stop_rx, executor, tenant)
                            }));
                        finish(match outcome {
                            Ok(result) => result.map_err(|e| e.to_string()),
                            Err(_) => Err(format!(
                                "pipeline `{thread_key}`: its group member's thread panicked"
                            )),
                        });
                    })
                    .map_err(|e| StartError::Thread(key.clone(), e))?;
                None
            }
        };
        running.insert(
            key,
            Running {
                stages,
                tasks,
                metrics,
                stop,
                cancel,
                state,
                outcome: slot,
                _pooled: pooled,
            },
        );
        Ok(())
    }

    /// Asks `key` to stop (its sources stop reading; what they read is
    /// processed and checkpointed) and waits until it has. Returns how its
    /// run ended, or `None` if there is no such pipeline. It stays listed
    /// (stopped) until removed.
    pub fn stop(&self, key: &PipelineKey) -> Option<Outcome> {
        Some(self.ask_to_stop(key, false)?.0.wait())
    }

    /// Tells `key` to stop, first cancelling its run if `cancel`; the slot
    /// says when it has.
    fn ask_to_stop(&self, key: &PipelineKey, cancel: bool) -> Option<(Arc<OutcomeSlot>, Cancel)> {
        let running = self.running.lock().unwrap();
        let entry = running.get(key)?;
        if cancel {
            entry.cancel.cancel();
        }
        let _ = entry.stop.send(true);
        let mut state = entry.state.lock().unwrap();
        if *state == RunState::Running {
            *state = RunState::Stopping;
        }
        drop(state);
        Some((entry.outcome.clone(), entry.cancel.clone()))
    }

    /// Stops `key` and marks it failed with `reason` (a quota it went past,
    /// say). Returns `None` if there is no such pipeline.
    pub fn fail(&self, key: &PipelineKey, reason: String) -> Option<()> {
        let _ = self.stop(key)?;
        let running = self.running.lock().unwrap();
        let entry = running.get(key)?;
        *entry.state.lock().unwrap() = RunState::Failed(reason);
        Some(())
    }

    /// Stops `key` if it runs, and forgets it.
    pub fn remove(&self, key: &PipelineKey) -> Option<Outcome> {
        let outcome = self.stop(key);
        self.running.lock().unwrap().remove(key);
        outcome
    }

    /// Ends every pipeline of `keys` at once, dropping what they hold
    /// unprocessed (they are being deleted with their state: see
    /// [`Cancel`]), and forgets them. A plugin call under way ends within
    /// its time limit; nothing else waits for a plugin.
    pub fn discard(&self, keys: &[PipelineKey]) {
        let slots: Vec<_> = keys
            .iter()
            .filter_map(|key| Some((key, self.ask_to_stop(key, true)?)))
            .collect();
        for (key, (slot, cancel)) in slots {
            let _ = slot.wait();
            let (batches, records) = cancel.dropped_so_far();
            if batches > 0 {
                tracing::info!(
                    pipeline = %key,
                    "discarded: {batches} batches ({records} records) it held were dropped unprocessed"
                );
            }
        }
        let mut running = self.running.lock().unwrap();
        for key in keys {
            running.remove(key);
        }
    }

    /// Asks every pipeline to stop, without waiting.
    pub fn stop_all(&self) {
        let running = self.running.lock().unwrap();
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for entry in running.values() {
            let _ = entry.stop.send(true);
        }
    }

    /// Waits for every pipeline to end; returns how each ended.
    pub fn wait_all(&self) -> Vec<(PipelineKey, Outcome)> {
        let slots: Vec<(PipelineKey, Arc<OutcomeSlot>)> = self
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|(key, entry)| (key.clone(), entry.outcome.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(key, slot)| (key, slot.wait()))
            .collect()
    }

    /// Where `key` is in its life.
    pub fn state(&self, key: &PipelineKey) -> Option<RunState> {
        let running = self.running.lock().unwrap();
        Some(running.get(key)?.state.lock().unwrap().clone())
    }

    /// Every pipeline of `tenant` (every pipeline at all with `None` under
    /// `sluice run`, where no pipeline has a tenant).
    pub fn pipelines(&self, tenant: Option<&str>) -> Vec<PipelineInfo> {
        self.running
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.tenant.as_deref() == tenant)
            .map(|(key, entry)| PipelineInfo {
                key: key.clone(),
                state: entry.state.lock().unwrap().clone(),
                stages: entry.stages.clone(),
                metrics: entry.metrics.clone(),
                tasks: entry.tasks.clone(),
            })
            .collect()
    }

    /// Every pipeline, of every tenant.
    pub fn all(&self) -> Vec<PipelineInfo> {
        self.running
            .lock()
            .unwrap()
            .iter()
            .map(|(key, entry)| PipelineInfo {
                key: key.clone(),
                state: entry.state.lock().unwrap().clone(),
                stages: entry.stages.clone(),
                metrics: entry.metrics.clone(),
                tasks: entry.tasks.clone(),
            })
            .collect()
    }

    /// One pipeline.
    pub fn pipeline(&self, key: &PipelineKey) -> Option<PipelineInfo> {
        let running = self.running.lock().unwrap();
        let entry = running.get(key)?;
        Some(PipelineInfo {
            key: key.clone(),
            state: entry.state.lock().unwrap().clone(),
            stages: entry.stages.clone(),
            metrics: entry.metrics.clone(),
            tasks: entry.tasks.clone(),
        })
    }

    /// Stage `stage` of pipeline `key`.
    pub fn stage(&self, key: &PipelineKey, stage: &str) -> Option<StageEntry> {
        let running = self.running.lock().unwrap();
        running
            .get(key)?
            .stages
            .iter()
            .find(|e| e.settings.name == stage)
            .cloned()
    }
}
