//! Windowed stages (`window = { length, slide }`) with `moving-average`:
//! the plugin is called every `slide` with the records of the last
//! `length`, and a window's contents survive a restart.
//!
//! Input value `i` is 2^i, one line at a time, so the sum behind each
//! output (mean × `count`) names exactly which inputs the window held.
//! With `slide` dividing `length`, every interval is in exactly
//! `length / slide` windows whatever the timing, so each input must be
//! seen exactly that many times, always beside inputs sent close to it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// 100ms batches, windows of 6 intervals every 2: each input is seen 3 times.
const WINDOWS_PER_INPUT: usize = 3;

fn pipeline() -> String {
    format!(
        r#"
name = "moving"
batch_interval = "100ms"

[[sources]]
type = "stdin"

[[stages]]
name = "mean"
plugin = '{}'
window = {{ length = "600ms", slide = "200ms" }}

[[sinks]]
type = "directory"
path = "out"
format = "jsonl"
"#,
        plugin("moving_average").display()
    )
}

/// A running engine, its log collected as it comes.
struct Engine {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

/// Starts the pipeline and waits until it runs, so that inputs land in
/// batches as they are sent rather than queue up during start-up.
fn start(s: &Scratch) -> Engine {
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sluice");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let engine = Engine { child, log, reader };
    let began = Instant::now();
    while !engine
        .log
        .lock()
        .unwrap()
        .contains("started: batch interval")
    {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the pipeline did not start:\n{}",
            engine.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    engine
}

fn send(engine: &mut Engine, i: u32) {
    let stdin = engine.child.stdin.as_mut().unwrap();
    writeln!(stdin, "{}", 1u64 << i).unwrap();
    stdin.flush().unwrap();
}

/// Each output as the set of inputs (bit `i` = input `i`) its window held.
fn windows(s: &Scratch) -> Vec<u64> {
    read_jsonl_dir(&s.path("out"))
        .iter()
        .map(|r| {
            assert!(r["key"].as_str() == Some(""), "one key only: {r}");
            let mean: f64 = r["value"].as_str().unwrap().parse().unwrap();
            let count: f64 = r["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h[0] == "count"))
                .map(|h| h[1].as_str().unwrap().parse().unwrap())
                .unwrap_or_else(|| panic!("no count header: {r}"));
            let sum = (mean * count).round() as u64;
            assert_eq!(sum.count_ones() as f64, count, "{r}");
            sum
        })
        .collect()
}

/// Windows as binary, for messages.
fn bits(windows: &[u64]) -> Vec<String> {
    windows.iter().map(|w| format!("{w:b}")).collect()
}

/// How many windows held each input.
fn times_seen(windows: &[u64], inputs: u32) -> BTreeMap<u32, usize> {
    (0..inputs)
        .map(|i| (i, windows.iter().filter(|w| *w & (1 << i) != 0).count()))
        .collect()
}

/// Stops the engine with SIGTERM; returns its log.
fn stop(mut engine: Engine) -> String {
    terminate(&engine.child);
    let status = wait_deadline(&mut engine.child, Duration::from_secs(30));
    engine.reader.join().unwrap();
    let log = engine.log.lock().unwrap().clone();
    assert!(status.success(), "{log}");
    log
}

#[test]
fn each_input_is_in_length_over_slide_windows_beside_its_neighbours_only() {
    let s = Scratch::new();
    s.write("p.toml", &pipeline());
    let mut engine = start(&s);
    // 12 inputs 250ms apart: a 600ms window holds at most 3 of them.
    let inputs = 12;
    for i in 0..inputs {
        send(&mut engine, i);
        std::thread::sleep(Duration::from_millis(250));
    }
    // Long enough for the last input to leave every window.
    std::thread::sleep(Duration::from_millis(1000));
    let log = stop(engine);

    let windows = windows(&s);
    let seen = times_seen(&windows, inputs);
    let expected: BTreeMap<u32, usize> = (0..inputs).map(|i| (i, WINDOWS_PER_INPUT)).collect();
    assert_eq!(seen, expected, "windows: {:?}\n{}", bits(&windows), log);
    for w in &windows {
        // Inputs next to each other in time, never with a gap, and no more
        // than a 600ms window can hold at 250ms apart.
        let run = *w >> w.trailing_zeros();
        assert!(
            run & (run + 1) == 0,
            "window {w:b} holds inputs that are not consecutive"
        );
        assert!(w.count_ones() <= 3, "window {w:b} holds too many inputs");
    }
    // The windows come in time order, each starting no earlier than the last.
    for pair in windows.windows(2) {
        assert!(
            pair[1].trailing_zeros() >= pair[0].trailing_zeros(),
            "windows out of order: {:b} then {:b}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn a_window_keeps_its_records_across_a_restart() {
    let s = Scratch::new();
    s.write("p.toml", &pipeline());
    let mut engine = start(&s);
    send(&mut engine, 0);
    // Stop as soon as the first window with input 0 is out: it still has
    // two windows to be in, which only the restarted engine can give.
    let began = Instant::now();
    while windows(&s).is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no window came out"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = stop(engine);
    let before = windows(&s).len();
    assert!(
        times_seen(&windows(&s), 1)[&0] < WINDOWS_PER_INPUT,
        "input 0 finished its windows before the restart; the test proves nothing"
    );

    let mut engine = start(&s);
    send(&mut engine, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let second = stop(engine);
    assert!(
        second.contains("window holds 1 record(s) from the last checkpoint"),
        "{second}"
    );
    let all = windows(&s);
    let after_restart = &all[before..];
    assert!(
        after_restart.iter().any(|w| w & 1 != 0),
        "the restarted engine lost input 0: {:?}\n{}\n{}",
        bits(&all),
        first,
        second
    );
    let seen = times_seen(&all, 2);
    assert_eq!(
        seen,
        BTreeMap::from([(0, WINDOWS_PER_INPUT), (1, WINDOWS_PER_INPUT)]),
        "windows: {:?}",
        bits(&all)
    );
}
