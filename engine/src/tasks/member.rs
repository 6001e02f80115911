//! The process's member of the consumer group: one consumer for every
//! task of the process, whose assignment decides which tasks exist.
//!
//! - **Assigned** partitions are paused at once and their tasks prepared
//!   on threads of their own (state file opened, stages built); once a
//!   task is ready its partition starts at the later of the task's
//!   checkpoint offset and the group's committed offset, and is resumed.
//!   The checkpoint is later after a crash between checkpoint and commit;
//!   the group's is later when another process had the partition since
//!   (its local state is then behind, and the log says so). Under
//!   exactly-once the group's offset alone counts: it is where the last
//!   committed transaction ended.
//! - **Messages** of a partition go to its own librdkafka queue (split from
//!   the consumer's as its task starts), read by the task's feeder thread
//!   into the task's feed. A task that falls behind holds its feeder, and
//!   librdkafka stops fetching that partition once its queue is full
//!   (`queued.max.messages.kbytes`), so one slow task holds back only its
//!   own partition, and nothing is paused or fetched twice. The member's
//!   own loop only serves the consumer's events: rebalances, statistics,
//!   errors.
//! - **Revoked** partitions' tasks stop gracefully inside the rebalance
//!   callback (the batch in flight is finished and checkpointed) and, under
//!   at-least-once, their acknowledged offsets are committed before the
//!   partitions go. Partitions that were *lost* (the session expired) are
//!   not committed: another member owns them already.
//!
//! The assignment strategy is cooperative-sticky, so a rebalance stops
//! only the tasks whose partitions move.
//!
//! Not here: what a task is (`task`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::board::{Phase, summary};
use super::standby::Standbys;
use super::task::{Feed, Feeder, Prepared, Running, TaskContext, prepare};
use crate::batch::Records;
use crate::kafka::LogContext;
use crate::pipeline::{BuildError, RunError};
use crate::source::kafka::push_message;
use crate::source::{CHUNK_BYTES, CHUNK_RECORDS, SourceError};

/// Longest wait for an event before the loop looks at its tasks, and for
/// a message before a feeder looks at its stop flag.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// Longest wait for the group's committed offset of a starting task.
const COMMITTED_WAIT: Duration = Duration::from_secs(10);

/// How often acknowledged offsets are committed and status refreshed.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A task of the process, by its topic and partition.
enum Slot {
    /// Being built on a thread of its own.
    Preparing {
        cancel: Arc<AtomicBool>,
        thread: JoinHandle<Result<Prepared, BuildError>>,
    },
    /// Running.
    Running(Running),
}

/// What the consumer's callbacks share with the loop.
pub struct Shared {
    log: LogContext,
    cx: Arc<TaskContext>,
    /// The tenant whose pools the tasks run on (`sluice serve`).
    tenant: Option<String>,
    slots: Mutex<BTreeMap<(String, i32), Slot>>,
    /// Each partition's high watermark, from the consumer's statistics.
    high: Mutex<HashMap<(String, i32), i64>>,
    /// Whether the input's offsets go with each task's transaction (then
    /// the group's are not committed here).
    offsets_in_transactions: bool,
    /// The consumer group's id.
    group: String,
    /// Warm copies of the tasks not run here (`standby_replicas = 1`).
    standbys: Option<Standbys>,
    /// Whether the group has assigned this member partitions yet (standbys
    /// start after that, not for every partition at start-up).
    assigned: AtomicBool,
}

/// The consumer's context: log lines, statistics and rebalances.
pub struct MemberContext(Arc<Shared>);

impl ClientContext for MemberContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.log.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let mut high = lock(&self.0.high);
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    high.insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for MemberContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let applied = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = applied.and_then(|()| consumer.pause(tpl)) {
                    tracing::warn!("{}: applying the assignment failed: {e}", self.0.log.who);
                }
                self.0.assigned.store(true, Ordering::Release);

                let started: Vec<String> = tpl
                    .elements()
                    .iter()
                    .filter_map(|e| self.0.begin(e.topic(), e.partition()))
                    .collect();
                tracing::info!(
                    "{}: partitions assigned: {}; tasks starting: {}",
                    self.0.log.who,
                    list(tpl),
                    if started.is_empty() {
                        "none".into()
                    } else {
                        started.join(", ")
                    }
                );
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let partitions: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let stopped = self.0.stop(consumer, &partitions, !lost);
                let applied = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = applied {
                    tracing::warn!("{}: applying the revocation failed: {e}", self.0.log.who);
                }
                tracing::info!(
                    "{}: partitions {}: {}; tasks stopped: {}",
                    self.0.log.who,
                    if lost {
                        "lost (the session expired: not committing)"
                    } else {
                        "revoked"
                    },
                    list(tpl),
                    if stopped.is_empty() {
                        "none".into()
                    } else {
                        stopped.join(", ")
                    }
                );
            }
            other => tracing::warn!("{}: rebalance failed: {other:?}", self.0.log.who),
        }
    }
}

impl Shared {
    /// Starts preparing the task of a newly assigned partition; returns
    /// its name.
    fn begin(self: &Arc<Self>, topic: &str, partition: i32) -> Option<String> {
        let Some(part) = self.cx.topology.part_of(topic) else {
            tracing::warn!(
                "{}: assigned {topic}[{partition}], which no part reads",
                self.log.who
            );
            return None;
        };
        let name = self.cx.topology.task_name(part, partition);
        if let Some(standbys) = &self.standbys {
            // It closes the task's state file before the task opens it.
            standbys.release(part, partition);
        }
        self.cx.board.add(&name, topic, partition);
        let cancel = Arc::new(AtomicBool::new(false));
        let (shared, stop) = (self.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sluice-prepare-{name}"))
            .spawn(move || prepare(&shared.cx, part, partition, &stop));
        match thread {
            Ok(thread) => {
                lock(&self.slots).insert(
                    (topic.to_string(), partition),
                    Slot::Preparing { cancel, thread },
                );
            }
            Err(e) => tracing::error!("{}: cannot start preparing task {name}: {e}", self.log.who),
        }
        Some(name)
    }

    /// Stops the tasks of `partitions` (all at once, then waits for each)
    /// and, when `commit`, commits what they acknowledged. Returns their
    /// names.
    fn stop(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        partitions: &[(String, i32)],
        commit: bool,
    ) -> Vec<String> {
        let taken: Vec<((String, i32), Slot)> = {
            let mut slots = lock(&self.slots);
            partitions
                .iter()
                .filter_map(|p| slots.remove(p).map(|slot| (p.clone(), slot)))
                .collect()
        };
        let mut closing = Vec::new();
        for ((topic, partition), slot) in taken {
            self.cx
                .board
                .update(&topic, partition, |t| t.phase = Phase::Stopping);
            match slot {
                Slot::Preparing { cancel, thread } => {
                    cancel.store(true, Ordering::Release);
                    // Its pipeline, if it got that far, is dropped unstarted.
                    let _ = thread.join();
                    self.cx.board.remove(&topic, partition);
                }
                Slot::Running(mut running) => {
                    running.close();
                    closing.push(((topic, partition), running));
                }
            }
        }
        let mut names = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), running) in closing {
            let name = running.name.clone();
            let acked = running.acked.clone();
            match running.wait() {
                Ok(_) if self.offsets_in_transactions => self.mark_clean(&name),
                Ok(_) => {}
                Err(e) => tracing::error!(
                    "{}: task {name} ended with an error while stopping: {e}",
                    self.log.who
                ),
            }
            let acked = acked.load(Ordering::Acquire);
            if acked >= 0 {
                let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(acked));
            }
            self.cx.board.remove(&topic, partition);
            names.push(name);
        }
        if commit && !self.offsets_in_transactions && offsets.count() > 0 {
            if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(
                    "{}: committing the offsets of stopped tasks failed ({e}): their next owner reads \
                     those batches again",
                    self.log.who
                );
            }
        }
        names
    }
}

impl Shared {
    /// Exactly-once: marks task `name`'s state file as matching what Kafka
    /// committed (it stopped with every batch committed), so its next start
    /// here may use it.
    fn mark_clean(&self, name: &str) {
        let file = crate::state::StateStore::file(&self.cx.spec.state_dir, name);
        if !file.exists() {
            return;
        }
        let mark = super::transaction::clean(&file);
        if let Err(e) = std::fs::write(&mark, b"") {
            tracing::warn!(
                "{}: cannot write {} ({e}): task {name}'s next start rebuilds its state from the \
                 changelog",
                self.log.who,
                mark.display()
            );
        }
    }
}

/// The group member of a process.
pub struct Member {
    shared: Arc<Shared>,
    config: rdkafka::ClientConfig,
    topics: Vec<String>,
}

impl Member {
    /// A member reading `topics` with `config` for the tasks of `cx`,
    /// shown on its board.
    pub fn new(
        cx: Arc<TaskContext>,
        config: rdkafka::ClientConfig,
        who: String,
        tenant: Option<String>,
        offsets_in_transactions: bool,
    ) -> Member {
        let topics = cx.topology.topics();
        Member {
            shared: Arc::new(Shared {
                log: LogContext::new(who),
                cx: cx.clone(),
                tenant,
                slots: Mutex::new(BTreeMap::new()),
                high: Mutex::new(HashMap::new()),
                offsets_in_transactions,
                group: config.get("group.id").unwrap_or_default().to_string(),
                standbys: cx.spec.standby.then(|| Standbys::new(cx.clone())),
                assigned: AtomicBool::new(false),
            }),
            config,
            topics,
        }
    }

    /// Reads until `shutdown` turns true or a task fails; then stops every
    /// task gracefully, commits, and leaves the group.
    pub fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
        let who = self.shared.log.who.clone();
        let fail = |message: String| RunError::Source {
            pipeline: self.shared.cx.spec.name.clone(),
            source: SourceError {
                source_name: who.clone(),
                message,
            },
        };
        let consumer: Arc<BaseConsumer<MemberContext>> = Arc::new(
            self.config
                .create_with_context(MemberContext(self.shared.clone()))
                .map_err(|e| fail(format!("cannot create the consumer: {e}")))?,
        );
        // The tasks' transactions read the group's metadata (its current
        // generation) at each commit.
        let weak = Arc::downgrade(&consumer);
        let _ = self.shared.cx.group.set(Box::new(move || {
            weak.upgrade()
                .and_then(|consumer| consumer.group_metadata())
        }));
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        tracing::info!(
            "{who}: subscribed to {}, waiting for partitions",
            self.topics.join(", ")
        );
        let mut outcome = Ok(());
        let mut last_housekeeping = Instant::now();
        let mut last_summary = String::new();
        while !*shutdown.borrow() {
            if let Err(e) = self
                .start_prepared(&consumer)
                .and_then(|()| self.check_ended())
            {
                outcome = Err(e);
                break;
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                last_housekeeping = Instant::now();

                self.commit_acked(&consumer);
                self.refresh_standbys();
                self.refresh_board();
                let now = summary(&self.shared.cx.board.snapshot());
                if now != last_summary {
                    tracing::info!("{who}: tasks: {now}");
                    last_summary = now;
                }
            }
            if let Err(message) = self.read(&consumer) {
                outcome = Err(fail(message));
                break;
            }
        }
        if let Some(standbys) = &self.shared.standbys {
            standbys.release_all();
        }
        // Every task finishes what it was handed; then the last commit.
        let partitions: Vec<(String, i32)> = lock(&self.shared.slots).keys().cloned().collect();
        let stopped = self.shared.stop(&consumer, &partitions, true);
        if !stopped.is_empty() {
            tracing::info!("{who}: tasks stopped: {}", stopped.join(", "));
        }
        tracing::info!("{who}: leaving the group");
        // The feeders, holding it through their queues, have ended.
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => crate::source::kafka::close_consumer(consumer, &who),
            Err(_) => tracing::warn!("{who}: a feeder still holds the consumer; dropping it"),
        }
        outcome
    }

    /// Starts the tasks whose preparation finished, at their offsets.
    fn start_prepared(&self, consumer: &Arc<BaseConsumer<MemberContext>>) -> Result<(), RunError> {
        let mut slots = lock(&self.shared.slots);
        let ready: Vec<(String, i32)> = slots
            .iter()
            .filter(
                |(_, slot)| matches!(slot, Slot::Preparing { thread, .. } if thread.is_finished()),
            )
            .map(|(key, _)| key.clone())
            .collect();
        for key in ready {
            let Some(Slot::Preparing { thread, .. }) = slots.remove(&key) else {
                continue;
            };
            let (topic, partition) = &key;
            let prepared = match thread.join() {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(e)) => {
                    return Err(RunError::Source {
                        pipeline: self.shared.cx.spec.name.clone(),
                        source: SourceError {
                            source_name: format!("task of {topic}[{partition}]"),
                            message: e.to_string(),
                        },
                    });
                }
                Err(_) => {
                    return Err(RunError::Panic {
                        pipeline: self.shared.cx.spec.name.clone(),
                        thread: format!("prepare {topic}[{partition}]"),
                        message: "preparing a task panicked".into(),
                    });
                }
            };
            let start = self.start_offset(consumer, topic, *partition, &prepared);
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, *partition);
            if let Some((offset, _)) = start {
                // A seek right after the assignment races librdkafka's own
                // look-up of the committed offset; assigning the partition
                // again at the offset does not.
                let mut at = TopicPartitionList::new();
                let _ = at.add_partition_offset(topic, *partition, Offset::Offset(offset));
                if let Err(e) = consumer
                    .incremental_unassign(&list)
                    .and_then(|()| consumer.incremental_assign(&at))
                {
                    tracing::warn!(
                        "{}: cannot start {topic}[{partition}] at {offset}: {e}",
                        self.shared.log.who
                    );
                }
            }
            // Split after the (re)assignment, before the first fetch: the
            // split holds across later fetch starts of the partition.
            let Some(queue) = consumer.split_partition_queue(topic, *partition) else {
                return Err(RunError::Source {
                    pipeline: self.shared.cx.spec.name.clone(),
                    source: SourceError {
                        source_name: format!("task of {topic}[{partition}]"),
                        message: "librdkafka has no queue for the partition".into(),
                    },
                });
            };
            let shared = self.shared.clone();
            let feeder_name = format!("sluice-feed-{}", prepared.name);
            let running = Running::start(
                prepared,
                &self.shared.cx,
                self.shared.tenant.as_deref(),
                |tx| {
                    let stop = Arc::new(AtomicBool::new(false));
                    let position = Arc::new(AtomicI64::new(-1));
                    let (s, p) = (stop.clone(), position.clone());
                    let thread = std::thread::Builder::new()
                        .name(feeder_name)
                        .spawn(move || feed(&shared, &queue, &tx, &s, &p))?;
                    Ok(Feeder {
                        stop,
                        position,
                        thread,
                    })
                },
            );
            if let Err(e) = consumer.resume(&list) {
                tracing::warn!(
                    "{}: cannot resume {topic}[{partition}]: {e}",
                    self.shared.log.who
                );
            }
            tracing::info!(
                "{}: task {} started at {}",
                self.shared.log.who,
                running.name,
                start.map_or(
                    "the group's committed offset".to_string(),
                    |(o, why)| format!("offset {o} ({why})")
                )
            );
            self.shared.cx.board.update(topic, *partition, |t| {
                t.phase = Phase::Running;
                t.position = start.map(|(o, _)| o);
            });
            slots.insert(key, Slot::Running(running));
        }
        Ok(())
    }

    /// Where the task of `topic`/`partition` starts, and why: the later of
    /// its checkpoint's offset and the group's committed offset; under
    /// exactly-once, the group's (where the last committed transaction
    /// ended). `None`: the group's, or `start` when the group has none.
    fn start_offset(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        topic: &str,
        partition: i32,
        prepared: &Prepared,
    ) -> Option<(i64, &'static str)> {
        let committed = || {
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, partition);
            match consumer.committed_offsets(list, COMMITTED_WAIT) {
                Ok(list) => list
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    }),
                Err(e) => {
                    tracing::warn!(
                        "{}: cannot read the group's offset of {topic}[{partition}] for task {} \
                         ({e})",
                        self.shared.log.who,
                        prepared.name
                    );
                    None
                }
            }
        };
        if self.shared.offsets_in_transactions {
            return committed().map(|o| {
                (
                    o,
                    "the group's committed offset, where its last transaction ended",
                )
            });
        }
        let checkpoint = prepared.start?;
        match committed() {
            Some(committed) if committed > checkpoint => {
                if prepared.stateful && !prepared.changelogged {
                    tracing::warn!(
                        "{}: task {}: the group has committed {topic}[{partition}] up to \
                         {committed}, past its checkpoint at {checkpoint} (another process had \
                         the partition meanwhile): its state lacks offsets {checkpoint}..{committed}",
                        self.shared.log.who,
                        prepared.name
                    );
                }
                None
            }
            _ => Some((checkpoint, "its checkpoint")),
        }
    }

    /// Tasks that ended on their own: an error ends the member.
    fn check_ended(&self) -> Result<(), RunError> {
        let mut slots = lock(&self.shared.slots);
        let mut ended = Vec::new();
        for (key, slot) in slots.iter_mut() {
            if let Slot::Running(running) = slot {
                if let Some(outcome) = running.ended() {
                    ended.push((key.clone(), outcome, running.lost_partition()));
                }
            }
        }
        for ((topic, partition), outcome, lost) in ended {
            slots.remove(&(topic.clone(), partition));
            self.shared.cx.board.remove(&topic, partition);
            match outcome {
                // A zombie's task: the group has given its partition to
                // another process, which the next rebalance tells.
                Err(e) if lost => {
                    tracing::warn!(
                        "{}: the task of {topic}[{partition}] stopped: {e}",
                        self.shared.log.who
                    );
                    continue;
                }
                other => other?,
            };
            tracing::warn!(
                "{}: the task of {topic}[{partition}] ended on its own",
                self.shared.log.who
            );
        }
        Ok(())
    }

    /// Serves the consumer's events (rebalances, statistics, errors) for
    /// up to [`POLL_WAIT`]. Messages come through the partitions' own
    /// queues; one that comes here belongs to no running task (read before
    /// its task started, or after it stopped) and is left to its owner, who
    /// reads it from the committed offset.
    fn read(&self, consumer: &BaseConsumer<MemberContext>) -> Result<(), String> {
        let mut wait = POLL_WAIT;
        while let Some(polled) = consumer.poll(wait) {
            wait = Duration::ZERO;
            match polled {
                Ok(_) | Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(format!("fatal consumer error {code:?}: {reason}"));
                    }
                    self.shared.log.error(e, "consuming");
                }
            }
        }
        Ok(())
    }

    /// Commits what the tasks' sinks acknowledged (at-least-once).
    fn commit_acked(&self, consumer: &BaseConsumer<MemberContext>) {
        if self.shared.offsets_in_transactions {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), slot) in lock(&self.shared.slots).iter_mut() {
            let Slot::Running(running) = slot else {
                continue;
            };
            let acked = running.acked.load(Ordering::Acquire);
            if acked > running.committed {
                let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(acked));
                running.committed = acked;
            }
        }
        if offsets.count() > 0 {
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                self.shared.log.error(e, "committing offsets");
            }
        }
    }

    /// Standbys: follows the partitions with no task here, once the group
    /// has assigned this member some (see `standby`).
    fn refresh_standbys(&self) {
        let (Some(standbys), Some(partitions)) = (&self.shared.standbys, self.shared.cx.partitions)
        else {
            return;
        };
        if !self.shared.assigned.load(Ordering::Acquire) {
            return;
        }
        let slots = lock(&self.shared.slots);
        let parts = &self.shared.cx.topology.parts;
        standbys.refresh(partitions, |part, partition| {
            slots.contains_key(&(parts[part].topic.clone(), partition))
        });
    }

    /// Puts each running task's position and lag on the board.
    fn refresh_board(&self) {
        let high = lock(&self.shared.high).clone();
        for ((topic, partition), slot) in lock(&self.shared.slots).iter() {
            let Slot::Running(running) = slot else {
                continue;
            };
            let acked = running.acked.load(Ordering::Acquire);
            let position = running.position();
            let done = if acked >= 0 { Some(acked) } else { position };
            let lag = match (high.get(&(topic.clone(), *partition)), done) {
                (Some(high), Some(done)) => Some((high - done).max(0)),
                _ => None,
            };
            self.shared.cx.board.update(topic, *partition, |t| {
                t.position = position;
                t.lag = lag;
            });
        }
    }
}

/// A task's feeder: reads its partition's own queue into chunks and hands
/// them to the task's feed until `stop` or the feed closes. Waiting on a
/// full feed is the task's backpressure (see the module's notes).
fn feed(
    shared: &Shared,
    queue: &PartitionQueue<MemberContext>,
    tx: &mpsc::Sender<Feed>,
    stop: &AtomicBool,
    position: &AtomicI64,
) -> Result<(), String> {
    while !stop.load(Ordering::Acquire) {
        let mut records = Records::default();
        let mut next = -1;
        let mut wait = POLL_WAIT;
        while records.len() < CHUNK_RECORDS && records.byte_size() < CHUNK_BYTES {
            let Some(polled) = queue.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            match polled {
                Ok(message) => {
                    if records.is_empty() {
                        records.reserve_values(CHUNK_RECORDS, CHUNK_BYTES);
                    }
                    push_message(&mut records, &message);
                    next = message.offset() + 1;
                }
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                    return Err(format!(
                        "the partition has no committed offset for group `{}` and `start` is \
                         \"committed\"",
                        shared.group
                    ));
                }
                Err(e) => shared.log.error(e, "consuming"),
            }
        }
        if records.is_empty() {
            continue;
        }
        position.store(next, Ordering::Release);
        if tx.blocking_send(Feed { records, next }).is_err() {
            break;
        }
    }
    Ok(())
}

/// The partitions of `list`, as `topic[0,1]`.
fn list(list: &TopicPartitionList) -> String {
    crate::source::kafka::list_partitions(list)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
