//! What a process shows of its tasks (`sluice status`, the service's
//! pipeline status): each task's partition, where it is in its life and
//! how far behind the input it is.
//!
//! The consumer loop writes here; status readers take a copy. Not here: the tasks themselves (`member`, `task`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Being built: its state file opened, its stages instantiated (its
    /// partition is paused meanwhile).
    Starting,
    /// Bringing its state up to date from its changelog (see
    /// [`TaskStatus::restore`]) before it reads a record.
    Restoring,
    /// Processing its partition.
    Running,
    /// Its partition is being taken away: finishing the batch in flight.
    Stopping,
    /// Not run here: a warm copy of its state, followed from its
    /// changelog (`standby_replicas = 1`; [`TaskStatus::restore`] counts
    /// what it applied).
    Standby,
}

impl Phase {
    /// Its name, as status, the JSON and the metrics write it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Restoring => "restoring",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Standby => "standby",
        }
    }
}

/// One task, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// `<pipeline>.p<N>` (or `<pipeline>.<stage>.p<N>`).
    pub task: String,
    /// The topic it reads.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Where it is.
    pub phase: Phase,
    /// Messages in its partition not yet read (from the consumer's
    /// statistics, every second; `None` until the first).
    pub lag: Option<i64>,
    /// The next offset it reads, once running.
    pub position: Option<i64>,
    /// While restoring: how far (a standby: what it has applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreProgress>,
}

/// How far a task's restore from one changelog partition has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    /// The changelog partition it reads: `topic[partition]`.
    pub changelog: String,
    /// The first offset it read, the offset after the last, and the
    /// partition's end as the broker gave it when the restore began (an
    /// estimate: writes may still arrive; `None` when not known).
    pub from: i64,
    pub at: i64,
    pub end: Option<i64>,
    /// Records applied and their bytes (keys and values).
    pub records: u64,
    pub bytes: u64,
}

impl RestoreProgress {
    /// The share of the offsets from `from` to `end` read so far, in
    /// percent (below 100 until the restore ends; `None` without an end).
    pub fn percent(&self) -> Option<u32> {
        let end = self.end?;
        let span = end - self.from;
        if span <= 0 {
            return Some(99);
        }
        let done = (self.at - self.from).clamp(0, span);
        Some(((done * 100 / span) as u32).min(99))
    }
}

/// The tasks of one process's share of a partitioned pipeline.
#[derive(Debug, Default)]
pub struct TaskBoard {
    tasks: Mutex<BTreeMap<(String, i32), TaskStatus>>,
}

// Only the Kafka tasks fill a board.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
impl TaskBoard {
    /// Every task, by topic and partition.
    pub fn snapshot(&self) -> Vec<TaskStatus> {
        self.lock().values().cloned().collect()
    }

    /// A new task, starting.
    pub(super) fn add(&self, task: &str, topic: &str, partition: i32) {
        self.lock().insert(
            (topic.to_string(), partition),
            TaskStatus {
                task: task.to_string(),
                topic: topic.to_string(),
                partition,
                phase: Phase::Starting,
                lag: None,
                position: None,
                restore: None,
            },
        );
    }

    /// Changes the task of `topic`/`partition`, if there is one.
    pub(super) fn update(&self, topic: &str, partition: i32, change: impl FnOnce(&mut TaskStatus)) {
        if let Some(status) = self.lock().get_mut(&(topic.to_string(), partition)) {
            change(status);
        }
    }

    /// Forgets a task.
    pub(super) fn remove(&self, topic: &str, partition: i32) {
        self.lock().remove(&(topic.to_string(), partition));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), TaskStatus>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tasks as a line of the log or of `sluice status`:
/// `wc.p0 (lines[0]) running lag 0, wc.p3 (lines[3]) restoring
/// wc-count-changelog[3] 41% (120000 records)`.
pub fn summary(tasks: &[TaskStatus]) -> String {
    if tasks.is_empty() {
        return "no tasks (no partitions assigned)".into();
    }
    tasks
        .iter()
        .map(|t| {
            let mut line = format!("{} ({}[{}]) ", t.task, t.topic, t.partition);
            line.push_str(t.phase.name());
            // A standby's progress changes every second: in the JSON, not
            // in the log's line.
            if let (Phase::Restoring, Some(r)) = (t.phase, &t.restore) {
                line.push_str(&format!(" {}", r.changelog));
                if let Some(percent) = r.percent() {
                    line.push_str(&format!(" {percent}%"));
                }
                line.push_str(&format!(" ({} records)", r.records));
            }
            if let Some(lag) = t.lag {
                line.push_str(&format!(" lag {lag}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_listed_with_their_phase_progress_and_lag() {
        let board = TaskBoard::default();
        board.add("wc.p1", "lines", 1);
        board.add("wc.p0", "lines", 0);
        board.update("lines", 0, |t| {
            t.phase = Phase::Running;
            t.lag = Some(7);
        });
        assert_eq!(
            summary(&board.snapshot()),
            "wc.p0 (lines[0]) running lag 7, wc.p1 (lines[1]) starting"
        );
        board.update("lines", 1, |t| {
            t.phase = Phase::Restoring;
            t.restore = Some(RestoreProgress {
                changelog: "wc-count-changelog[1]".into(),
                from: 100,
                at: 350,
                end: Some(1100),
                records: 240,
                bytes: 4800,
            });
        });
        assert_eq!(
            summary(&board.snapshot()),
            "wc.p0 (lines[0]) running lag 7, wc.p1 (lines[1]) restoring wc-count-changelog[1] \
             25% (240 records)"
        );
        // The JSON spells each phase as status and the metrics do.
        for phase in [
            Phase::Starting,
            Phase::Restoring,
            Phase::Running,
            Phase::Stopping,
            Phase::Standby,
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.name());
        }
        // What status readers get back from the JSON.
        let json = serde_json::to_string(&board.snapshot()).unwrap();
        let back: Vec<TaskStatus> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, board.snapshot());
        board.remove("lines", 0);
        board.remove("lines", 1);
        assert_eq!(
            summary(&board.snapshot()),
            "no tasks (no partitions assigned)"
        );
    }
}
