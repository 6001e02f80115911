//! Standby replicas (`standby_replicas = 1`): a process keeps a warm copy
//! of the state of every task it does not run, so that when it is given
//! one of their partitions (its owner died or left) the task restores only
//! the changelog's last moments instead of all of it.
//!
//! - A **standby** of task `<pipeline>.p<N>` follows partition `N` of each
//!   of the task's changelog topics into the task's own state file in this
//!   process's `state_dir`, as the restore does (the same tables, the same
//!   positions), and keeps following until told to stop.
//! - The member runs one for each partition of its parts' topics that it
//!   has no task for, once the group has given it its first assignment
//!   (`Standbys::refresh`), and stops one (`Standbys::release`, waiting for
//!   it to close the file) before it starts the task of that partition. A
//!   task's file is then already at the changelog's position of a moment
//!   ago, and its restore reads only the tail.
//! - Placement: every process with `standby_replicas = 1` follows every
//!   partition it does not own, so with two processes each task has one
//!   standby (Kafka Streams' `num.standby.replicas = 1`), and with N
//!   processes N − 1. Kafka Streams places replicas with its own assignor;
//!   librdkafka's client offers no custom assignor, and the group's member
//!   list is not reliably described by every broker.
//! - Exactly-once: the standby reads only committed changelog records (the
//!   restore's `read_committed` consumer), so its file holds committed
//!   state. A file that may hold a crashed task's uncommitted writes (a
//!   checkpoint and no clean mark, see `task::keep_only_committed_state`)
//!   is deleted first, as a task would.
//! - A standby's changelog topics come from the task's plugins (which use
//!   `state`) and windows; it waits for them to exist (a task somewhere
//!   creates them) and shows on the board as `standby` with how far it is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::board::{Phase, RestoreProgress};
use super::changelog;
use super::task::{TaskContext, changelog_topics, task_spec};
use super::topics::partition_count;
use super::transaction;
use crate::pipeline::load_plugins;
use crate::state::StateStore;

/// Longest a standby holds records before applying them to the file.
const APPLY_EVERY: Duration = Duration::from_secs(1);

/// Records applied to the file per transaction.
const APPLY_CHUNK: usize = 10_000;

/// How long a standby waits before looking again for changelog topics
/// that do not exist yet, or after an error.
const RETRY: Duration = Duration::from_secs(5);

/// One standby: its stop flag and thread.
struct Standby {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The standbys of one process's share of a partitioned pipeline, by part
/// and partition.
pub struct Standbys {
    cx: Arc<TaskContext>,
    running: Mutex<BTreeMap<(usize, i32), Standby>>,
}

impl Standbys {
    pub fn new(cx: Arc<TaskContext>) -> Standbys {
        Standbys {
            cx,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Follows every one of the `partitions` of each part's topic (they all
    /// have the input's count) that `owned` does not hold; stops the rest.
    pub fn refresh(&self, partitions: i32, owned: impl Fn(usize, i32) -> bool) {
        let parts = self.cx.topology.parts.len();
        let wanted: Vec<(usize, i32)> = (0..parts)
            .flat_map(|part| (0..partitions).map(move |p| (part, p)))
            .filter(|(part, p)| !owned(*part, *p))
            .collect();
        let gone: Vec<(usize, i32)> = self
            .lock()
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for (part, partition) in gone {
            self.release(part, partition);
        }
        for (part, partition) in wanted {
            if self.lock().contains_key(&(part, partition)) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (cx, flag) = (self.cx.clone(), stop.clone());
            let name = cx.topology.task_name(part, partition);
            let topic = cx.topology.parts[part].topic.clone();
            cx.board.add(&name, &topic, partition);
            cx.board
                .update(&topic, partition, |t| t.phase = Phase::Standby);
            let thread = std::thread::Builder::new()
                .name(format!("sluice-standby-{name}"))
                .spawn(move || follow(&cx, part, partition, &flag));
            match thread {
                Ok(thread) => {
                    self.lock()
                        .insert((part, partition), Standby { stop, thread });
                }
                Err(e) => tracing::warn!("standby of {name}: cannot start a thread: {e}"),
            }
        }
    }

    /// Stops the standby of `part`'s `partition`, if there is one, and
    /// waits until it has closed the task's state file.
    pub fn release(&self, part: usize, partition: i32) {
        let Some(standby) = self.lock().remove(&(part, partition)) else {
            return;
        };
        standby.stop.store(true, Ordering::Release);
        let _ = standby.thread.join();
        let topic = &self.cx.topology.parts[part].topic;
        self.cx.board.remove(topic, partition);
    }

    /// Stops every standby.
    pub fn release_all(&self) {
        let all: Vec<(usize, i32)> = self.lock().keys().copied().collect();
        for (part, partition) in all {
            self.release(part, partition);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(usize, i32), Standby>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A standby's life: waits for the task's changelog topics, then follows
/// them into its state file until `stop`, starting over after an error.
fn follow(cx: &TaskContext, part: usize, partition: i32, stop: &AtomicBool) {
    let spec = task_spec(cx, part, partition);
    let plugins = {
        let _guard = cx.runtime.enter();
        match load_plugins(&spec, &cx.host) {
            Ok(plugins) => plugins,
            Err(e) => {
                tracing::warn!("standby of {}: {e}", spec.name);
                return;
            }
        }
    };
    let topics = changelog_topics(cx, &spec, &plugins);
    if topics.is_empty() {
        return;
    }
    let mut reported = false;
    while !stop.load(Ordering::Acquire) {
        match tail(cx, &spec, &topics, part, partition, stop) {
            Ok(()) => return,
            Err(message) => {
                if !reported {
                    tracing::info!(
                        "standby of {}: {message}; trying again every {} s",
                        spec.name,
                        RETRY.as_secs()
                    );
                    reported = true;
                }
                let until = Instant::now() + RETRY;
                while Instant::now() < until && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Follows `topics` (table → changelog topic) at `partition` into the
/// task's state file until `stop`.
fn tail(
    cx: &TaskContext,
    spec: &crate::config::PipelineSpec,
    topics: &changelog::Topics,
    part: usize,
    partition: i32,
    stop: &AtomicBool,
) -> Result<(), String> {
    let consumer = changelog::reader(&cx.changelog.config, "sluice-changelog-standby")
        .map_err(|e| format!("cannot create its consumer: {e}"))?;
    for topic in topics.values() {
        if partition_count(consumer.client(), topic)?.is_none() {
            return Err(format!("changelog topic {topic} does not exist yet"));
        }
    }
    let store = open(spec).map_err(|e| e.to_string())?;
    let mut at = TopicPartitionList::new();
    for (table, topic) in topics {
        let position = store.changelog_position(table).map_err(|e| e.to_string())?;
        at.add_partition_offset(
            topic,
            partition,
            position.map_or(Offset::Beginning, Offset::Offset),
        )
        .map_err(|e| e.to_string())?;
    }
    consumer.assign(&at).map_err(|e| e.to_string())?;
    let table_of: BTreeMap<&str, &str> = topics
        .iter()
        .map(|(table, topic)| (topic.as_str(), table.as_str()))
        .collect();
    let input = &cx.topology.parts[part].topic;
    // Per table: records read and not yet applied, and the offset after
    // them.
    let mut pending: BTreeMap<&str, (changelog::Chunk, i64)> = BTreeMap::new();
    let mut progress = RestoreProgress {
        changelog: topics
            .values()
            .map(|t| format!("{t}[{partition}]"))
            .collect::<Vec<_>>()
            .join(", "),
        from: 0,
        at: 0,
        end: None,
        records: 0,
        bytes: 0,
    };
    let mut applied_at = Instant::now();
    let apply = |pending: &mut BTreeMap<&str, (changelog::Chunk, i64)>,
                 progress: &mut RestoreProgress|
     -> Result<(), String> {
        for (table, (chunk, next)) in pending.iter_mut() {
            if chunk.is_empty() {
                continue;
            }
            store
                .restore(table, chunk, *next)
                .map_err(|e| e.to_string())?;
            progress.records += chunk.len() as u64;
            chunk.clear();
        }
        cx.board
            .update(input, partition, |t| t.restore = Some(progress.clone()));
        Ok(())
    };
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let Some(table) = table_of.get(message.topic()).copied() else {
                    continue;
                };
                let (chunk, next) = pending.entry(table).or_default();
                *next = message.offset() + 1;
                // A record without a key only moves the position.
                if let Some(key) = message.key() {
                    let value = message.payload().map(<[u8]>::to_vec);
                    progress.bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
                    chunk.push((key.to_vec(), value));
                }
                if chunk.len() >= APPLY_CHUNK {
                    apply(&mut pending, &mut progress)?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                apply(&mut pending, &mut progress)?;
                return Err(format!("reading its changelog: {e}"));
            }
        }
        if applied_at.elapsed() >= APPLY_EVERY {
            apply(&mut pending, &mut progress)?;
            applied_at = Instant::now();
        }
    }
    apply(&mut pending, &mut progress)
}

/// The task's state file, as a standby may use it: under exactly-once, a
/// file that may hold a crashed task's uncommitted writes is deleted
/// first.
fn open(spec: &crate::config::PipelineSpec) -> Result<Arc<StateStore>, crate::state::StateError> {
    let store = StateStore::open(&spec.state_dir, &spec.name)?;
    if !spec.exactly_once() || store.checkpoint()?.is_none() {
        return Ok(store);
    }
    let path = store.path().to_path_buf();
    if transaction::clean(&path).exists() {
        return Ok(store);
    }
    tracing::info!(
        "standby of {}: not using the local state file (the task did not stop cleanly here, so \
         it may hold writes of a transaction that never committed); rebuilding it from the \
         changelog",
        spec.name
    );
    drop(store);
    std::fs::remove_file(&path).map_err(|e| crate::state::StateError {
        path: path.clone(),
        message: format!("cannot remove it: {e}"),
    })?;
    StateStore::open(&spec.state_dir, &spec.name)
}
