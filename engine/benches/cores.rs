//! Does the engine use both cores? Word count (`generator → word-split →
//! word-count → null`, 2,000,000 lines per pipeline, 100 ms batches) run
//! by the real binary three ways:
//!
//! - one pipeline pinned to one core (`taskset -c 0`): the one-core baseline;
//! - one pipeline on all cores: its stages run on their own threads, so
//!   `split` and `count` overlap;
//! - two pipelines in one process (`sluice run a.toml b.toml`) on all cores.
//!
//! Prints lines/s (all pipelines together), CPU cores busy (the process's
//! user + system time over wall time) and the speed-up over the one-core
//! run. In the same run, native Rust: the same split and count in one
//! thread, then in two threads at once.
//!
//! Each way runs once per round, in turn, for 5 rounds, and the median
//! round of each is reported (a busy neighbour on a shared machine then
//! slows every way alike).
//!
//! Run: `cargo bench -p sluice --bench cores` (`SLUICE_BENCH_LINES` to change
//! the lines per pipeline).

mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const WORDS_PER_LINE: u32 = 10;
const BATCH_LINES: u64 = 100_000;
/// Rounds of runs; the median of each way is reported.
const ROUNDS: usize = 5;

fn main() {
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let guests = support::guests();
    let scratch = std::env::temp_dir().join(format!("sluice-cores-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let a = pipeline(&scratch, "a", &guests, lines);
    let b = pipeline(&scratch, "b", &guests, lines);

    // Warm the compiled-plugin cache and the page cache.
    run(None, &[&a], lines);
    // Each way in turn, round after round, keeping the median round of each:
    // on a shared machine a busy neighbour then slows every way alike.
    let mut rounds: [Vec<Measured>; 5] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(run(Some("0"), &[&a], lines));
        rounds[1].push(run(None, &[&a], lines));
        rounds[2].push(run(None, &[&a, &b], 2 * lines));
        rounds[3].push(native(1, lines));
        rounds[4].push(native(2, lines));
    }
    let [pinned, one, two, native_one, native_two] = rounds.map(median);

    println!(
        "word count, {lines} lines of {WORDS_PER_LINE} words per pipeline, 100ms batches; \
         median of {ROUNDS} rounds"
    );
    let base = pinned.rate();
    for (name, m) in [
        ("sluice, 1 pipeline, 1 core", &pinned),
        ("sluice, 1 pipeline, 2 cores", &one),
        ("sluice, 2 pipelines, 2 cores", &two),
    ] {
        println!(
            "  {name:<30} {:>10.0} lines/s  {:.2} cores busy  {:.2}× the 1-core run",
            m.rate(),
            m.cores(),
            m.rate() / base
        );
    }
    for (name, m) in [
        ("native, 1 thread", &native_one),
        ("native, 2 threads", &native_two),
    ] {
        println!(
            "  {name:<30} {:>10.0} lines/s  {:.2} cores busy  {:.2}× 1 thread",
            m.rate(),
            m.cores(),
            m.rate() / native_one.rate()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The run with the median rate.
fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|x, y| x.rate().total_cmp(&y.rate()));
    runs.swap_remove(runs.len() / 2)
}

/// Lines processed, wall time and CPU time of one run.
struct Measured {
    lines: u64,
    secs: f64,
    cpu: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.lines as f64 / self.secs
    }

    fn cores(&self) -> f64 {
        self.cpu / self.secs
    }
}

fn pipeline(dir: &Path, name: &str, guests: &Path, lines: u64) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    support::wordcount_pipeline(
        &path,
        name,
        "100ms",
        lines,
        WORDS_PER_LINE,
        guests,
        "word_count.wasm",
    );
    path
}

/// Runs `sluice run PIPELINES...`, optionally under `taskset -c CPUS`.
fn run(cpus: Option<&str>, pipelines: &[&Path], total_lines: u64) -> Measured {
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(env!("CARGO_BIN_EXE_sluice"));
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_sluice")),
    };
    cmd.arg("run")
        .args(pipelines)
        .args(["--control", "off", "--no-watch"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null());
    let cpu_before = support::cpu_seconds("self", true);
    let started = Instant::now();
    let out = cmd.output().expect("running sluice");
    let secs = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sluice failed:\n{log}");
    let seen: u64 = log
        .lines()
        .filter_map(|l| {
            // `finished: N batches (M with records), R records in, ...`
            let tail = l.split("finished: ").nth(1)?;
            let before = tail.split(" records in").next()?;
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(seen, total_lines, "sluice did not see every line:\n{log}");
    Measured {
        lines: total_lines,
        secs,
        cpu: support::cpu_seconds("self", true) - cpu_before,
    }
}

/// The same work in plain Rust, on `threads` threads at once, `lines` each.
fn native(threads: usize, lines: u64) -> Measured {
    let cpu_before = support::cpu_seconds("self", false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                black_box(support::native_wordcount(
                    t as u64 + 1,
                    WORDS_PER_LINE,
                    lines,
                    BATCH_LINES,
                ))
            });
        }
    });
    Measured {
        lines: lines * threads as u64,
        secs: started.elapsed().as_secs_f64(),
        cpu: support::cpu_seconds("self", false) - cpu_before,
    }
}
