//! What happened to a pipeline besides its batches, for the dashboard:
//! plugin versions going live, rejected or rolled back (drawn on the
//! timelines), and problems — failed plugin calls, dead letters, the
//! pipeline failing. Two short rings, so a stream of dead letters never
//! pushes the version history out. Written by the events, read by the
//! dashboard; the log and the metrics are the events' business.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Most notes kept per ring.
const KEPT: usize = 64;

/// What a note is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// A version went live (a hot swap, a deploy, a rollback asked for).
    Live,
    /// A version failed to load or to `init`.
    Rejected,
    /// A version on probation failed and the previous one came back.
    RolledBack,
    /// A version passed probation.
    Trusted,
    /// A call into a plugin failed.
    PluginError,
    /// Records were dead-lettered.
    DeadLetters,
    /// The pipeline stopped with an error.
    Failed,
}

impl NoteKind {
    fn is_version(self) -> bool {
        matches!(
            self,
            NoteKind::Live | NoteKind::Rejected | NoteKind::RolledBack | NoteKind::Trusted
        )
    }
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// What.
    pub kind: NoteKind,
    /// The stage, if it was one's.
    #[serde(serialize_with = "shared_text")]
    pub stage: Option<Arc<str>>,
    /// The batch, if it was one's.
    pub batch: Option<u64>,
    /// How many records, for dead letters.
    pub records: Option<u64>,
    /// The details, as the log says them.
    pub text: String,
}

fn shared_text<S: serde::Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => s.serialize_some(&**text),
        None => s.serialize_none(),
    }
}

/// A pipeline's notes.
#[derive(Debug, Default)]
pub struct Journal {
    versions: Mutex<VecDeque<Note>>,
    problems: Mutex<VecDeque<Note>>,
}

impl Journal {
    /// Keeps `note` (the oldest of its ring goes when it is full).
    pub fn add(&self, note: Note) {
        let ring = if note.kind.is_version() {
            &self.versions
        } else {
            &self.problems
        };
        let mut ring = ring.lock().unwrap();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(note);
    }

    /// Version notes, oldest first.
    pub fn versions(&self) -> Vec<Note> {
        self.versions.lock().unwrap().iter().cloned().collect()
    }

    /// Problem notes, oldest first.
    pub fn problems(&self) -> Vec<Note> {
        self.problems.lock().unwrap().iter().cloned().collect()
    }

    /// How many problems are kept.
    pub fn problem_count(&self) -> usize {
        self.problems.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: NoteKind, time_ms: u64) -> Note {
        Note {
            time_ms,
            kind,
            stage: None,
            batch: None,
            records: None,
            text: String::new(),
        }
    }

    #[test]
    fn dead_letters_never_push_versions_out() {
        let journal = Journal::default();
        journal.add(note(NoteKind::Live, 1));
        for t in 0..1000 {
            journal.add(note(NoteKind::DeadLetters, t));
        }
        assert_eq!(journal.versions().len(), 1);
        assert_eq!(journal.problems().len(), KEPT);
        assert_eq!(journal.problems()[0].time_ms, 1000 - KEPT as u64);
    }
}
