//! A fast source in front of a slow stage: the bounded ingest queue slows
//! the source down, nothing is dropped, and memory stays bounded.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[test]
fn a_slow_stage_slows_the_source_without_loss_or_unbounded_memory() {
    let s = Scratch::new();
    const LINES: u64 = 250_000;
    const WORDS: u64 = 200;
    // 250k lines of ~1.2 KB: about 300 MB of input, produced far faster
    // than the slow stage takes it. Unbounded buffering would hold most of
    // it in memory; the bound below is half of that. (Measured: ~95 MiB for
    // this input and ~100 MiB for twice as much — the engine, three guests'
    // memories and the few batches in flight between pipelined stages.)
    s.write(
        "p.toml",
        &format!(
            r#"
name = "pressure"
batch_interval = "50ms"
max_batch_records = 2000
queue_capacity = 16

[[sources]]
type = "generator"
rate = 0
count = {LINES}
words_per_line = {WORDS}

[[stages]]
name = "slow"
plugin = '{}'
config = {{ mode = "slow", spin = "8000" }}

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "directory"
path = "output"
"#,
            plugin("misbehave").display(),
            plugin("word_split").display(),
            plugin("word_count").display()
        ),
    );
    let mut child = s
        .sluice(&["run", "p.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let stderr = wait_output(child, Duration::from_secs(5)).stderr;
    assert!(status.success(), "{stderr}");
    let total: u64 = totals(&read_jsonl_dir(&s.path("output"))).values().sum();
    assert_eq!(total, LINES * WORDS, "every generated word is counted once");
    assert!(peak > 0, "could not read the process's memory");
    assert!(
        peak < 150 << 20,
        "peak RSS {} MiB: memory is not bounded",
        peak >> 20
    );
}
