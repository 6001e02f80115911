//! Hot reload, measured: what a swap costs the batch it lands on, and how
//! long a new plugin file takes to go live.
//!
//! In process, with the engine's own stage and reload code:
//! - **swap pause**: a stage processes 1,000-line batches through
//!   `uppercase`; every 10th batch a prepared version (`lowercase` /
//!   `uppercase`, compiled and `init`-ed beforehand, as hot reload does) is
//!   offered first, so it goes live at that batch. Prints p50/p99 of the
//!   batch time with and without a swap.
//! - **file change to live**: the plugin file is replaced by rename while a
//!   loop processes a batch every millisecond; the time from the rename to
//!   the first batch processed by the new version (debounce, compile, `init`,
//!   next batch boundary included). p50/p99 over 20 swaps.
//!
//! Run: `cargo bench -p sluice --bench reload`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::batch::Records;
use sluice::plugin::{Grants, Limits, PluginHost};
use sluice::reload::{StageEntry, watch_files};
use sluice::stage::{DeadLetter, OnError, Stage, StageSettings, Update, prepare};

fn settings(plugin_path: PathBuf) -> StageSettings {
    StageSettings {
        pipeline: "bench".into(),
        name: "case".into(),
        plugin_path,
        interval_ms: 10,
        config: Vec::new(),
        limits: Limits {
            memory: 256 << 20,
            time: Duration::from_secs(10),
        },
        grants: Grants::default(),
        on_error: OnError::Fail,
        retries: 0,
        recycle_after: 0,
        release_idle: None,
        dead_letter: DeadLetter {
            dir: std::env::temp_dir().join("sluice-bench-dead-letter"),
            budget: None,
        },
        state: None,
        state_limit: 1 << 20,
        telemetry: sluice::telemetry::StageSeries::detached("bench", "case"),
    }
}

fn batch() -> Records {
    let mut r = Records::default();
    for i in 0..1000 {
        r.push_value(format!("Line {i} of the Batch").as_bytes(), 1);
    }
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {name:<28} p50 {:>9.3} ms   p99 {:>9.3} ms   ({} samples)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn swap_pause(host: &PluginHost, dir: &Path) {
    let upper = host.load(&dir.join("uppercase.wasm")).unwrap();
    let lower = host.load(&dir.join("lowercase.wasm")).unwrap();
    let s = settings(dir.join("uppercase.wasm"));
    let mut stage = Stage::new(s.clone(), upper.clone()).unwrap();
    let handle = stage.handle();
    let (mut plain, mut swapped) = (Vec::new(), Vec::new());
    for i in 0..2000u64 {
        let swap = i % 10 == 0;
        if swap {
            // Prepared off the batch path, as the reloader does.
            let next = if (i / 10) % 2 == 0 { &lower } else { &upper };
            let instance = prepare(&s, next).unwrap();
            handle.offer(Update {
                plugin: next.clone(),
                instance,
                cause: "bench".into(),
            });
        }
        let started = Instant::now();
        let out = stage.process(i, 0, batch()).unwrap();
        let took = started.elapsed();
        assert_eq!(out.records.len(), 1000);
        if i >= 100 {
            if swap {
                swapped.push(took)
            } else {
                plain.push(took)
            }
        }
    }
    println!("swap pause: 1,000-line batches through uppercase/lowercase");
    report("batch without a swap", plain);
    report("batch with a swap", swapped);
}

fn file_to_live(host: Arc<PluginHost>, dir: &Path) {
    let scratch = std::env::temp_dir().join(format!("sluice-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let path = scratch.join("case.wasm");
    std::fs::copy(dir.join("uppercase.wasm"), &path).unwrap();
    let s = settings(path.clone());
    let plugin = host.load(&path).unwrap();
    let mut stage = Stage::new(s.clone(), plugin).unwrap();
    let _watch = watch_files(
        host.clone(),
        vec![StageEntry {
            settings: s,
            handle: stage.handle(),
        }],
    )
    .unwrap();
    let mut samples = Vec::new();
    let mut id = 0;
    for n in 0..20 {
        let next = if n % 2 == 0 {
            "lowercase.wasm"
        } else {
            "uppercase.wasm"
        };
        let before = stage.plugin().hash.clone();
        let tmp = scratch.join(".case.wasm.new");
        std::fs::copy(dir.join(next), &tmp).unwrap();
        let changed = Instant::now();
        std::fs::rename(&tmp, &path).unwrap();
        loop {
            stage.process(id, 0, batch()).unwrap();
            id += 1;
            if stage.plugin().hash != before {
                samples.push(changed.elapsed());
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(30),
                "the new version never went live"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let this version pass probation before the next swap.
        for _ in 0..12 {
            stage.process(id, 0, batch()).unwrap();
            id += 1;
        }
    }
    println!(
        "file change to live (debounce {}ms included):",
        sluice::reload::DEBOUNCE.as_millis()
    );
    report("rename → first batch on it", samples);
    let _ = std::fs::remove_dir_all(&scratch);
}

fn main() {
    let dir = support::guests();
    let host = Arc::new(PluginHost::new().unwrap());
    swap_pause(&host, &dir);
    file_to_live(host, &dir);
}
