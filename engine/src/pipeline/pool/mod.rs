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
//! Each pool has two sets of `workers` threads: normal ones, and ones at the
//! lowest OS priority that run the steps of tenants that have been busy
//! lately (see [`priority`]): a tenant keeping its workers spinning gets
//! every spare cycle, but a light tenant's batch goes first. A step that
//! runs longer than [`priority::LONG_STEP`] on a normal worker is moved
//! over while it runs: its thread is lowered (for good: an unprivileged
//! thread cannot be raised again), joins the low workers, and a new thread
//! takes its place among the normal ones, so the long step neither delays
//! short ones at equal priority nor keeps a normal worker from them. Extra
//! low workers end once they find nothing to do.
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

mod priority;

use priority::{Busy, Change};

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
    /// Its pipelines are being removed with it: finish what they hold
    /// without holding back.
    leaving: bool,
    /// Its recent CPU use, which decides the workers it runs on.
    busy: Busy,
}

/// Which set of workers a thread belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Normal = 0,
    Low = 1,
}

impl Class {
    fn of(low: bool) -> Class {
        if low { Class::Low } else { Class::Normal }
    }

    fn other(self) -> Class {
        match self {
            Class::Normal => Class::Low,
            Class::Low => Class::Normal,
        }
    }
}

/// A normal worker's place: its thread, and the step it runs since when.
/// A thread lowered mid-step cannot be raised again, so it leaves the slot
/// (it finishes its step and stays as a low worker) and a new thread takes
/// the slot at once: a new generation.
#[derive(Default)]
struct Slot {
    generation: u64,
    tid: Option<i32>,
    running: Option<(Instant, Arc<Job>)>,
}

struct Sched {
    tenants: BTreeMap<Option<String>, TenantQueue>,
    /// Tenants in turn; the next to serve is at the front.
    turn: VecDeque<Option<String>>,
    shares: BTreeMap<Option<String>, usize>,
    default_share: usize,
    stopping: bool,
    workers: usize,
    /// The normal workers.
    slots: Vec<Slot>,
    /// Low-priority workers alive: more than `workers` after normal ones
    /// were lowered mid-step; the extra ones end when they find no work.
    low_workers: usize,
}

impl Sched {
    /// Puts `job` at the back of its tenant's queue (a tenant that had
    /// nothing waiting takes a turn again); whether the tenant runs low as
    /// of `now`, and what changed.
    fn push(&mut self, job: Arc<Job>, now: Instant) -> (bool, Option<Change>) {
        let tenant = job.tenant.clone();
        let queue = self.tenants.entry(tenant.clone()).or_default();
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push_back(job);
        let low = queue.busy.is_low(now);
        if was_empty && !self.turn.contains(&tenant) {
            self.turn.push_back(tenant);
        }
        low
    }
}

struct Shared {
    name: String,
    sched: Mutex<Sched>,
    /// Where each class of workers waits for work.
    ready: [Condvar; 2],
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Numbers the names of workers lowered mid-step.
    lowered: std::sync::atomic::AtomicUsize,
}

/// What a worker found to do.
struct Pick {
    job: Option<Arc<Job>>,
    /// When a held tenant may run again.
    wake_at: Option<Instant>,
    /// A job that the other class of workers may run is waiting.
    other: bool,
}

/// The pool.
pub struct WorkerPool {
    shared: Arc<Shared>,
    workers: usize,
}

impl WorkerPool {
    /// A pool of `workers` threads named `name-N`, and as many at low
    /// priority named `name-lowN`; a tenant may use `default_share`
    /// workers at once unless [`WorkerPool::set_share`] says otherwise.
    pub fn new(name: &str, workers: usize, default_share: usize) -> Arc<WorkerPool> {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            sched: Mutex::new(Sched {
                tenants: BTreeMap::new(),
                turn: VecDeque::new(),
                shares: BTreeMap::new(),
                default_share: default_share.clamp(1, workers),
                stopping: false,
                workers,
                slots: (0..workers).map(|_| Slot::default()).collect(),
                low_workers: workers,
            }),
            ready: [Condvar::new(), Condvar::new()],
            threads: Mutex::new(Vec::new()),
            lowered: std::sync::atomic::AtomicUsize::new(workers),
        });
        for class in [Class::Normal, Class::Low] {
            for i in 0..workers {
                shared.spawn(class, i).expect("spawning a worker thread");
            }
        }
        Arc::new(WorkerPool { shared, workers })
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
        self.shared.notify_all();
    }

    /// Says `tenant` is leaving (its pipelines stop to be deleted): its
    /// steps are no longer held back after timeouts, so what its pipelines
    /// hold is finished as fast as its time limits allow. `false` once it
    /// is gone forgets everything about it.
    pub fn set_leaving(&self, tenant: Option<&str>, leaving: bool) {
        let tenant = tenant.map(str::to_string);
        let mut sched = self.shared.lock();
        if leaving {
            let queue = sched.tenants.entry(tenant).or_default();
            queue.leaving = true;
            queue.held_until = None;
        } else if let Some(queue) = sched.tenants.get_mut(&tenant) {
            *queue = TenantQueue {
                jobs: std::mem::take(&mut queue.jobs),
                running: queue.running,
                ..TenantQueue::default()
            };
        }
        drop(sched);
        self.shared.notify_all();
    }

    /// `tenant`'s recent CPU use on this pool, in cores, and whether its
    /// steps run at low priority for it.
    pub fn cpu(&self, tenant: Option<&str>) -> (f64, bool) {
        let now = Instant::now();
        let tenant = tenant.map(str::to_string);
        let mut sched = self.shared.lock();
        let Some(queue) = sched.tenants.get_mut(&tenant) else {
            return (0.0, false);
        };
        let (low, change) = queue.busy.is_low(now);
        let load = queue.busy.load(now);
        drop(sched);
        self.shared.tell(&tenant, change);
        (load, low)
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
        self.shared.notify_all();
        // A worker may start its slot's next thread meanwhile: join until
        // none is left.
        loop {
            let threads = std::mem::take(
                &mut *self
                    .shared
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a worker of `class`: normal workers take slot `n`, low ones
    /// are named with `n`.
    fn spawn(self: &Arc<Self>, class: Class, n: usize) -> std::io::Result<()> {
        let shared = self.clone();
        let name = match class {
            Class::Normal => format!("{}-{n}", self.name),
            Class::Low => format!("{}-low{n}", self.name),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || shared.work(class, n))?;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
        Ok(())
    }

    /// Lowers the thread of every normal worker whose step has run longer
    /// than [`priority::LONG_STEP`]: the step finishes at low priority, on
    /// a thread that is now a low worker, and a new thread takes its slot.
    fn lower_long_steps(self: &Arc<Self>, sched: &mut Sched, now: Instant) {
        if sched.stopping {
            return;
        }
        for n in 0..sched.slots.len() {
            let slot = &mut sched.slots[n];
            let (Some(tid), Some((since, job))) = (slot.tid, &slot.running) else {
                continue;
            };
            if now.saturating_duration_since(*since) < priority::LONG_STEP {
                continue;
            }
            if let Err(error) = priority::lower_thread(tid) {
                self.cannot_lower(&error);
                continue;
            }
            tracing::debug!(
                tenant = job.tenant.as_deref().unwrap_or("-"),
                "a step on {}-{n} has run {} ms; it finishes at low priority",
                self.name,
                priority::LONG_STEP.as_millis()
            );
            *slot = Slot {
                generation: slot.generation + 1,
                tid: None,
                running: None,
            };
            sched.low_workers += 1;
            if let Err(error) = self.spawn(Class::Normal, n) {
                tracing::error!(
                    "cannot start a worker for {}-{n} ({error}); the pool has one normal worker fewer",
                    self.name
                );
            }
        }
    }

    fn cannot_lower(&self, error: &std::io::Error) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            tracing::warn!(
                "cannot lower the priority of {}'s workers ({error}); busy tenants' steps run at normal priority",
                self.name
            )
        });
    }

    fn notify_all(&self) {
        for ready in &self.ready {
            ready.notify_all();
        }
    }

    fn enqueue(self: &Arc<Self>, job: Arc<Job>) {
        let mut sched = self.lock();
        let tenant = job.tenant.clone();
        let now = Instant::now();
        let (low, change) = sched.push(job, now);
        // Work arrived: a long step must not hold it up at equal priority.
        self.lower_long_steps(&mut sched, now);
        drop(sched);
        self.ready[Class::of(low) as usize].notify_one();
        self.tell(&tenant, change);
    }

    /// Logs a tenant's change of priority.
    fn tell(&self, tenant: &Option<String>, change: Option<Change>) {
        let who = match tenant {
            Some(tenant) => format!("tenant `{tenant}`"),
            None => "the pipelines without a tenant".to_string(),
        };
        let pool = &self.name;
        match change {
            Some(Change::Lowered {
                timed_out: true, ..
            }) => tracing::warn!(
                "{who}: a step on {pool} ran out of time; its steps run at low priority (nice {}) for {} s",
                priority::LOW_NICE,
                priority::TIMEOUT_MEMORY.as_secs()
            ),
            Some(Change::Lowered { load, .. }) => tracing::warn!(
                "{who}: its steps on {pool} used {load:.2} of a core lately (more than {}); they run at low priority (nice {}) until under {}",
                priority::BUSY_ABOVE,
                priority::LOW_NICE,
                priority::CALM_BELOW
            ),
            Some(Change::Restored { load }) => tracing::info!(
                "{who}: its steps on {pool} use {load:.2} of a core; they run at normal priority again"
            ),
            None => {}
        }
    }

    /// The next job a worker of `class` may run: the first tenant in turn
    /// with a job waiting, room in its share, not held back and running on
    /// this class of workers. That tenant goes to the back of the turn.
    fn pick(&self, sched: &mut Sched, now: Instant, class: Class) -> Pick {
        let mut wake_at: Option<Instant> = None;
        let mut other = false;
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
            let (low, change) = queue.busy.is_low(now);
            if Class::of(low) != class {
                other = true;
                sched.turn.push_back(tenant.clone());
                self.tell(&tenant, change);
                continue;
            }
            let job = queue.jobs.pop_front();
            queue.running += 1;
            sched.turn.push_back(tenant.clone());
            self.tell(&tenant, change);
            return Pick {
                job,
                wake_at,
                other,
            };
        }
        Pick {
            job: None,
            wake_at,
            other,
        }
    }

    /// A worker's life; a normal worker holds slot `n`.
    fn work(self: Arc<Self>, mut class: Class, n: usize) {
        let mut sched = self.lock();
        // A normal worker's slot is its own while the slot's generation is
        // the one it started in.
        let mut generation = 0;
        match class {
            Class::Low => {
                if let Err(error) = priority::lower_this_thread() {
                    self.cannot_lower(&error);
                }
            }
            Class::Normal => {
                sched.slots[n].tid = priority::this_thread_id();
                generation = sched.slots[n].generation;
            }
        }
        loop {
            if sched.stopping {
                return;
            }
            let now = Instant::now();
            self.lower_long_steps(&mut sched, now);
            let pick = self.pick(&mut sched, now, class);
            if pick.other {
                self.ready[class.other() as usize].notify_one();
            }
            let Some(job) = pick.job else {
                if class == Class::Low && sched.low_workers > sched.workers {
                    // One of the extra low workers: not needed now.
                    sched.low_workers -= 1;
                    return;
                }
                let ready = &self.ready[class as usize];
                sched = match pick.wake_at {
                    Some(at) => {
                        let wait = at.saturating_duration_since(Instant::now());
                        ready
                            .wait_timeout(sched, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => ready.wait(sched).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            };
            if class == Class::Normal {
                sched.slots[n].running = Some((now, job.clone()));
            }
            drop(sched);
            job.state.store(RUNNING, Ordering::Release);
            let cpu = priority::thread_cpu();
            let step = {
                let mut work = job.work.lock().unwrap_or_else(|p| p.into_inner());
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (work)()))
                    .unwrap_or(Step::Done)
            };
            let cpu = priority::thread_cpu().saturating_sub(cpu);
            sched = self.lock();
            let mut lowered = false;
            if class == Class::Normal {
                let slot = &mut sched.slots[n];
                if slot.generation == generation {
                    slot.running = None;
                } else {
                    // Lowered mid-step: a low worker from now on.
                    lowered = true;
                    class = Class::Low;
                }
            }
            let queue = sched.tenants.entry(job.tenant.clone()).or_default();
            queue.running -= 1;
            let change = queue
                .busy
                .record(Instant::now(), cpu, step == Step::TimedOut);
            self.tell(&job.tenant, change);
            match step {
                Step::TimedOut => {
                    queue.timeouts += 1;
                    if queue.timeouts >= 2 && !queue.leaving {
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
            let tenant = job.tenant.clone();
            let now = Instant::now();
            let waiting = if requeue {
                Some(sched.push(job, now))
            } else {
                let queue = sched.tenants.entry(tenant.clone()).or_default();
                (!queue.jobs.is_empty()).then(|| queue.busy.is_low(now))
            };
            // This worker picks again itself; another is needed only for
            // this tenant's waiting jobs (its share freed up), on the
            // workers of its class.
            if let Some((low, change)) = waiting {
                self.ready[Class::of(low) as usize].notify_all();
                self.tell(&tenant, change);
            }
            if lowered {
                let number = self.lowered.fetch_add(1, Ordering::Relaxed);
                priority::name_this_thread(&format!("{}-low{number}", self.name));
            }
        }
    }
}

#[cfg(test)]
mod tests;
