//! Latency and memory at a steady rate: `generator (100,000 lines/s) →
//! word-split → word-count → null` with 10 ms batches for 10 seconds, run by
//! the real binary. Prints the engine's HDR summary of scheduling delay,
//! total delay and latency per batch, and the process's peak RSS; for
//! reference, the same work on one batch (1,000 lines) in native Rust.
//!
//! Run: `cargo bench -p sluice --bench latency` (`SLUICE_BENCH_RATE`,
//! `SLUICE_BENCH_SECONDS` and `SLUICE_BENCH_INTERVAL` change the defaults).

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice::source::LineMaker;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The same split + count on one batch, natively: p50 and p99 in ms.
fn native_batch(lines: usize) -> (f64, f64) {
    let mut maker = LineMaker::new(1, 10);
    let batch: Vec<String> = (0..lines).map(|_| maker.next_line().to_string()).collect();
    let mut samples: Vec<Duration> = (0..500)
        .map(|_| {
            let started = Instant::now();
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for line in &batch {
                for word in line.split_whitespace() {
                    *counts.entry(word).or_insert(0) += 1;
                }
            }
            let out: Vec<(String, String)> = counts
                .into_iter()
                .map(|(w, c)| (w.to_string(), c.to_string()))
                .collect();
            black_box(out);
            started.elapsed()
        })
        .collect();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 99 / 100]),
    )
}

fn main() {
    let rate: u64 = env_or("SLUICE_BENCH_RATE", 100_000);
    let seconds: u64 = env_or("SLUICE_BENCH_SECONDS", 10);
    let interval: String = env_or("SLUICE_BENCH_INTERVAL", "10ms".to_string());
    let dir = support::guests();
    let scratch = std::env::temp_dir().join(format!("sluice-latency-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let pipeline = scratch.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"latency\"\nbatch_interval = \"{interval}\"\n[[sources]]\ntype = \"generator\"\nrate = {rate}\ncount = {}\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\n[[stages]]\nname = \"count\"\nplugin = '{}'\n[[sinks]]\ntype = \"null\"\n",
            rate * seconds,
            dir.join("word_split.wasm").display(),
            dir.join("word_count.wasm").display()
        ),
    )
    .unwrap();
    let child = support::sluice_run(&pipeline)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    let peak_kb = sampler.join().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let delays = log
        .lines()
        .find_map(|l| l.split("delays over ").nth(1))
        .unwrap_or_else(|| panic!("no delay summary in:\n{log}"));
    let (native_p50, native_p99) = native_batch((rate as usize / 100).max(1));
    println!("word count at {rate} lines/s for {seconds}s, batch interval {interval}:");
    println!("  per batch (ms): {delays}");
    println!("  peak RSS: {:.1} MiB", peak_kb as f64 / 1024.0);
    println!(
        "  native Rust, same work on one {}-line batch: p50 {native_p50:.3} ms, p99 {native_p99:.3} ms",
        rate / 100
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
