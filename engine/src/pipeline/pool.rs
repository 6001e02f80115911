//! A bounded pool of worker threads that run many pipelines' stages, fairly
//! across tenants: `sluice serve`'s answer to a thread per stage.
//!
//! A [`Job`] is one stage of one pipeline (or one pipeline's delivery to
//! its sinks). It is woken when there may be work for it (a batch arrived
//! on its input, or room appeared on its output); a woken job waits in its
//! tenant's queue, and the workers take tenants in turn (round robin), each
//! tenant at most its `share` of workers at once. A job runs one step (one
//! batch) at a time, so a tenant with a hundred busy pipelines gets its
//! turns, not the machine; a step is bounded by the stage's time limit.
//! A tenant whose steps keep timing out is held back for a while, longer
//! each time (up to [`MAX_BACKOFF`]), so a hostile plugin's cost is its
//! tenant's own.
//!
//! A job's life: idle → queued (woken) → running → idle, or queued again if
//! it was woken while it ran or has more to do. The state is one atomic, so
//! a wake-up is never lost between a step's last look at its input and its
//! going idle.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a tenant is held back after its steps time out.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a step says about its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do until woken.
    Idle,
    /// More to do at once (another batch is waiting).
    More,
    /// The step's plugin call ran out of time: the tenant is backed off.
    TimedOut,
    /// The job is over; forget it.
    Done,
}

/// The work of a job: one step at a time.
pub type Work = Box<dyn FnMut() -> Step + Send>;

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Running, and woken meanwhile: queue it again when the step ends.
const RUNNING_WOKEN: u8 = 3;
const DONE: u8 = 4;

/// One schedulable unit of work, owned by a tenant.
pub struct Job {
    tenant: Option<String>,
    state: AtomicU8,
    work: Mutex<Work>,
    pool: Weak<Shared>,
}

impl Job {
    /// Says there may be work: queues the job unless it is queued already
    /// (or running, when it is queued again once its step ends).
    pub fn wake(self: &Arc<Self>) {
        loop {
            let state = self.state.load(Ordering::Acquire);
            let next = match state {
                IDLE => QUEUED,
                RUNNING => RUNNING_WOKEN,
                _ => return,
            };
            if self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if next == QUEUED {
                    if let Some(pool) = self.pool.upgrade() {
                        pool.enqueue(self.clone());
                    }
                }
                return;
            }
        }
    }
}

/// A tenant's jobs waiting for a worker.
#[derive(Default)]
struct TenantQueue {
    jobs: VecDeque<Arc<Job>>,
    running: usize,
    /// Consecutive timed-out steps, and until when the tenant waits.
    timeouts: u32,
    held_until: Option<Instant>,
}

struct Sched {
    tenants: BTreeMap<Option<String>, TenantQueue>,
    /// Tenants in turn; the next to serve is at the front.
    turn: VecDeque<Option<String>>,
    shares: BTreeMap<Option<String>, usize>,
    default_share: usize,
    stopping: bool,
}

struct Shared {
    sched: Mutex<Sched>,
    ready: Condvar,
}

/// The pool.
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
}

impl WorkerPool {
    /// A pool of `workers` threads named `name-N`; a tenant may use
    /// `default_share` of them at once unless [`WorkerPool::set_share`]
    /// says otherwise.
    pub fn new(name: &str, workers: usize, default_share: usize) -> Arc<WorkerPool> {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            sched: Mutex::new(Sched {
                tenants: BTreeMap::new(),
                turn: VecDeque::new(),
                shares: BTreeMap::new(),
                default_share: default_share.clamp(1, workers),
                stopping: false,
            }),
            ready: Condvar::new(),
        });
        let threads = (0..workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || shared.work())
                    .expect("spawning a worker thread")
            })
            .collect();
        Arc::new(WorkerPool {
            shared,
            threads: Mutex::new(threads),
            workers,
        })
    }

    /// How many workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// At most `share` workers for `tenant` at once.
    pub fn set_share(&self, tenant: Option<&str>, share: usize) {
        let mut sched = self.shared.lock();
        let share = share.clamp(1, self.workers);
        sched.shares.insert(tenant.map(str::to_string), share);
        drop(sched);
        self.shared.ready.notify_all();
    }

    /// A new job of `tenant` doing `work`, idle until woken.
    pub fn job(&self, tenant: Option<&str>, work: Work) -> Arc<Job> {
        Arc::new(Job {
            tenant: tenant.map(str::to_string),
            state: AtomicU8::new(IDLE),
            work: Mutex::new(work),
            pool: Arc::downgrade(&self.shared),
        })
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_all();
        for thread in self.threads.lock().unwrap().drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, job: Arc<Job>) {
        let mut sched = self.lock();
        let tenant = job.tenant.clone();
        let queue = sched.tenants.entry(tenant.clone()).or_default();
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push_back(job);
        if was_empty && !sched.turn.contains(&tenant) {
            sched.turn.push_back(tenant);
        }
        drop(sched);
        self.ready.notify_one();
    }

    /// The next job a worker may run: the first tenant in turn with a job
    /// waiting, room in its share, and not held back. That tenant goes to
    /// the back of the turn.
    fn pick(sched: &mut Sched, now: Instant) -> (Option<Arc<Job>>, Option<Instant>) {
        let mut wake_at: Option<Instant> = None;
        for _ in 0..sched.turn.len() {
            let tenant = sched.turn.pop_front().expect("turn is not empty");
            let share = sched
                .shares
                .get(&tenant)
                .copied()
                .unwrap_or(sched.default_share);
            let queue = sched.tenants.entry(tenant.clone()).or_default();
            if queue.jobs.is_empty() {
                continue;
            }
            if let Some(until) = queue.held_until.filter(|u| *u > now) {
                wake_at = Some(wake_at.map_or(until, |w| w.min(until)));
                sched.turn.push_back(tenant);
                continue;
            }
            if queue.running >= share {
                sched.turn.push_back(tenant);
                continue;
            }
            let job = queue.jobs.pop_front();
            queue.running += 1;
            sched.turn.push_back(tenant);
            return (job, wake_at);
        }
        (None, wake_at)
    }

    fn work(self: Arc<Self>) {
        let mut sched = self.lock();
        loop {
            if sched.stopping {
                return;
            }
            let (job, wake_at) = Self::pick(&mut sched, Instant::now());
            let Some(job) = job else {
                sched = match wake_at {
                    Some(at) => {
                        let wait = at.saturating_duration_since(Instant::now());
                        self.ready
                            .wait_timeout(sched, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => self.ready.wait(sched).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            };
            drop(sched);
            job.state.store(RUNNING, Ordering::Release);
            let step = {
                let mut work = job.work.lock().unwrap_or_else(|p| p.into_inner());
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (work)()))
                    .unwrap_or(Step::Done)
            };
            sched = self.lock();
            let queue = sched.tenants.entry(job.tenant.clone()).or_default();
            queue.running -= 1;
            match step {
                Step::TimedOut => {
                    queue.timeouts += 1;
                    if queue.timeouts >= 2 {
                        let factor = 1u32 << (queue.timeouts - 2).min(7);
                        let hold = (Duration::from_millis(100) * factor).min(MAX_BACKOFF);
                        queue.held_until = Some(Instant::now() + hold);
                    }
                }
                // A step that did not time out forgives earlier timeouts.
                Step::Idle | Step::More => queue.timeouts = 0,
                Step::Done => {}
            }
            let requeue = match step {
                Step::Done => {
                    job.state.store(DONE, Ordering::Release);
                    false
                }
                Step::More | Step::TimedOut => {
                    job.state.store(QUEUED, Ordering::Release);
                    true
                }
                Step::Idle => job
                    .state
                    .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err_and(|_| {
                        // Woken while it ran.
                        job.state.store(QUEUED, Ordering::Release);
                        true
                    }),
            };
            if requeue {
                let tenant = job.tenant.clone();
                let queue = sched.tenants.entry(tenant.clone()).or_default();
                let was_empty = queue.jobs.is_empty();
                queue.jobs.push_back(job);
                if was_empty && !sched.turn.contains(&tenant) {
                    sched.turn.push_back(tenant);
                }
            }
            // A share freed up, or a job was queued: others may run now.
            self.ready.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A job that counts its steps and does `work` steps in all.
    fn counting(pool: &WorkerPool, tenant: &str, work: usize, ran: Arc<AtomicUsize>) -> Arc<Job> {
        let mut left = work;
        pool.job(
            Some(tenant),
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                left -= 1;
                if left == 0 { Step::Done } else { Step::More }
            }),
        )
    }

    #[test]
    fn a_woken_job_runs_until_done_and_tenants_take_turns() {
        let pool = WorkerPool::new("test-pool", 1, 1);
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Tenant A has ten busy jobs, tenant B one.
        let jobs_a: Vec<_> = (0..10)
            .map(|_| counting(&pool, "a", 20, a.clone()))
            .collect();
        let job_b = counting(&pool, "b", 20, b.clone());
        for job in &jobs_a {
            job.wake();
        }
        job_b.wake();
        let start = Instant::now();
        while b.load(Ordering::SeqCst) < 20 {
            assert!(start.elapsed() < Duration::from_secs(10), "B starved");
            std::thread::sleep(Duration::from_millis(5));
        }
        // B got every other turn: A had run about as many steps, not its
        // ten jobs' worth each time.
        let a_steps = a.load(Ordering::SeqCst);
        assert!(a_steps <= 25, "A ran {a_steps} steps while B ran 20");
    }

    #[test]
    fn a_wake_during_a_step_runs_the_job_again() {
        let pool = WorkerPool::new("test-pool", 2, 2);
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let job = pool.job(
            None,
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Step::Idle
            }),
        );
        job.wake();
        std::thread::sleep(Duration::from_millis(20));
        job.wake(); // while it runs
        job.wake(); // folded into the same re-run
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_tenant_that_times_out_is_held_back() {
        let pool = WorkerPool::new("test-pool", 1, 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let job = pool.job(
            Some("noisy"),
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Step::TimedOut
            }),
        );
        job.wake();
        std::thread::sleep(Duration::from_millis(1000));
        // Without holding back it would have run thousands of times.
        let steps = ran.load(Ordering::SeqCst);
        assert!(steps < 12, "{steps} steps in a second");
    }

    #[test]
    fn a_share_caps_a_tenants_workers() {
        let pool = WorkerPool::new("test-pool", 2, 1);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                let mut left = 5;
                pool.job(
                    Some("t"),
                    Box::new(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        left -= 1;
                        if left == 0 { Step::Done } else { Step::More }
                    }),
                )
            })
            .collect();
        for job in &jobs {
            job.wake();
        }
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
