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
//! - `member`: the process's consumer: assignment, each task's feeder,
//!   committing;
//! - `task`: one task: built, started, stopped;
//! - `changelog`: a stateful task's state in Kafka, written at each
//!   checkpoint and restored where the task starts;
//! - `standby`: warm copies of the state of tasks run elsewhere
//!   (`standby_replicas = 1`);
//! - `topics`: the changelog and repartition topics, made or checked;
//! - `transaction`: exactly-once, a task's batches as Kafka transactions
//!   of output, changelog and input offsets;
//! - [`board`]: what status shows of the tasks;
//! - `partitioned`: the pipeline as a whole, built and run.
//!
//! Everything here but [`board`] is Kafka's, behind the `kafka` feature.
//! What a task does with a batch is `pipeline`'s and `delivery`'s, as for
//! any pipeline.

pub mod board;
#[cfg(feature = "kafka")]
mod changelog;
#[cfg(feature = "kafka")]
mod member;
#[cfg(feature = "kafka")]
mod partitioned;
#[cfg(feature = "kafka")]
mod standby;
#[cfg(feature = "kafka")]
mod task;
#[cfg(feature = "kafka")]
mod topics;
#[cfg(feature = "kafka")]
pub mod topology;
#[cfg(feature = "kafka")]
mod transaction;

pub use board::{Phase, RestoreProgress, TaskBoard, TaskStatus};
#[cfg(feature = "kafka")]
pub use partitioned::Partitioned;
