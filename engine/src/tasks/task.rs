//! One task: a part of the pipeline over one partition, built as a
//! pipeline of its own — fresh stage instances, its own batcher, delivery
//! and state file (`<task>.redb`) — whose source is what the process's
//! consumer routes to it ([`TaskSource`]). Here: preparing a task (its
//! state file opened, its stages built, where its input starts), starting it
//! on threads or the worker pools, and stopping it gracefully.
//!
//! Not here: which tasks exist (`member`, from the group's assignment).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::board::{Phase, RestoreProgress, TaskBoard};
use super::changelog::{self, RestoreError};
use super::topics::{self, Kind};
use super::topology::{Output, Topology, partition_of};
use super::transaction::{self, GroupMetadata, TaskOutput, TaskTransaction};
use crate::batch::Records;
use crate::config::PipelineSpec;
use crate::pipeline::{
    BuildError, Cancel, Pipeline, PooledRun, RunError, RunSummary, build_stages_in, load_plugins,
};
use crate::plugin::PluginHost;
use crate::sink::KafkaSinkConfig;
use crate::sink::{Sink, SinkConfig, SinkContext};
use crate::source::{Emitter, Source, SourceConfig, SourceTask};
use crate::stage::DeadLetter;
use crate::state::{StateError, StateStore};
use crate::supervisor::Executor;
use crate::telemetry::PipelineMetrics;

/// Chunks waiting between a task's feeder and the task. A task that falls
/// behind holds its feeder on a full feed, and librdkafka stops fetching
/// its partition once that partition's own queue is full: nothing is
/// paused, dropped or fetched twice, and the other tasks go on.
pub const FEED_CHUNKS: usize = 4;

/// Messages of one partition on their way to its task.
pub struct Feed {
    /// The messages, as records.
    pub records: Records,
    /// The offset after the last of them.
    pub next: i64,
}

/// What every task of a process shares: the pipeline and where it runs.
pub struct TaskContext {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Its parts.
    pub topology: Topology,
    /// Loads (compiled once) plugins.
    pub host: Arc<PluginHost>,
    /// The runtime sources and sinks run on.
    pub runtime: Handle,
    /// Threads or worker pools.
    pub executor: Executor,
    /// The figures every task adds to.
    pub metrics: Arc<PipelineMetrics>,
    /// Where stateful tasks' changelogs are.
    pub changelog: ChangelogSetup,
    /// The consumer group's id.
    pub group_id: String,
    /// The group's metadata, for transactions' offsets (kept current by
    /// the member).
    pub group: Arc<GroupMetadata>,
    /// The input's partition count, which every repartition topic has
    /// (known when the pipeline has any, as they are made before it starts,
    /// or standbys, which follow every partition).
    pub partitions: Option<i32>,
    /// What status shows of this process's tasks (a task's preparation
    /// reports its restore there).
    pub board: Arc<TaskBoard>,
    /// Cancels every task's run (the pipeline is being deleted).
    pub cancel: Cancel,
}

/// The changelogs of a pipeline's stateful tasks (see `changelog`).
pub struct ChangelogSetup {
    /// Settings for their producers and restore consumers: the source's
    /// brokers and options.
    pub config: rdkafka::ClientConfig,
    /// Per part, whether its topics exist (checked or made once per
    /// process, by the part's first stateful task to start).
    pub ready: Vec<std::sync::OnceLock<Result<(), String>>>,
}

/// The source of a task: the messages the consumer routes to it. It
/// tells the consumer which offsets every sink has acknowledged.
pub struct TaskSource {
    topic: String,
    partition: i32,
    feed: mpsc::Receiver<Feed>,
    acked: Arc<AtomicI64>,
}

/// The position a task's batches carry, as the `kafka` source writes it:
/// `topic:partition@next-offset`.
pub fn position(topic: &str, partition: i32, next: i64) -> String {
    format!("{topic}:{partition}@{next}")
}

/// The topic, partition and offset in a position [`position`] wrote.
pub fn parse_position(position: &str) -> Option<(&str, i32, i64)> {
    let (at, next) = position.rsplit_once('@')?;
    let (topic, partition) = at.rsplit_once(':')?;
    Some((topic, partition.parse().ok()?, next.parse().ok()?))
}

/// The offset in a position [`position`] wrote.
pub fn offset_of(position: &str) -> Option<i64> {
    parse_position(position).map(|(_, _, offset)| offset)
}

impl Source for TaskSource {
    fn describe(&self) -> String {
        format!("kafka {}[{}]", self.topic, self.partition)
    }

    fn resume(&mut self, _: &str) -> Result<bool, String> {
        // The consumer starts the partition at the checkpoint's offset.
        Ok(true)
    }

    fn run(mut self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let mut acked = emitter.acked();
            let note = |acked: &watch::Receiver<Option<String>>, into: &AtomicI64| {
                if let Some(offset) = acked.borrow().as_deref().and_then(offset_of) {
                    into.fetch_max(offset, Ordering::AcqRel);
                }
            };
            loop {
                tokio::select! {
                    feed = self.feed.recv() => {
                        let Some(feed) = feed else { break };
                        let at = position(&self.topic, self.partition, feed.next);
                        if emitter.emit(feed.records, Some(at)).await.is_err() {
                            break;
                        }
                    }
                    changed = acked.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        note(&acked, &self.acked);
                    }
                    () = emitter.stopped() => break,
                }
            }
            // The last batches' acknowledgements, until delivery is done.
            drop(emitter);
            while acked.changed().await.is_ok() {
                note(&acked, &self.acked);
            }
            note(&acked, &self.acked);
            Ok(())
        })
    }
}

/// A task built and ready to start.
pub struct Prepared {
    /// Its name.
    pub name: String,
    pipeline: Pipeline,
    feed: mpsc::Sender<Feed>,
    acked: Arc<AtomicI64>,
    /// Where its checkpoint says its input starts (`None`: no checkpoint;
    /// the group's committed offset, or `start` when it has none).
    pub start: Option<i64>,
    /// Whether a stage keeps state (in the task's state file).
    pub stateful: bool,
    /// Whether that state has changelogs (then it was restored from them).
    pub changelogged: bool,
    /// Exactly-once: turns true once the task has lost its partition.
    lost: Option<Arc<AtomicBool>>,
}

/// The pipeline's file for one task: its name, its part's stages, a
/// dead-letter folder of its own per stage.
pub(super) fn task_spec(cx: &TaskContext, part: usize, partition: i32) -> PipelineSpec {
    let name = cx.topology.task_name(part, partition);
    let mut spec = cx.spec.clone();
    spec.stages = cx.spec.stages[cx.topology.parts[part].stages.clone()].to_vec();
    for stage in &mut spec.stages {
        stage.spec.dead_letter = stage.spec.dead_letter.join(&name);
    }
    for sink in &mut spec.sinks {
        sink.dead_letter = sink.dead_letter.join(&name);
    }
    spec.name = name;
    spec
}

/// Builds the task of `part` over `partition`: its state file, stages and
/// sinks, and where its checkpoint says its input starts. `cancel` turning true (the partition
/// was taken away meanwhile) stops it early.
pub fn prepare(
    cx: &TaskContext,
    part: usize,
    partition: i32,
    cancel: &AtomicBool,
) -> Result<Prepared, BuildError> {
    let spec = task_spec(cx, part, partition);
    let _guard = cx.runtime.enter();
    let plugins = load_plugins(&spec, &cx.host)?;
    let stateful =
        plugins.iter().any(|p| p.uses_state) || spec.stages.iter().any(|s| s.spec.window.is_some());
    let state_error = |source: StateError| BuildError::State {
        source,
        file: spec.file.clone(),
    };
    if cancel.load(Ordering::Acquire) {
        return Err(cancelled(&spec));
    }
    // Exactly-once: fence the partition's previous owner (aborting what it
    // left open) before reading the changelog or the group's offset.
    let transaction = match spec.exactly_once() {
        true => Some(Arc::new(
            TaskTransaction::start(
                &cx.changelog.config,
                transactional_id(cx, &spec.name),
                cx.group.clone(),
            )
            .map_err(|message| {
                state_error(StateError {
                    path: StateStore::file(&spec.state_dir, &spec.name),
                    message,
                })
            })?,
        )),
        false => None,
    };
    let store = if stateful || spec.needs_state_file() {
        let store = StateStore::open(&spec.state_dir, &spec.name).map_err(state_error)?;
        Some(match transaction {
            Some(_) => {
                keep_only_committed_state(cx, &spec, part, partition, store).map_err(state_error)?
            }
            None => store,
        })
    } else {
        None
    };
    if cancel.load(Ordering::Acquire) {
        return Err(cancelled(&spec));
    }
    let changelogged = match &store {
        Some(store) => changelogs(
            cx,
            &spec,
            &plugins,
            store,
            part,
            partition,
            cancel,
            transaction.clone(),
        )?,
        None => false,
    };
    // Exactly-once: the group's committed offset is where the committed
    // state ends, so the task starts there.
    let start = match (&store, &transaction) {
        (_, Some(_)) => None,
        (Some(store), None) => store
            .checkpoint()
            .map_err(state_error)?
            .and_then(|c| c.positions.get(&0).and_then(|p| offset_of(p))),
        (None, None) => None,
    };
    let stages = build_stages_in(&spec, &cx.host, store.clone(), &cx.metrics)?;
    let topic = cx.topology.parts[part].topic.clone();
    let (feed, rx) = mpsc::channel(FEED_CHUNKS);
    let acked = Arc::new(AtomicI64::new(-1));
    let source: Box<dyn Source> = Box::new(TaskSource {
        topic,
        partition,
        feed: rx,
        acked: acked.clone(),
    });
    let sinks = match &transaction {
        Some(transaction) => vec![output(cx, part, transaction.clone())],
        None => sinks(cx, &spec, part)?,
    };
    let mut pipeline = Pipeline::assemble(
        &spec,
        stages,
        vec![source],
        sinks,
        store,
        cx.metrics.clone(),
    )?
    .cancelled_by(cx.cancel.clone());
    if cx.topology.parts[part].output != Output::Sinks {
        pipeline = pipeline.without_sink_figures();
    }
    if cx.topology.parts[part].first_stage.is_some() {
        pipeline = pipeline.without_source_figures();
    }
    Ok(Prepared {
        name: spec.name.clone(),
        pipeline,
        feed,
        acked,
        start,
        stateful,
        changelogged,
        lost: transaction.as_ref().map(|t| t.lost()),
    })
}

/// The changelog topics of a task's stateful stages (see
/// `changelog::topics`), whose plugins are `plugins`.
pub(super) fn changelog_topics(
    cx: &TaskContext,
    spec: &PipelineSpec,
    plugins: &[Arc<crate::plugin::Plugin>],
) -> changelog::Topics {
    let stateful: Vec<String> = spec
        .stages
        .iter()
        .zip(plugins)
        .filter(|(_, p)| p.uses_state)
        .map(|(s, _)| s.spec.name.clone())
        .collect();
    let windowed: Vec<String> = spec
        .stages
        .iter()
        .filter(|s| s.spec.window.is_some())
        .map(|s| s.spec.name.clone())
        .collect();
    changelog::topics(&cx.spec.name, &stateful, &windowed)
}

/// Restores the task's stateful stages from their changelogs (making the
/// topics first, once per process) and has `store` write to them from now
/// on; false when no stage keeps state.
fn changelogs(
    cx: &TaskContext,
    spec: &PipelineSpec,
    plugins: &[Arc<crate::plugin::Plugin>],
    store: &Arc<StateStore>,
    part: usize,
    partition: i32,
    cancel: &AtomicBool,
    transaction: Option<Arc<TaskTransaction>>,
) -> Result<bool, BuildError> {
    let topics = changelog_topics(cx, spec, plugins);
    if topics.is_empty() {
        return Ok(false);
    }
    let failed = |message: String| BuildError::State {
        source: StateError {
            path: store.path().to_path_buf(),
            message,
        },
        file: spec.file.clone(),
    };
    let input = &cx.topology.parts[part].topic;
    let setup = &cx.changelog;
    setup.ready[part]
        .get_or_init(|| {
            topics::ensure(
                &setup.config,
                &cx.runtime,
                input,
                Kind::Changelog,
                topics.values(),
            )
            .map(|_| ())
        })
        .clone()
        .map_err(failed)?;
    let task = &spec.name;
    for (table, topic) in &topics {
        if cancel.load(Ordering::Acquire) {
            return Err(cancelled(spec));
        }
        cx.board
            .update(input, partition, |t| t.phase = Phase::Restoring);
        let started = std::time::Instant::now();
        let mut log = changelog::every(changelog::RESTORE_REPORT, |p| {
            tracing::info!(
                "task {task}: restoring `{table}` from {}: offset {}{}, {} record(s), {} so far",
                p.changelog,
                p.at,
                p.end.map_or(String::new(), |end| format!(" of ~{end}")),
                p.records,
                megabytes(p.bytes)
            );
        });
        let mut progress = |p: &RestoreProgress| {
            cx.board
                .update(input, partition, |t| t.restore = Some(p.clone()));
            log(p);
        };
        let outcome = changelog::restore(
            &setup.config,
            store,
            table,
            topic,
            partition,
            cancel,
            &mut progress,
        );
        cx.board.update(input, partition, |t| {
            t.phase = Phase::Starting;
            t.restore = None;
        });
        let (restored, incremental) = match outcome {
            Ok(done) => done,
            Err(RestoreError::Cancelled) => return Err(cancelled(spec)),
            Err(RestoreError::Failed(m)) => {
                return Err(failed(format!("restoring from {topic}[{partition}]: {m}")));
            }
        };
        if restored.records > 0 || incremental {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                "task {task}: restored {} record(s) ({}) of `{table}` from {topic}[{partition}], \
                 offsets {}..{} ({}), in {seconds:.2} s ({:.0} records/s, {}/s)",
                restored.records,
                megabytes(restored.bytes),
                restored.from,
                restored.at,
                if incremental {
                    "the tail after the local state"
                } else {
                    "from its start: no local state"
                },
                restored.records as f64 / seconds.max(1e-3),
                megabytes((restored.bytes as f64 / seconds.max(1e-3)) as u64)
            );
        }
    }
    let writer = changelog::TaskChangelog::new(&setup.config, partition, topics, transaction)
        .map_err(failed)?;
    store.set_changelog(Arc::new(writer));
    Ok(true)
}

/// `bytes` as megabytes, one decimal: `12.3 MB`.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The transactional id of task `task`: `sluice-<group>-<task>`, the same
/// in every process, so a task's new owner fences its old one.
fn transactional_id(cx: &TaskContext, task: &str) -> String {
    format!("sluice-{}-{task}", cx.group_id)
}

/// Exactly-once: `store`, the task's local state file, if it matches what
/// Kafka has committed — it holds no checkpoint, or the task last stopped
/// cleanly here (every batch committed; see `transaction::clean`) at an
/// offset the group has not passed; otherwise the file is deleted and
/// opened anew, empty, for the changelog alone to rebuild. Either way the
/// clean mark goes: from now on the file may run ahead of the transactions.
fn keep_only_committed_state(
    cx: &TaskContext,
    spec: &PipelineSpec,
    part: usize,
    partition: i32,
    store: Arc<StateStore>,
) -> Result<Arc<StateStore>, StateError> {
    let path = store.path().to_path_buf();
    let mark = transaction::clean(&path);
    let fail = |message: String| StateError {
        path: path.clone(),
        message,
    };
    let local = store
        .checkpoint()?
        .and_then(|c| c.positions.get(&0).and_then(|p| offset_of(p)));
    let why_not = match local {
        None => None,
        Some(_) if !mark.exists() => Some(
            "the task did not stop cleanly last time, so it may hold writes of a transaction \
             that never committed"
                .to_string(),
        ),
        Some(local) => {
            let topic = &cx.topology.parts[part].topic;
            let committed =
                changelog::committed_offset(&cx.changelog.config, &cx.group_id, topic, partition)
                    .map_err(&fail)?;
            match committed {
                Some(committed) if local > committed => Some(format!(
                    "it is at offset {local}, past the group's committed {committed}"
                )),
                None => Some(format!(
                    "it is at offset {local}, and the group has committed nothing"
                )),
                Some(_) => None,
            }
        }
    };
    match std::fs::remove_file(&mark) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(fail(format!("cannot remove {}: {e}", mark.display())));
        }
        _ => {}
    }
    let Some(why) = why_not else {
        return Ok(store);
    };
    tracing::info!(
        "task {}: not using its local state file ({why}); rebuilding the state from the changelog",
        spec.name
    );
    drop(store);
    std::fs::remove_file(&path).map_err(|e| fail(format!("cannot remove it: {e}")))?;
    StateStore::open(&spec.state_dir, &spec.name)
}

/// A task's output under exactly-once: in its transaction, to the
/// pipeline's Kafka sink or the next part's repartition topic.
fn output(cx: &TaskContext, part: usize, transaction: Arc<TaskTransaction>) -> Box<dyn Sink> {
    match &cx.topology.parts[part].output {
        Output::Sinks => {
            let Some(SinkConfig::Kafka(sink)) = cx.spec.sinks.first().map(|s| &s.value) else {
                unreachable!("exactly-once with tasks has one Kafka sink (config checks)");
            };
            Box::new(TaskOutput::new(
                transaction,
                sink.topic.clone(),
                sink.topic_header.clone(),
                None,
            ))
        }
        Output::Repartition { topic, by } => {
            let (by, partitions) = (*by, repartitioned(cx));
            Box::new(TaskOutput::new(
                transaction,
                Some(topic.clone()),
                None,
                Some(Box::new(move |record| partition_of(by, record, partitions))),
            ))
        }
    }
}

/// The repartition topics' partition count.
fn repartitioned(cx: &TaskContext) -> i32 {
    cx.partitions
        .expect("repartition topics are made before any task starts")
}

/// The error of a task whose partition went before it started.
fn cancelled(spec: &PipelineSpec) -> BuildError {
    BuildError::State {
        source: StateError {
            path: PathBuf::from(&spec.name),
            message: "the partition was taken away before the task started".into(),
        },
        file: spec.file.clone(),
    }
}

/// The sinks of a task: the pipeline's, for the last part.
fn sinks(
    cx: &TaskContext,
    spec: &PipelineSpec,
    part: usize,
) -> Result<Vec<Box<dyn Sink>>, BuildError> {
    match &cx.topology.parts[part].output {
        Output::Sinks => spec
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
            }),
        Output::Repartition { topic, by } => {
            let Some(SourceConfig::Kafka(source)) = cx.spec.sources.first().map(|s| &s.value)
            else {
                unreachable!("a per-partition pipeline reads one Kafka source (config checks)");
            };
            let partitions = repartitioned(cx);
            let config = KafkaSinkConfig {
                brokers: source.brokers.clone(),
                topic: Some(topic.clone()),
                topic_header: None,
                options: source.options.clone(),
            };
            let by = *by;
            let sink = config
                .build(&spec.name, 0, spec.exactly_once())
                .map_err(|error| BuildError::Sink {
                    error,
                    file: spec.file.clone(),
                })?
                .partitioned(Box::new(move |record| partition_of(by, record, partitions)));
            Ok(vec![Box::new(sink)])
        }
    }
}

/// The thread that reads a task's partition and hands it to the task
/// (see `member`): it ends when told to stop, or when the task's feed
/// closes, and drops the feed as it ends, which ends the task's input.
pub struct Feeder {
    /// Tells it to stop after the chunk in hand.
    pub stop: Arc<AtomicBool>,
    /// The offset after the last message it read.
    pub position: Arc<AtomicI64>,
    /// The thread; an error is the partition's read failing for good.
    pub thread: JoinHandle<Result<(), String>>,
}

/// A task that runs. Dropped, it stops its feeder.
pub struct Running {
    /// Its name.
    pub name: String,
    feeder: Option<Feeder>,
    /// The offset after the last message every sink has acknowledged (-1
    /// before the first).
    pub acked: Arc<AtomicI64>,
    /// The offset last committed to the group for it.
    pub committed: i64,
    /// Where its input started (`None`: the group's committed offset).
    start: Option<i64>,
    /// Kept so the task's shutdown signal never fires: it ends when its
    /// feed closes.
    _stop: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<Result<RunSummary, RunError>>,
    _pooled: Option<PooledRun>,
    lost: Option<Arc<AtomicBool>>,
}

impl Running {
    /// Starts `prepared` on `cx`'s executor, as `tenant`'s, its input read
    /// by the feeder `feeder` starts with the task's feed.
    pub fn start(
        prepared: Prepared,
        cx: &TaskContext,
        tenant: Option<&str>,
        feeder: impl FnOnce(mpsc::Sender<Feed>) -> std::io::Result<Feeder>,
    ) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        let Prepared {
            name,
            pipeline,
            feed,
            acked,
            start,
            lost,
            ..
        } = prepared;
        let pooled = match &cx.executor {
            Executor::Threads => {
                let runtime = cx.runtime.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("sluice-task-{name}"))
                    .spawn(move || {
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                pipeline.run(&runtime, stop_rx)
                            }));
                        let _ = done_tx.send(outcome.unwrap_or_else(|_| {
                            Err(RunError::Panic {
                                pipeline: "task".into(),
                                thread: "task".into(),
                                message: "a task thread panicked".into(),
                            })
                        }));
                    });
                if let Err(e) = thread {
                    tracing::error!("cannot start a thread for task {name}: {e}");
                }
                None
            }
            Executor::Pools(pools) => Some(pipeline.start_pooled(
                &cx.runtime,
                stop_rx,
                pools,
                tenant,
                Box::new(move |outcome| {
                    let _ = done_tx.send(outcome);
                }),
            )),
        };
        // Without a feeder the feed is dropped here, so the task ends at
        // once and the member reports it.
        let feeder = feeder(feed)
            .map_err(|e| tracing::error!("cannot start the feeder of task {name}: {e}"))
            .ok();
        Running {
            name,
            feeder,
            acked,
            committed: -1,
            start,
            _stop: stop,
            done,
            _pooled: pooled,
            lost,
        }
    }

    /// Whether it ended because its partition belongs elsewhere now
    /// (exactly-once: fenced by its new owner, or its commit met a
    /// rebalance), rather than by failing.
    pub fn lost_partition(&self) -> bool {
        self.lost
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Acquire))
    }

    /// The offset after the last message read for the task (its start
    /// before the first).
    pub fn position(&self) -> Option<i64> {
        match &self.feeder {
            Some(f) if f.position.load(Ordering::Acquire) >= 0 => {
                Some(f.position.load(Ordering::Acquire))
            }
            _ => self.start,
        }
    }

    /// How the task ended, if it has; its feeder failing ends it with the
    /// feeder's error.
    pub fn ended(&mut self) -> Option<Result<RunSummary, RunError>> {
        if self.feeder.as_ref().is_some_and(|f| f.thread.is_finished()) {
            if let Some(Err(message)) = self.feeder.take().and_then(|f| f.thread.join().ok()) {
                return Some(Err(RunError::Source {
                    pipeline: self.name.clone(),
                    source: crate::source::SourceError {
                        source_name: format!("task {}", self.name),
                        message,
                    },
                }));
            }
        }
        self.done.try_recv().ok()
    }

    /// Starts stopping the task gracefully: its feeder stops after the
    /// chunk in hand, and the task processes and delivers what it was
    /// handed, then ends.
    pub fn close(&mut self) {
        if let Some(feeder) = &self.feeder {
            feeder.stop.store(true, Ordering::Release);
        }
    }

    /// Waits for the task to end (see [`Running::close`]); returns how it
    /// ended.
    pub fn wait(mut self) -> Result<RunSummary, RunError> {
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.thread.join();
        }
        match self.done.recv() {
            Ok(outcome) => outcome,
            Err(_) => Err(RunError::Panic {
                pipeline: self.name.clone(),
                thread: "task".into(),
                message: "the task ended without saying how".into(),
            }),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_as_topic_partition_and_offset() {
        let at = position("wc-count-repartition", 3, 1042);
        assert_eq!(at, "wc-count-repartition:3@1042");
        assert_eq!(parse_position(&at), Some(("wc-count-repartition", 3, 1042)));
        assert_eq!(offset_of(&at), Some(1042));
        assert_eq!(parse_position("lines@12"), None);
        assert_eq!(parse_position("lines:x@12"), None);
    }

    #[test]
    fn the_clean_mark_sits_beside_the_state_file() {
        assert_eq!(
            transaction::clean(std::path::Path::new("state/wc.p3.redb")),
            std::path::PathBuf::from("state/wc.p3.redb.clean")
        );
    }
}
