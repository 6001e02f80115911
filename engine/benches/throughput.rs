//! End-to-end throughput of word count, against native Rust in the same run.
//!
//! Runs the real `sluice` binary on a pipeline `generator → word-split →
//! word-count → null` and, in this process, the same logic in plain Rust
//! (the same generated lines, cut into batches, split on whitespace and
//! counted per batch in a hash map). Prints lines/s for both and the ratio.
//!
//! Also runs the same pipeline with `running-count` (totals across batches
//! in the stage's host-owned state, checkpointed every batch) in place of
//! `word-count`, beside it.
//!
//! The cost of telemetry on the hot path, in the same rounds: the same
//! pipeline with `--metrics` on and `/metrics` plus the dashboard's data
//! fetched every 100 ms throughout (ten times a typical scrape and
//! dashboard), and, when `SLUICE_BENCH_BASELINE` names another `sluice`
//! binary (one built before the counters existed, say), that binary on the
//! same pipeline.
//!
//! Sluice, sluice with state, native (and the two above) run in turn,
//! round after round (5 rounds, `SLUICE_BENCH_ROUNDS` to change), and the
//! medians are reported: on a shared machine one run alone moved by a
//! third.
//!
//! Run: `cargo bench -p sluice --bench throughput` (set `SLUICE_BENCH_LINES`
//! to change the 2,000,000 lines, `SLUICE_BENCH_INTERVAL` for the batch
//! interval, default `100ms`).

mod support;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORDS_PER_LINE: u32 = 10;

/// The same work in plain Rust: generate, split, count per batch.
fn native(lines: u64, batch: u64) -> f64 {
    let started = Instant::now();
    black_box(support::native_wordcount(1, WORDS_PER_LINE, lines, batch));
    started.elapsed().as_secs_f64()
}

/// One GET over a fresh connection; the body's length (0 on failure).
fn fetch(address: &str, path: &str, token: &str) -> usize {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return 0;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut body = Vec::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_end(&mut body).is_err() {
        return 0;
    }
    body.len()
}

/// Runs `cmd` (a `sluice run … --metrics 127.0.0.1:0`) fetching `/metrics`
/// and the dashboard's view of `pipeline` every 100 ms until it exits;
/// returns its log and how many fetches were answered.
fn run_scraped(
    mut cmd: Command,
    pipeline: &str,
    runtime_dir: &Path,
) -> (std::process::ExitStatus, String, usize) {
    let mut child = cmd
        .env("SLUICE_RUNTIME_DIR", runtime_dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("/metrics, dashboard on") {
                let _ = tx.send(line.clone());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let mut answered = 0;
    if let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let address = line
            .split("metrics on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_string();
        let token_file = line
            .split("token in ")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(')');
        let token = std::fs::read_to_string(token_file)
            .unwrap_or_default()
            .trim()
            .to_string();
        let detail = format!("/ui/api/pipelines/{pipeline}");
        while child.try_wait().ok().flatten().is_none() {
            let next = Instant::now() + Duration::from_millis(100);
            answered += usize::from(fetch(&address, "/metrics", &token) > 0);
            answered += usize::from(fetch(&address, &detail, &token) > 0);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    let status = child.wait().expect("waiting for sluice");
    (status, reader.join().unwrap_or_default(), answered)
}

fn main() {
    // `cargo bench` passes `--bench`; this is not a criterion harness.
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let interval = std::env::var("SLUICE_BENCH_INTERVAL").unwrap_or_else(|_| "100ms".into());
    let dir = support::guests();
    let scratch = std::env::temp_dir().join(format!("sluice-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let write_pipeline = |file: &str, count_plugin: &str| {
        let path = scratch.join(file);
        support::wordcount_pipeline(
            &path,
            "throughput",
            &interval,
            lines,
            WORDS_PER_LINE,
            &dir,
            count_plugin,
        );
        path
    };
    let pipeline = write_pipeline("wordcount.toml", "word_count.wasm");
    let stateful = write_pipeline("running.toml", "running_count.wasm");

    // Warm the page cache and the binary once, then measure.
    let sluice_run = |pipeline: &std::path::Path| {
        let started = Instant::now();
        let out = support::sluice_run(pipeline)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .output()
            .expect("running sluice");
        let secs = started.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sluice failed:\n{log}");
        let expected = format!("{lines} records in");
        assert!(
            log.contains(&expected),
            "sluice did not see every line:\n{log}"
        );
        (secs, log)
    };
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let _ = sluice_run(&pipeline);
    let (mut wasm, mut state, mut native_taken, mut batch_sizes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut scraped, mut baseline, mut fetches) = (Vec::new(), Vec::new(), Vec::new());
    let baseline_bin = std::env::var_os("SLUICE_BENCH_BASELINE").map(std::path::PathBuf::from);
    let runtime_dir = scratch.join("runtime");
    for _ in 0..rounds {
        // With metrics served and fetched throughout.
        let started = Instant::now();
        let mut cmd = support::sluice_run(&pipeline);
        cmd.args(["--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info");
        let (status, log, answered) = run_scraped(cmd, "throughput", &runtime_dir);
        assert!(
            status.success() && log.contains(&format!("{lines} records in")),
            "sluice with metrics failed:\n{log}"
        );
        scraped.push(started.elapsed().as_secs_f64());
        fetches.push(answered);
        if let Some(bin) = &baseline_bin {
            let started = Instant::now();
            let out = Command::new(bin)
                .args([
                    "run",
                    pipeline.to_str().unwrap(),
                    "--control",
                    "off",
                    "--no-watch",
                ])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("running the baseline sluice");
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && log.contains(&format!("{lines} records in")),
                "baseline failed:\n{log}"
            );
            baseline.push(started.elapsed().as_secs_f64());
        }
        let (wasm_secs, log) = sluice_run(&pipeline);
        // running-count keeps every word's total in the stage's state (a
        // fresh state file each run) and checkpoints it after every batch.
        let _ = std::fs::remove_dir_all(scratch.join("state"));
        let (state_secs, _) = sluice_run(&stateful);
        // Native batches as large as this run's average batch.
        let batches: u64 = log
            .lines()
            .find_map(|l| {
                l.split("finished: ")
                    .nth(1)?
                    .split(" batches (")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(1);
        let batch = (lines / batches.max(1)).max(1);
        native_taken.push(native(lines, batch));
        wasm.push(wasm_secs);
        state.push(state_secs);
        batch_sizes.push(batch);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wasm_secs, state_secs, native_secs) = (
        median(&mut wasm),
        median(&mut state),
        median(&mut native_taken),
    );
    batch_sizes.sort_unstable();
    let batch = batch_sizes[batch_sizes.len() / 2];

    let native_rate = lines as f64 / native_secs;
    let wasm_rate = lines as f64 / wasm_secs;
    println!(
        "word count, {lines} lines of {WORDS_PER_LINE} words, batch interval {interval} (~{batch} lines per batch), medians of {rounds} rounds"
    );
    println!(
        "  native Rust        {:>12.0} lines/s  ({native_secs:.3} s)",
        native_rate
    );
    println!(
        "  sluice (Wasm)      {:>12.0} lines/s  ({wasm_secs:.3} s, whole process incl. start-up)",
        wasm_rate
    );
    println!("  ratio sluice/native {:>10.2}", wasm_rate / native_rate);
    let state_rate = lines as f64 / state_secs;
    println!(
        "  sluice, running-count (state) {:>12.0} lines/s  ({state_secs:.3} s), {:.2} of stateless",
        state_rate,
        state_rate / wasm_rate
    );
    let scraped_secs = median(&mut scraped);
    let scraped_rate = lines as f64 / scraped_secs;
    fetches.sort_unstable();
    println!(
        "  sluice, metrics fetched every 100ms {:>8.0} lines/s  ({scraped_secs:.3} s, {} fetches answered), {:.3} of without",
        scraped_rate,
        fetches[fetches.len() / 2],
        scraped_rate / wasm_rate
    );
    if !baseline.is_empty() {
        let baseline_secs = median(&mut baseline);
        let baseline_rate = lines as f64 / baseline_secs;
        println!(
            "  baseline binary ({})  {:>12.0} lines/s  ({baseline_secs:.3} s); this build {:.3} of it",
            baseline_bin.as_ref().unwrap().display(),
            baseline_rate,
            wasm_rate / baseline_rate
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
