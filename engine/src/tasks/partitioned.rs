//! A pipeline with `tasks = "per-partition"`, built and run: its consumer's
//! settings, its parts, and the group member whose assignment makes its
//! tasks. Not here: the member's loop (`member`), a task (`task`).

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

use super::board::TaskBoard;
use super::member::Member;
use super::task::{ChangelogSetup, TaskContext};
use super::topics::{self, Kind};
use super::topology::{Output, Topology};
use crate::config::PipelineSpec;
use crate::kafka::client_config;
use crate::pipeline::{BuildError, Cancel, RunError, RunSummary, check_stages};
use crate::plugin::PluginHost;
use crate::source::{SourceConfig, SourceError};
use crate::supervisor::Executor;
use crate::telemetry::PipelineMetrics;

/// A pipeline that runs a task per assigned Kafka partition, ready to run.
pub struct Partitioned {
    spec: PipelineSpec,
    topology: Topology,
    host: Arc<PluginHost>,
    config: rdkafka::ClientConfig,
    /// The changelogs' client settings: the source's brokers and options.
    changelog_config: rdkafka::ClientConfig,
    who: String,
    /// The consumer group's id.
    group: String,
    board: Arc<TaskBoard>,
    metrics: Arc<PipelineMetrics>,
    cancel: Cancel,
}

impl Partitioned {
    /// Checks the stages (every plugin loads and takes its config, so a
    /// bad one stops the run before anything is read) and sets up the
    /// consumer's settings. Tasks are built as partitions are assigned.
    pub fn build(spec: &PipelineSpec, host: Arc<PluginHost>) -> Result<Self, BuildError> {
        check_stages(spec, &host)?;
        let Some(SourceConfig::Kafka(source)) = spec.sources.first().map(|s| &s.value) else {
            unreachable!("a per-partition pipeline reads one Kafka source (config checks)");
        };
        let mut config = client_config(
            &source.brokers,
            &[
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "2000"),
                ("topic.metadata.refresh.interval.ms", "5000"),
                ("fetch.queue.backoff.ms", "20"),
                ("statistics.interval.ms", "1000"),
            ],
            &source.options,
        );
        config
            .set("group.id", &source.group)
            .set("client.id", format!("sluice-{}", spec.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", source.start.offset_reset())
            .set("partition.assignment.strategy", "cooperative-sticky");
        let topology = Topology::of(spec);
        let who = format!(
            "pipeline {} (group {}, tasks per partition of {})",
            spec.name,
            source.group,
            topology.topics().join(", ")
        );
        let board = Arc::new(TaskBoard::default());
        let metrics = PipelineMetrics::new(crate::pipeline::shape_of(spec));
        let _ = metrics.tasks.set(board.clone());
        Ok(Partitioned {
            spec: spec.clone(),
            topology,
            host,
            config,
            changelog_config: client_config(&source.brokers, &[], &source.options),
            who,
            group: source.group.clone(),
            board,
            metrics,
            cancel: Cancel::default(),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its tasks, live.
    pub fn board(&self) -> Arc<TaskBoard> {
        self.board.clone()
    }

    /// What cancels every task's run (see [`Cancel`]).
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Its figures (every task's added up), live.
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` turns true (every task then finishes what it
    /// read) or a task fails. Blocks the calling thread, which must not be
    /// one of `runtime`'s; tasks run on `executor`, as `tenant`'s.
    pub fn run(
        self,
        runtime: &Handle,
        shutdown: watch::Receiver<bool>,
        executor: Executor,
        tenant: Option<String>,
    ) -> Result<RunSummary, RunError> {
        tracing::info!(
            pipeline = %self.spec.name,
            "started with a task per partition: parts [{}], {} delivery",
            self.topology
                .parts
                .iter()
                .map(|p| format!(
                    "{} → stages {:?}",
                    p.topic,
                    self.spec.stages[p.stages.clone()].iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
                .join("; "),
            if self.spec.exactly_once() { "exactly-once" } else { "at-least-once" },
        );
        let exactly_once = self.spec.exactly_once();
        let partitions = self.repartition_topics(runtime)?;
        let parts = self.topology.parts.len();
        let cx = Arc::new(TaskContext {
            spec: self.spec.clone(),
            topology: self.topology,
            host: self.host,
            runtime: runtime.clone(),
            executor,
            metrics: self.metrics.clone(),
            changelog: ChangelogSetup {
                config: self.changelog_config,
                ready: (0..parts).map(|_| std::sync::OnceLock::new()).collect(),
            },
            partitions,
            group_id: self.group.clone(),
            group: Arc::new(std::sync::OnceLock::new()),
            board: self.board,
            cancel: self.cancel,
        });
        let member = Member::new(cx, self.config, self.who, tenant, exactly_once);
        member.run(shutdown)?;
        let totals = self.metrics.totals();
        tracing::info!(
            pipeline = %self.spec.name,
            "finished: {} batches ({} with records), {} records in, {} out, {} dead-lettered",
            totals.batches, totals.busy_batches, totals.records_in, totals.records_out, totals.failed
        );
        Ok(RunSummary {
            pipeline: self.spec.name,
            totals,
        })
    }

    /// Makes (or checks) the repartition topics, before the consumer
    /// subscribes to them; returns their partition count, the input's. A
    /// pipeline without `partition_by` has none: the input's count is
    /// looked up only when standbys need it (`None` otherwise).
    fn repartition_topics(&self, runtime: &Handle) -> Result<Option<i32>, RunError> {
        let topics: Vec<String> = self
            .topology
            .parts
            .iter()
            .filter_map(|p| match &p.output {
                Output::Repartition { topic, .. } => Some(topic.clone()),
                Output::Sinks => None,
            })
            .collect();
        let input = &self.topology.parts[0].topic;
        let count = match (topics.is_empty(), self.spec.standby) {
            (true, false) => return Ok(None),
            (true, true) => topics::lookup(&self.changelog_config)
                .and_then(|lookup| topics::input_partitions(&lookup, input)),
            (false, _) => topics::ensure(
                &self.changelog_config,
                runtime,
                input,
                Kind::Repartition,
                &topics,
            ),
        };
        count.map(Some).map_err(|message| RunError::Source {
            pipeline: self.spec.name.clone(),
            source: SourceError {
                source_name: self.who.clone(),
                message,
            },
        })
    }
}
