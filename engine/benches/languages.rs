//! Plugins by language: the same `word-split` written in Rust, Python, C,
//! JavaScript and Go, measured the same way, with native Rust doing the same
//! split in the same run as the baseline. Per language: component size,
//! compile time (Cranelift, compiled-plugin cache off), instantiate time
//! (instance plus `init`) and time per batch of the same 1,000 lines.
//! Prints a Markdown table (the one in `plugins/README.md`).
//!
//! Run: `cargo bench -p sluice --bench languages`. The Rust plugin is
//! built here; the others come from the test build step, so run `bash
//! tests/run.sh` (which installs their toolchains) or `cargo test
//! --release -p sluice-tests --no-run` first. A missing one is reported,
//! not faked.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::batch::Records;
use sluice::plugin::{CallInfo, Grants, Instance, Limits, LogTag, PluginHost, StateView};

const LINES: usize = 1000;
const BATCHES: usize = 30;
const COMPILES: usize = 3;
const INSTANCES: usize = 10;

/// 1,000 lines of 10 words from the generator's vocabulary, as every
/// benchmark uses.
fn input() -> Records {
    let mut maker = sluice::source::LineMaker::new(7, 10);
    let mut records = Records::default();
    for _ in 0..LINES {
        records.push_value(maker.next_line().as_bytes(), 1);
    }
    records
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The native baseline: the same split into the same columnar output.
fn native_split(input: &Records) -> Records {
    let mut out = Records::default();
    for rec in input.iter() {
        for word in std::str::from_utf8(rec.value()).unwrap().split_whitespace() {
            out.push_value(word.to_lowercase().as_bytes(), rec.timestamp());
        }
    }
    out
}

struct Row {
    size_kib: u64,
    compile: Duration,
    instantiate: Duration,
    batch: Duration,
    words: usize,
}

fn measure(host: &PluginHost, path: &Path, input: &Records) -> Row {
    let bytes = std::fs::read(path).unwrap();
    let compile = median(
        (0..COMPILES)
            .map(|_| {
                let started = Instant::now();
                black_box(host.load_bytes(path, &bytes).unwrap());
                started.elapsed()
            })
            .collect(),
    );
    let plugin = host.load_bytes(path, &bytes).unwrap();
    let tag = Arc::new(LogTag {
        pipeline: "bench".into(),
        stage: "split".into(),
        plugin: plugin.label(),
    });
    let limits = Limits {
        memory: 1 << 30,
        time: Duration::from_secs(120),
    };
    let config = [("lowercase".to_string(), "true".to_string())];
    let new_instance = || {
        Instance::new(
            &plugin,
            tag.clone(),
            limits,
            Grants::default(),
            &config,
            StateView::new(None, 1 << 20),
        )
        .unwrap()
    };
    let instantiate = median(
        (0..INSTANCES)
            .map(|_| {
                let started = Instant::now();
                black_box(new_instance());
                started.elapsed()
            })
            .collect(),
    );
    let mut instance = new_instance();
    let info = CallInfo {
        id: 0,
        time_ms: 0,
        interval_ms: 1000,
    };
    let mut records = Some(input.clone());
    let mut words = 0;
    let mut samples = Vec::with_capacity(BATCHES);
    for i in 0..BATCHES + 3 {
        let started = Instant::now();
        let (back, out) = instance.process(info, records.take().unwrap());
        let elapsed = started.elapsed();
        records = Some(back);
        words = out.unwrap().records.len();
        // The first calls warm the instance up (its memory grows).
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    Row {
        size_kib: bytes.len() as u64 / 1024,
        compile,
        instantiate,
        batch: median(samples),
        words,
    }
}

fn main() {
    // Every compile is a real one.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("SLUICE_CACHE_DIR", "off") };
    let dir = support::guests();
    let host = PluginHost::new().unwrap();
    let input = input();

    let native = median(
        (0..BATCHES)
            .map(|_| {
                let started = Instant::now();
                black_box(native_split(&input));
                started.elapsed()
            })
            .collect(),
    );
    let native_words = native_split(&input).len();

    println!("word-split, {LINES} lines of 10 words per batch; medians");
    println!();
    println!(
        "| language | component | compile | instantiate + init | per batch of {LINES} lines | vs native |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| native Rust (baseline) | — | — | — | {} ms | 1.0× |",
        ms(native)
    );
    for (language, file) in [
        ("Rust (SDK)", "word_split.wasm"),
        ("C (wasi-libc)", "word_split_c.wasm"),
        ("Python (componentize-py)", "word_split_py.wasm"),
        ("JavaScript (componentize-js)", "word_split_js.wasm"),
        ("Go (wit-bindgen go)", "word_split_go.wasm"),
    ] {
        let path = dir.join(file);
        if !path.exists() {
            println!(
                "| {language} | not built: run `cargo test --release -p sluice-tests --no-run` (after `bash tests/run.sh` installed its toolchain) | | | | |"
            );
            continue;
        }
        let row = measure(&host, &path, &input);
        assert_eq!(
            row.words, native_words,
            "{language}: the split must give the native split's {native_words} words"
        );
        println!(
            "| {language} | {} KiB | {} ms | {} ms | {} ms | {:.1}× |",
            row.size_kib,
            ms(row.compile),
            ms(row.instantiate),
            ms(row.batch),
            row.batch.as_secs_f64() / native.as_secs_f64()
        );
    }
}
