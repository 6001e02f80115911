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
//! Sluice, sluice with state and native run in turn, round after round
//! (5 rounds, `SLUICE_BENCH_ROUNDS` to change), and the medians are
//! reported: on a shared machine one run alone moved by a third.
//!
//! Run: `cargo bench -p sluice --bench throughput` (set `SLUICE_BENCH_LINES`
//! to change the 2,000,000 lines, `SLUICE_BENCH_INTERVAL` for the batch
//! interval, default `100ms`).

mod support;

use std::hint::black_box;
use std::process::Stdio;
use std::time::Instant;

const WORDS_PER_LINE: u32 = 10;

/// The same work in plain Rust: generate, split, count per batch.
fn native(lines: u64, batch: u64) -> f64 {
    let started = Instant::now();
    black_box(support::native_wordcount(1, WORDS_PER_LINE, lines, batch));
    started.elapsed().as_secs_f64()
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
    for _ in 0..rounds {
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
    let _ = std::fs::remove_dir_all(&scratch);
}
