//! Scaling a pipeline that reads Kafka up (every core of a process) and out
//! (several processes), Kafka Streams' way: `tasks = "per-partition"`.
//!
//! Kafka is the substrate, not a cluster manager of our own: the consumer
//! group assigns partitions and notices failures; each process runs a
//! **task** per partition it is assigned — the part of the pipeline that
//! reads that partition, as a pipeline of its own (fresh stage instances,
//! its own batches, delivery and state file `<task>.redb`). Tasks run in
//! parallel on threads (`sluice run`) or on the worker pools (`sluice
//! serve`). A task is created when its partition is assigned and stopped
//! gracefully when it is revoked; the assignment is cooperative-sticky, so a
//! rebalance stops only the tasks whose partitions move.
//!
//! - [`topology`]: the parts of a pipeline (a `partition_by` stage starts a
//!   new one) and the names of tasks and topics;
//! - [`member`]: the process's consumer: assignment, routing, pausing,
//!   committing;
//! - [`task`]: one task: built, started, stopped;
//! - [`board`]: what status shows of the tasks.
//!
//! Everything here is Kafka's, and can sit behind the `kafka` feature.
//! What a task does with a batch is `pipeline`'s and `delivery`'s, as for
//! any pipeline.

pub mod board;
mod member;
mod task;
pub mod topology;

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

pub use board::{Phase, TaskBoard, TaskStatus};

use crate::config::PipelineSpec;
use crate::kafka::client_config;
use crate::pipeline::{BuildError, RunError, RunSummary, check_stages};
use crate::plugin::PluginHost;
use crate::source::SourceConfig;
use crate::supervisor::Executor;
use crate::telemetry::PipelineMetrics;
use member::Member;
use task::TaskContext;
use topology::Topology;

/// A pipeline that runs a task per assigned Kafka partition, ready to run.
pub struct Partitioned {
    spec: PipelineSpec,
    topology: Topology,
    host: Arc<PluginHost>,
    config: rdkafka::ClientConfig,
    who: String,
    board: Arc<TaskBoard>,
    metrics: Arc<PipelineMetrics>,
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
        Ok(Partitioned {
            spec: spec.clone(),
            topology,
            host,
            config,
            who,
            board: Arc::new(TaskBoard::default()),
            metrics: Arc::new(PipelineMetrics::default()),
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
        let cx = Arc::new(TaskContext {
            spec: self.spec.clone(),
            topology: self.topology,
            host: self.host,
            runtime: runtime.clone(),
            executor,
            metrics: self.metrics.clone(),
        });
        let member = Member::new(cx, self.config, self.who, tenant, self.board, exactly_once);
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
}
