//! SIGTERM mid-stream: the engine finishes what it had read, exits 0 within
//! seconds, and leaves no partial output file.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn sigterm_mid_stream_exits_zero_and_leaves_only_complete_files() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "gen"
batch_interval = "20ms"

[[sources]]
type = "generator"
rate = 50000

[[stages]]
name = "split"
plugin = '{}'

[[sinks]]
type = "directory"
path = "output"
"#,
            plugin("word_split").display()
        ),
    );
    let child = s
        .sluice(&["run", "p.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = s.path("output");
    eventually(Duration::from_secs(20), "output files", || {
        read_jsonl_dir(&output).len() > 1000
    });
    let asked = Instant::now();
    terminate(&child);
    let finished = wait_output(child, Duration::from_secs(10));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        asked.elapsed()
    );
    assert!(finished.stderr.contains("stopping"), "{}", finished.stderr);
    // No temporary file is left, and every file parses whole.
    for entry in std::fs::read_dir(&output).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "partial file left behind: {name}");
    }
    let records = read_jsonl_dir(&output);
    assert!(records.iter().all(|r| r["value"].is_string()));
    // Nothing read was dropped on the way out: every line the engine
    // received (10 words each) is in the output, as words.
    let finished_line = finished
        .stderr
        .lines()
        .find(|l| l.contains("finished:"))
        .unwrap_or_else(|| panic!("no summary in:\n{}", finished.stderr));
    let count = |suffix: &str| -> usize {
        let before = finished_line.split(suffix).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (lines_in, words_out) = (count(" records in"), count(" out,"));
    assert_eq!(words_out, lines_in * 10, "{finished_line}");
    assert_eq!(records.len(), words_out, "{finished_line}");
}
