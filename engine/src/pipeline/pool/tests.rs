//! The pool's scheduling: turns, shares, backoff and priorities.

use super::*;
use std::sync::atomic::AtomicUsize;

/// Keeps this thread busy for `time`.
fn spin(time: Duration) {
    let started = Instant::now();
    let mut x = 0u64;
    while started.elapsed() < time {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

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

#[test]
fn a_tenant_whose_step_timed_out_runs_low_and_a_light_one_stays_normal() {
    let pool = WorkerPool::new("test-pool", 1, 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (hostile, light) = (seen.clone(), seen.clone());
    let mut first = true;
    let hog = pool.job(
        Some("hostile"),
        Box::new(move || {
            hostile
                .lock()
                .unwrap()
                .push(("hostile", priority::this_thread_nice()));
            std::thread::sleep(Duration::from_millis(5));
            if std::mem::take(&mut first) {
                Step::TimedOut
            } else {
                Step::Idle
            }
        }),
    );
    let calm = pool.job(
        Some("light"),
        Box::new(move || {
            light
                .lock()
                .unwrap()
                .push(("light", priority::this_thread_nice()));
            Step::Idle
        }),
    );
    for _ in 0..5 {
        hog.wake();
        calm.wake();
        std::thread::sleep(Duration::from_millis(300));
    }
    let seen = seen.lock().unwrap().clone();
    let nice = |who| {
        seen.iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
    };
    let normal = priority::this_thread_nice();
    // The first step ran where any step does; every one after the
    // timeout on a low-priority worker. The light tenant never did.
    let hostile = nice("hostile");
    assert!(hostile.len() >= 4, "{seen:?}");
    assert_eq!(hostile[0], normal, "{seen:?}");
    assert!(
        hostile[1..].iter().all(|n| *n == priority::LOW_NICE),
        "{seen:?}"
    );
    let light = nice("light");
    assert_eq!(light.len(), 5, "{seen:?}");
    assert!(light.iter().all(|n| *n == normal), "{seen:?}");
}

#[test]
fn a_tenant_that_keeps_its_worker_spinning_moves_to_the_low_workers() {
    let pool = WorkerPool::new("test-pool", 1, 1);
    let nices = Arc::new(Mutex::new(Vec::new()));
    let record = nices.clone();
    let started = Instant::now();
    let job = pool.job(
        Some("spinner"),
        Box::new(move || {
            record.lock().unwrap().push(priority::this_thread_nice());
            spin(Duration::from_millis(20));
            if started.elapsed() < Duration::from_secs(3) {
                Step::More
            } else {
                Step::Done
            }
        }),
    );
    job.wake();
    std::thread::sleep(Duration::from_millis(3500));
    let nices = nices.lock().unwrap().clone();
    // A whole core crosses half a core of average after about 1.4 s.
    let normal = priority::this_thread_nice();
    assert_eq!(nices[0], normal);
    assert_eq!(*nices.last().unwrap(), priority::LOW_NICE, "{nices:?}");
    let moved = nices.iter().position(|n| *n == priority::LOW_NICE).unwrap();
    assert!(
        nices[moved..].iter().all(|n| *n == priority::LOW_NICE),
        "it went back and forth: {nices:?}"
    );
}

#[test]
fn a_long_step_finishes_at_low_priority_and_frees_its_worker_for_others() {
    let pool = WorkerPool::new("test-pool", 1, 1);
    let events = Arc::new(Mutex::new(Vec::new()));
    let (long_events, short_events) = (events.clone(), events.clone());
    let long = pool.job(
        Some("long"),
        Box::new(move || {
            long_events
                .lock()
                .unwrap()
                .push(("long starts", priority::this_thread_nice()));
            spin(Duration::from_millis(400));
            long_events
                .lock()
                .unwrap()
                .push(("long ends", priority::this_thread_nice()));
            Step::Idle
        }),
    );
    let short = pool.job(
        Some("short"),
        Box::new(move || {
            short_events
                .lock()
                .unwrap()
                .push(("short", priority::this_thread_nice()));
            Step::Idle
        }),
    );
    long.wake();
    std::thread::sleep(Duration::from_millis(150));
    // Work arrives while the long step runs on the only normal worker.
    short.wake();
    std::thread::sleep(Duration::from_millis(600));
    let normal = priority::this_thread_nice();
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            ("long starts", normal),
            // It did not wait for the long step, and ran at full priority.
            ("short", normal),
            ("long ends", priority::LOW_NICE),
        ]
    );
    // The lowered thread became a low worker, one too many: it left when
    // it found nothing to do.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.shared.lock().low_workers != 1 {
        assert!(Instant::now() < deadline, "the extra low worker stayed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The next long step starts on a normal worker again.
    long.wake();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(events.lock().unwrap()[3], ("long starts", normal));
}

#[test]
fn a_leaving_tenant_is_not_held_back_and_comes_back_new() {
    let pool = WorkerPool::new("test-pool", 1, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over = done.clone();
    let job = pool.job(
        Some("leaving"),
        Box::new(move || {
            if over.load(Ordering::SeqCst) {
                return Step::Done;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            Step::TimedOut
        }),
    );
    pool.set_leaving(Some("leaving"), true);
    job.wake();
    std::thread::sleep(Duration::from_millis(500));
    // Held back it would have run a dozen times at most (see above).
    let steps = ran.load(Ordering::SeqCst);
    assert!(steps > 40, "{steps} steps in half a second");
    // Gone, and back under the same name: nothing of the old one remains.
    done.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    pool.set_leaving(Some("leaving"), false);
    let (load, low) = pool.cpu(Some("leaving"));
    assert!(!low);
    assert_eq!(load, 0.0);
}
