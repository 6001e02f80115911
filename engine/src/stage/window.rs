//! Windowed stages (`window = { length, slide }`): the engine keeps the
//! records of the last `length` batch intervals and hands all of them to
//! the plugin every `slide` intervals, as one call.
//!
//! The window is host-owned like the rest of a stage's state: each batch's
//! records go into the `window:<stage>` table of the state file, committed
//! with the batch's checkpoint, and are deleted when they leave the window.
//! A restarted pipeline reads the table back and carries on, so a window
//! never loses what it held, and records replayed from the checkpoint's
//! positions come in once, as new.
//!
//! Intervals are counted, not read off the clock: interval `n + 1` is the
//! one after interval `n` in the run, and a new run starts after the last
//! interval the old one checkpointed (or finishes it, if the old run
//! stopped part-way through it: then the call due at its end still comes).
//! Calls happen at the end of every interval `n` with
//! `(n + 1) % slide == 0`, so the rhythm survives restarts.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::batch::Records;
use crate::state::{StageState, StateError, Writes};

use super::config::WindowSpec;

/// Key of the last interval a batch belonged to: its number (8 bytes, big
/// endian) and whether it ended (1 byte).
const AT_KEY: &[u8] = b"at";
/// First byte of the key of a batch's records: `r`, interval, part.
const RECORDS_TAG: u8 = b'r';

/// One stage's window: what it holds and where it is.
pub struct Window {
    spec: WindowSpec,
    interval_ms: u64,
    state: Arc<StageState>,
    /// Records held, oldest first: (interval, part, records). An interval
    /// cut into several batches has one part per batch.
    held: VecDeque<(u64, u32, Records)>,
    /// The interval of the latest batch, with its batch time in this run
    /// (`None` before this run's first batch).
    at: Option<(u64, u64)>,
    /// The last interval checkpointed by an earlier run, and whether it
    /// ended there.
    restored_at: Option<(u64, bool)>,
    /// Parts of the current interval so far.
    parts: u32,
}

/// What one batch does to a window.
#[derive(Debug, Default)]
pub struct Step {
    /// The window's records, when this batch ends a call's interval.
    pub fire: Option<Records>,
    /// Changes to checkpoint with the batch.
    pub writes: Writes,
}

fn records_key(interval: u64, part: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(RECORDS_TAG);
    key.extend_from_slice(&interval.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

impl Window {
    /// The window of a stage, with whatever its last checkpoint held.
    pub fn open(
        spec: WindowSpec,
        interval_ms: u64,
        state: Arc<StageState>,
    ) -> Result<Window, StateError> {
        let damaged = |what: &str| StateError {
            path: state.store().path().to_path_buf(),
            message: format!("the stored window is damaged: {what}"),
        };
        let mut held = VecDeque::new();
        let mut restored_at = None;
        for (key, value) in state.checkpointed_entries()? {
            if key == AT_KEY {
                if value.len() != 9 {
                    return Err(damaged("its position is not 9 bytes"));
                }
                let interval = u64::from_be_bytes(value[..8].try_into().unwrap());
                restored_at = Some((interval, value[8] == 1));
            } else if key.len() == 13 && key[0] == RECORDS_TAG {
                let interval = u64::from_be_bytes(key[1..9].try_into().unwrap());
                let part = u32::from_be_bytes(key[9..13].try_into().unwrap());
                let records = Records::from_bytes(&value).ok_or_else(|| {
                    damaged(&format!(
                        "the records of interval {interval} do not read back"
                    ))
                })?;
                held.push_back((interval, part, records));
            } else {
                return Err(damaged("it has an entry the engine did not write"));
            }
        }
        Ok(Window {
            spec,
            interval_ms: interval_ms.max(1),
            state,
            held,
            at: None,
            restored_at,
            parts: 0,
        })
    }

    /// The table the window lives in, to checkpoint its writes.
    pub fn state(&self) -> &Arc<StageState> {
        &self.state
    }

    /// Records held right now.
    pub fn held_records(&self) -> usize {
        self.held.iter().map(|(_, _, r)| r.len()).sum()
    }

    /// Takes one batch (`ends_interval`: no more batches of its interval
    /// follow). Returns the window to process when a call is due.
    pub fn take(&mut self, time_ms: u64, ends_interval: bool, input: Records) -> Step {
        let interval = match (self.at, self.restored_at) {
            // The last run stopped part-way through an interval: this run's
            // first interval finishes it.
            (None, Some((at, false))) => {
                self.parts = self
                    .held
                    .iter()
                    .filter(|(i, _, _)| *i == at)
                    .map(|(_, part, _)| part + 1)
                    .max()
                    .unwrap_or(0);
                at
            }
            (None, Some((at, true))) => at + 1,
            (None, None) => 0,
            (Some((at, at_time)), _) if time_ms > at_time => {
                self.parts = 0;
                at + ((time_ms - at_time) / self.interval_ms).max(1)
            }
            (Some((at, _)), _) => at,
        };
        let time = match self.at {
            Some((at, at_time)) if at == interval => at_time,
            _ => time_ms,
        };
        self.at = Some((interval, time));
        let mut writes = Writes::new();
        if !input.is_empty() {
            writes.insert(records_key(interval, self.parts), Some(input.to_bytes()));
            self.held.push_back((interval, self.parts, input));
            self.parts += 1;
        }
        while let Some((oldest, part, _)) = self.held.front() {
            if oldest + self.spec.length > interval {
                break;
            }
            writes.insert(records_key(*oldest, *part), None);
            self.held.pop_front();
        }
        let mut at = interval.to_be_bytes().to_vec();
        at.push(u8::from(ends_interval));
        writes.insert(AT_KEY.to_vec(), Some(at));
        let due = ends_interval && (interval + 1) % self.spec.slide == 0;
        let fire = due.then(|| {
            let mut all = Records::default();
            for (_, _, records) in &self.held {
                all.append(records.clone());
            }
            all
        });
        Step { fire, writes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Checkpoint, StateStore};

    fn batch(values: &[&str]) -> Records {
        let mut r = Records::default();
        for v in values {
            r.push_value(v.as_bytes(), 0);
        }
        r
    }

    fn values(r: &Option<Records>) -> Option<Vec<String>> {
        r.as_ref().map(|r| {
            r.iter()
                .map(|x| String::from_utf8(x.value().to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn calls_every_slide_with_the_last_length_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        let spec = WindowSpec {
            length: 3,
            slide: 2,
        };
        let mut w = Window::open(spec, 100, StageState::window(store.clone(), "avg")).unwrap();
        let mut t = 1_000;
        // Each batch's writes are checkpointed, as the sink thread does.
        let mut step = |w: &mut Window, v: &[&str], ends: bool| {
            let s = w.take(t, ends, batch(v));
            if ends {
                t += 100;
            }
            let writes = (w.state().clone(), s.writes.clone());
            store.commit(&[writes], &Checkpoint::default()).unwrap();
            s
        };
        // Interval 0: not due.
        assert_eq!(values(&step(&mut w, &["a"], true).fire), None);
        // Interval 1, cut in two batches: due at its last batch only.
        assert_eq!(values(&step(&mut w, &["b"], false).fire), None);
        let s = step(&mut w, &["c"], true);
        assert_eq!(
            values(&s.fire),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        // Intervals 2 and 3: `a` (interval 0) leaves at interval 3.
        step(&mut w, &[], true);
        let s = step(&mut w, &["d"], true);
        assert_eq!(
            values(&s.fire),
            Some(vec!["b".into(), "c".into(), "d".into()])
        );
        assert_eq!(s.writes[&records_key(0, 0)], None);
        drop(w);
        // Reopened: the window carries on from interval 4 with b, c, d, and
        // its rhythm (due every second interval) continues.
        let mut w = Window::open(spec, 100, StageState::window(store, "avg")).unwrap();
        assert_eq!(w.held_records(), 3);
        // Interval 4: b and c (interval 1) leave; not due. Interval 5: due.
        assert_eq!(values(&w.take(50, true, batch(&["e"])).fire), None);
        let s = w.take(150, true, batch(&[]));
        assert_eq!(values(&s.fire), Some(vec!["d".into(), "e".into()]));
    }

    #[test]
    fn a_run_that_stops_mid_interval_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        // Tumbling windows of one interval: each interval's records are
        // seen exactly once.
        let spec = WindowSpec {
            length: 1,
            slide: 1,
        };
        let mut w = Window::open(spec, 100, StageState::window(store.clone(), "w")).unwrap();
        // Interval 0 is cut: its first part is checkpointed, then the run
        // stops before the rest.
        let s = w.take(1000, false, batch(&["a"]));
        assert_eq!(values(&s.fire), None);
        store
            .commit(&[(w.state().clone(), s.writes)], &Checkpoint::default())
            .unwrap();
        drop(w);
        let mut w = Window::open(spec, 100, StageState::window(store, "w")).unwrap();
        // The next run's first interval finishes interval 0: `a` is seen
        // with the rest, once.
        let s = w.take(5000, true, batch(&["b"]));
        assert_eq!(values(&s.fire), Some(vec!["a".into(), "b".into()]));
        assert!(
            s.writes.contains_key(&records_key(0, 1)),
            "parts go on after 0"
        );
        let s = w.take(5100, true, batch(&["c"]));
        assert_eq!(values(&s.fire), Some(vec!["c".into()]));
    }

    #[test]
    fn a_damaged_window_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        let state = StageState::window(store.clone(), "avg");
        let bad: Writes = [(records_key(0, 0), Some(b"not records".to_vec()))].into();
        store
            .commit(&[(state.clone(), bad)], &Checkpoint::default())
            .unwrap();
        let spec = WindowSpec {
            length: 2,
            slide: 1,
        };
        let err = Window::open(spec, 100, state).err().expect("must not open");
        assert!(err.to_string().contains("p.redb"), "{err}");
        assert!(err.to_string().contains("window"), "{err}");
    }
}
