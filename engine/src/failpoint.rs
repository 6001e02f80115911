//! Crash points for the tests of the delivery guarantees: `SLUICE_CRASH_AT
//! = POINT:N` makes the process abort (as a power cut or `kill -9` would,
//! nothing flushed) the `N`-th time it reaches `POINT`, a moment random
//! kills rarely hit. The points, in the order a batch reaches them:
//!
//! | point | where |
//! |---|---|
//! | `renaming` | a `directory` sink wrote a batch's file under its temporary name, synced it, and has not renamed it into place |
//! | `written` | every sink took a batch with output; its checkpoint is not taken |
//! | `checkpointed` | the checkpoint covering that batch is durable; sinks have not published it (exactly-once) |
//! | `acknowledged` | the sources were told the batch is safe (a Kafka source commits its offsets); the process waits a second so they can, then aborts |
//!
//! `SLUICE_PAUSE_AT = POINT:N` instead stalls the thread that reaches it
//! for [`PAUSE`], saying so on standard error first: a test then stops the
//! whole process (`SIGSTOP`) at that moment, to make it a zombie with a
//! batch half-delivered (see the exactly-once task tests).
//!
//! Unset, a point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A place in a batch's way to its sinks where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Between a directory sink's durable temporary file and its rename.
    Renaming,
    /// Every sink wrote a batch; its checkpoint is not taken.
    Written,
    /// The checkpoint is durable; sinks have not published the batch.
    Checkpointed,
    /// The sources were told the batch is safe.
    Acknowledged,
}

impl Point {
    const ALL: [(Point, &'static str); 4] = [
        (Point::Renaming, "renaming"),
        (Point::Written, "written"),
        (Point::Checkpointed, "checkpointed"),
        (Point::Acknowledged, "acknowledged"),
    ];

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(p, _)| *p == self).unwrap().1
    }
}

static ARMED: OnceLock<(Point, u64)> = OnceLock::new();
static PAUSE_ARMED: OnceLock<(Point, u64)> = OnceLock::new();

/// How long `SLUICE_PAUSE_AT` stalls.
pub const PAUSE: std::time::Duration = std::time::Duration::from_secs(3);
static REACHED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Arms what `SLUICE_CRASH_AT` and `SLUICE_PAUSE_AT` ask for, if set.
pub fn arm_from_env() -> Result<(), String> {
    if let Ok(point) = std::env::var("SLUICE_CRASH_AT") {
        arm(&point).map_err(|e| format!("SLUICE_CRASH_AT: {e}"))?;
    }
    if let Ok(point) = std::env::var("SLUICE_PAUSE_AT") {
        arm_pause(&point).map_err(|e| format!("SLUICE_PAUSE_AT: {e}"))?;
    }
    Ok(())
}

/// Arms the crash point `POINT:N` (as `SLUICE_CRASH_AT` gives it).
pub fn arm(text: &str) -> Result<(), String> {
    ARMED
        .set(parse(text)?)
        .map_err(|_| "a crash point is already armed".to_string())
}

/// Arms the pause point `POINT:N` (as `SLUICE_PAUSE_AT` gives it).
pub fn arm_pause(text: &str) -> Result<(), String> {
    PAUSE_ARMED
        .set(parse(text)?)
        .map_err(|_| "a pause point is already armed".to_string())
}

fn parse(text: &str) -> Result<(Point, u64), String> {
    let parsed = text.split_once(':').and_then(|(name, n)| {
        let point = Point::ALL.iter().find(|(_, s)| *s == name)?.0;
        Some((point, n.parse::<u64>().ok().filter(|n| *n > 0)?))
    });
    parsed.ok_or_else(|| {
        let names: Vec<&str> = Point::ALL.iter().map(|(_, s)| *s).collect();
        format!(
            "`{text}`: expected POINT:N with N ≥ 1 and POINT one of {}",
            names.join(", ")
        )
    })
}

/// Counts a visit to `point`, and aborts the process if it is the armed
/// visit.
pub fn reached(point: Point) {
    let crash = ARMED.get().filter(|(p, _)| *p == point);
    let pause = PAUSE_ARMED.get().filter(|(p, _)| *p == point);
    if crash.is_none() && pause.is_none() {
        return;
    }
    let index = Point::ALL.iter().position(|(p, _)| *p == point).unwrap();
    let visit = REACHED[index].fetch_add(1, Ordering::Relaxed) + 1;
    if let Some((_, n)) = pause.filter(|(_, n)| *n == visit) {
        eprintln!(
            "sluice: SLUICE_PAUSE_AT: pausing at {}:{n} for {} s",
            point.name(),
            PAUSE.as_secs()
        );
        std::thread::sleep(PAUSE);
    }
    if let Some((_, n)) = crash.filter(|(_, n)| *n == visit) {
        if point == Point::Acknowledged {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        eprintln!("sluice: SLUICE_CRASH_AT: crashing at {}:{n}", point.name());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_points_are_explained() {
        let err = arm("nowhere:1").unwrap_err();
        assert!(
            err.contains("renaming, written, checkpointed, acknowledged"),
            "{err}"
        );
        assert!(arm("written:0").is_err());
        assert!(arm("written").is_err());
        assert!(arm_pause("checkpointed:x").is_err());
    }
}
