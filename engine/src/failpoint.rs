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
static REACHED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Arms the crash point `POINT:N` (as `SLUICE_CRASH_AT` gives it).
pub fn arm(text: &str) -> Result<(), String> {
    let parsed = text.split_once(':').and_then(|(name, n)| {
        let point = Point::ALL.iter().find(|(_, s)| *s == name)?.0;
        Some((point, n.parse::<u64>().ok().filter(|n| *n > 0)?))
    });
    let Some(armed) = parsed else {
        let names: Vec<&str> = Point::ALL.iter().map(|(_, s)| *s).collect();
        return Err(format!(
            "`{text}`: expected POINT:N with N ≥ 1 and POINT one of {}",
            names.join(", ")
        ));
    };
    ARMED
        .set(armed)
        .map_err(|_| "a crash point is already armed".to_string())
}

/// Counts a visit to `point`, and aborts the process if it is the armed
/// visit.
pub fn reached(point: Point) {
    let Some((armed, n)) = ARMED.get() else {
        return;
    };
    if *armed != point {
        return;
    }
    let index = Point::ALL.iter().position(|(p, _)| *p == point).unwrap();
    if REACHED[index].fetch_add(1, Ordering::Relaxed) + 1 == *n {
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
    }
}
