//! Start-up: from `sluice run` to the process exiting after its first (and
//! only) batch, for `generator (1 line) → word-split → word-count → null`,
//! with the compiled-component cache cold (every plugin compiled) and warm
//! (compiled plugins loaded from disk). The baseline is the same binary on a
//! pipeline with no stages: the process and runtime start-up alone.
//!
//! Run: `cargo bench -p sluice --bench startup`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn run(pipeline: &Path, cache: &Path) -> Duration {
    let started = Instant::now();
    let status = support::sluice_run(&pipeline)
        .env("SLUICE_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .status()
        .expect("running sluice");
    assert!(status.success());
    started.elapsed()
}

fn p50(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let dir = support::guests();
    let scratch = std::env::temp_dir().join(format!("sluice-startup-{}", std::process::id()));
    let cache = scratch.join("cache");
    std::fs::create_dir_all(&scratch).unwrap();
    let write = |name: &str, stages: &str| {
        let path = scratch.join(name);
        std::fs::write(
            &path,
            format!(
                "name = \"startup\"\nbatch_interval = \"10ms\"\n[[sources]]\ntype = \"generator\"\nrate = 0\ncount = 1\n{stages}[[sinks]]\ntype = \"null\"\n"
            ),
        )
        .unwrap();
        path
    };
    let bare = write("bare.toml", "");
    let wordcount = write(
        "wordcount.toml",
        &format!(
            "[[stages]]\nname = \"split\"\nplugin = '{}'\n[[stages]]\nname = \"count\"\nplugin = '{}'\n",
            dir.join("word_split.wasm").display(),
            dir.join("word_count.wasm").display()
        ),
    );
    const RUNS: usize = 11;
    let bare_ms = p50((0..RUNS).map(|_| run(&bare, &cache)).collect());
    let cold_ms = p50((0..RUNS)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&cache);
            run(&wordcount, &cache)
        })
        .collect());
    run(&wordcount, &cache);
    let warm_ms = p50((0..RUNS).map(|_| run(&wordcount, &cache)).collect());
    println!("start to first batch processed (process exit), p50 of {RUNS} runs:");
    println!("  no stages (baseline)             {bare_ms:>7.1} ms");
    println!("  word count, plugins compiled     {cold_ms:>7.1} ms");
    println!("  word count, compiled cache warm  {warm_ms:>7.1} ms");
    let _ = std::fs::remove_dir_all(&scratch);
}
