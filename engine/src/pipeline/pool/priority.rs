//! How busy a tenant has been on a worker pool, and the OS priority its
//! steps therefore run at; the pool ([`super`]) owns the queues and
//! threads, this owns the measure and the thread calls.
//!
//! A pool's share cap keeps a tenant to its workers, but on a small machine
//! a tenant that keeps its workers spinning (a plugin that loops until its
//! time limit, or that burns its whole budget on every record) still
//! competes for the same cores with everybody else's workers and with the
//! threads every tenant shares (HTTP, batch timers, delivery). Measured on
//! 2 cores (`SLUICE_BENCH_SERVE=noisy cargo bench -p sluice --bench
//! serve`), that doubled or tripled a light neighbour's p99 delay; with the
//! hostile steps at the lowest OS priority it stayed within 1.62× of the
//! neighbour running alone (engine/benches/README.md). So a tenant whose
//! steps used more than
//! [`BUSY_ABOVE`] of a core on average lately, or one of whose steps ran
//! out of time in the last [`TIMEOUT_MEMORY`], has its steps run on the
//! pool's low-priority workers (nice [`LOW_NICE`]): they still get every
//! cycle nobody else wants, but a light tenant's batch goes first. It runs
//! at normal priority again once its average falls under [`CALM_BELOW`].
//!
//! The average is the CPU time of its steps (the thread's own clock, so a
//! step waiting for a lock or the disk costs nothing), decayed
//! exponentially over [`WINDOW`]. An unprivileged thread may lower its own
//! priority but never raise it again, so the pool keeps two sets of
//! threads rather than renicing one back and forth; this file lowers a
//! thread once, and [`LONG_STEP`] says when the pool lowers one that is
//! running a step.

use std::time::{Duration, Instant};

/// Above this many cores of recent CPU use, a tenant runs at low priority.
pub const BUSY_ABOVE: f64 = 0.5;

/// Under this many cores (and no recent timeout), it runs at normal
/// priority again; the gap keeps a tenant near the line from flapping.
pub const CALM_BELOW: f64 = 0.25;

/// Time constant of a tenant's CPU average: a step's CPU time counts
/// `1/e` as much this long after it.
pub const WINDOW: Duration = Duration::from_secs(2);

/// How long a step that ran out of time keeps its tenant at low priority.
pub const TIMEOUT_MEMORY: Duration = Duration::from_secs(30);

/// A step still running after this long on a normal worker finishes at
/// low priority: a long step does not delay short ones.
pub const LONG_STEP: Duration = Duration::from_millis(50);

/// The nice value of the low-priority workers (the lowest priority).
pub const LOW_NICE: i32 = 19;

/// The CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the call to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The calling thread's id, where threads have their own priorities.
pub fn this_thread_id() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        Some(unsafe { libc::gettid() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Lowers the calling thread to [`LOW_NICE`].
pub fn lower_this_thread() -> std::io::Result<()> {
    match this_thread_id() {
        Some(tid) => lower_thread(tid),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-thread priorities are Linux's",
        )),
    }
}

/// Lowers thread `tid` of this process to [`LOW_NICE`] (on Linux a nice
/// value is a thread's own, and any thread may lower another of its
/// process); there is no way back without privileges.
pub fn lower_thread(tid: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain system call; a wrong id fails with ESRCH.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, LOW_NICE) };
        if done != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-thread priorities are Linux's",
        ))
    }
}

/// Renames the calling thread as the OS shows it (15 bytes at most).
pub fn name_this_thread(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string, truncated to
        // 16 bytes by the kernel.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// The calling thread's nice value (0 where it cannot be read).
#[cfg(test)]
pub fn this_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on this thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Why a tenant's priority changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Its steps now run at low priority: `load` cores lately, or a step
    /// timed out.
    Lowered { load: f64, timed_out: bool },
    /// Back to normal priority at `load` cores.
    Restored { load: f64 },
}

/// One tenant's recent CPU use on a pool and whether that puts it low.
#[derive(Debug, Default)]
pub struct Busy {
    /// Cores used, averaged as of `at`.
    load: f64,
    at: Option<Instant>,
    last_timeout: Option<Instant>,
    low: bool,
}

impl Busy {
    /// The average as of `now`.
    pub fn load(&self, now: Instant) -> f64 {
        match self.at {
            Some(at) => {
                let age = now.saturating_duration_since(at).as_secs_f64();
                self.load * (-age / WINDOW.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    /// Counts a step that ended at `now` after `cpu` of CPU time.
    pub fn record(&mut self, now: Instant, cpu: Duration, timed_out: bool) -> Option<Change> {
        self.load = self.load(now) + cpu.as_secs_f64() / WINDOW.as_secs_f64();
        self.at = Some(now);
        if timed_out {
            self.last_timeout = Some(now);
        }
        self.update(now)
    }

    /// Whether its steps run at low priority as of `now` (its average may
    /// have fallen since its last step), and what changed if anything.
    pub fn is_low(&mut self, now: Instant) -> (bool, Option<Change>) {
        let change = self.update(now);
        (self.low, change)
    }

    fn update(&mut self, now: Instant) -> Option<Change> {
        let load = self.load(now);
        let timed_out = self
            .last_timeout
            .is_some_and(|at| now.saturating_duration_since(at) < TIMEOUT_MEMORY);
        let low = timed_out || load > BUSY_ABOVE || (self.low && load >= CALM_BELOW);
        if low == self.low {
            return None;
        }
        self.low = low;
        Some(if low {
            Change::Lowered { load, timed_out }
        } else {
            Change::Restored { load }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_that_keeps_a_core_busy_goes_low_and_comes_back_when_calm() {
        let start = Instant::now();
        let mut busy = Busy::default();
        // 50 ms steps back to back: a whole core.
        let mut now = start;
        let mut lowered_at = None;
        for _ in 0..100 {
            now += Duration::from_millis(50);
            if let Some(Change::Lowered { load, timed_out }) =
                busy.record(now, Duration::from_millis(50), false)
            {
                assert!(!timed_out);
                assert!(load > BUSY_ABOVE);
                lowered_at = Some(now - start);
            }
        }
        // A full core crosses half a core after ln 2 windows (1.39 s).
        let lowered_at = lowered_at.expect("a busy tenant goes low");
        assert!(
            lowered_at > Duration::from_millis(1300) && lowered_at < Duration::from_millis(1500),
            "{lowered_at:?}"
        );
        assert!(busy.is_low(now).0);
        // Quiet for a second: still above the calm line, still low.
        assert_eq!(busy.is_low(now + Duration::from_secs(1)), (true, None));
        // Quiet long enough to fall under it: normal again, said once.
        let (low, change) = busy.is_low(now + Duration::from_secs(3));
        assert!(!low);
        assert!(matches!(change, Some(Change::Restored { load }) if load < CALM_BELOW));
        assert_eq!(busy.is_low(now + Duration::from_secs(4)), (false, None));
    }

    #[test]
    fn a_light_tenant_stays_at_normal_priority() {
        let mut busy = Busy::default();
        let mut now = Instant::now();
        // 2 ms of CPU every 10 ms: a fifth of a core, for a minute.
        for _ in 0..6000 {
            now += Duration::from_millis(10);
            assert_eq!(busy.record(now, Duration::from_millis(2), false), None);
        }
        assert!((busy.load(now) - 0.2).abs() < 0.01, "{}", busy.load(now));
    }

    #[test]
    fn a_step_that_timed_out_puts_its_tenant_low_for_a_while() {
        let start = Instant::now();
        let mut busy = Busy::default();
        // A timeout costs no CPU of the step's own here (it waited): still
        // low at once, and for the memory's length.
        assert!(matches!(
            busy.record(start, Duration::ZERO, true),
            Some(Change::Lowered {
                timed_out: true,
                ..
            })
        ));
        let quiet = start + TIMEOUT_MEMORY - Duration::from_secs(1);
        assert_eq!(busy.record(quiet, Duration::ZERO, false), None);
        assert!(busy.is_low(quiet).0);
        let (low, change) = busy.is_low(start + TIMEOUT_MEMORY);
        assert!(!low);
        assert!(matches!(change, Some(Change::Restored { .. })));
    }

    #[test]
    fn a_thread_that_lowers_itself_runs_at_the_lowest_priority_and_others_do_not() {
        let nice = std::thread::spawn(|| {
            lower_this_thread().unwrap();
            this_thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(nice, LOW_NICE);
        assert_eq!(
            std::thread::spawn(this_thread_nice).join().unwrap(),
            this_thread_nice()
        );
    }

    #[test]
    fn the_thread_clock_counts_work_not_waiting() {
        let before = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu() - before;
        let before = thread_cpu();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = thread_cpu() - before;
        assert!(slept < Duration::from_millis(10), "{slept:?}");
        assert!(worked > Duration::from_millis(30), "{worked:?}");
    }
}
