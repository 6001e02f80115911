//! Hot reload under a live stream: a stage's plugin is replaced (file
//! rewritten, replaced by rename, or deployed through the control
//! endpoint) while numbered records flow through it. Every record comes out
//! exactly once, every batch is entirely one version's, versions follow the
//! swaps, and broken versions are rejected or rolled back.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;

/// A TCP server that sends `Rec-000001 Mixed`, `Rec-000002 Mixed`, … to one
/// client until stopped, then hangs up.
struct LineServer {
    address: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LineServer {
    fn start(lines_per_sec: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let tick = Duration::from_millis(10);
            let per_tick = (lines_per_sec / 100).max(1);
            while !s.load(Ordering::SeqCst) {
                let mut chunk = String::new();
                for _ in 0..per_tick {
                    let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                    chunk.push_str(&format!("Rec-{i:06} Mixed\n"));
                }
                conn.write_all(chunk.as_bytes()).unwrap();
                std::thread::sleep(tick);
            }
        });
        LineServer {
            address,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops sending and hangs up; returns how many lines were sent.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.sent.load(Ordering::SeqCst)
    }
}

/// `sluice deploy reload case <plugin>` against the control endpoint.
fn deploy(s: &Scratch, control: &str, name: &str) -> std::process::Output {
    let file = plugin(name).display().to_string();
    s.sluice(&["deploy", "reload", "case", &file, "--control", control])
        .output()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline `socket → case (case.wasm) → directory`, with the control
/// endpoint on `port`. Starts with `uppercase`; returns once its first
/// output is written, with the output folder.
fn start(s: &Scratch, server: &LineServer, config: &str, port: u16) -> (Child, PathBuf) {
    std::fs::copy(plugin("uppercase"), s.path("case.wasm")).unwrap();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "reload"
batch_interval = "20ms"

[[sources]]
type = "socket"
address = "{}"
reconnect = false

[[stages]]
name = "case"
plugin = "case.wasm"
config = {config}

[[sinks]]
type = "directory"
path = "output"
"#,
            server.address
        ),
    );
    let child = s
        .sluice(&["run", "p.toml", "--control", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = s.path("output");
    eventually(Duration::from_secs(20), "first output", || {
        latest_case(&output) == Some(Case::Upper)
    });
    (child, output)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Upper,
    Lower,
}

/// Each output file (one per batch, in batch order) with the case of its
/// records; panics if a batch mixes versions.
fn batches(output: &Path) -> Vec<(PathBuf, Case, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(output)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let values: Vec<String> = read_jsonl_dir_file(&file);
            let upper = values
                .iter()
                .filter(|v| v.as_str() == v.to_uppercase())
                .count();
            let lower = values
                .iter()
                .filter(|v| v.as_str() == v.to_lowercase())
                .count();
            let case = if upper == values.len() {
                Case::Upper
            } else if lower == values.len() {
                Case::Lower
            } else {
                panic!("batch {} mixes versions: {values:?}", file.display())
            };
            (file, case, values)
        })
        .collect()
}

fn read_jsonl_dir_file(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn latest_case(output: &Path) -> Option<Case> {
    batches(output).last().map(|b| b.1)
}

/// Every line the server sent comes out exactly once.
fn assert_each_record_once(all: &[(PathBuf, Case, Vec<String>)], sent: u64) {
    let mut seen = BTreeSet::new();
    for (_, _, values) in all {
        for v in values {
            assert!(seen.insert(v.to_lowercase()), "record {v} came out twice");
        }
    }
    let expected: BTreeSet<String> = (1..=sent).map(|i| format!("rec-{i:06} mixed")).collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {missing:?}",
        expected.len() - seen.len()
    );
    assert_eq!(seen.len() as u64, sent);
}

fn replace_by_rename(dir: &Path, from: &Path) {
    let tmp = dir.join(".case.wasm.new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("case.wasm")).unwrap();
}

#[test]
fn swapping_versions_dozens_of_times_loses_and_repeats_nothing() {
    let s = Scratch::new();
    let server = LineServer::start(3000);
    let (child, output) = start(&s, &server, "{}", free_port());
    const SWAPS: usize = 24;
    for swap in 0..SWAPS {
        let (next, case) = if swap % 2 == 0 {
            ("lowercase", Case::Lower)
        } else {
            ("uppercase", Case::Upper)
        };
        if swap % 3 == 0 {
            // Rewritten in place.
            std::fs::write(s.path("case.wasm"), std::fs::read(plugin(next)).unwrap()).unwrap();
        } else {
            replace_by_rename(s.dir.path(), &plugin(next));
        }
        eventually(
            Duration::from_secs(20),
            &format!("swap {swap} to {next} live"),
            || latest_case(&output) == Some(case),
        );
    }
    let sent = server.finish();
    let finished = wait_output(child, Duration::from_secs(20));
    assert!(finished.status.success(), "{}", finished.stderr);
    let all = batches(&output);
    assert_each_record_once(&all, sent);
    // Versions follow the swaps: one change per swap, in order.
    let mut sequence: Vec<Case> = all.iter().map(|b| b.1).collect();
    sequence.dedup();
    assert_eq!(sequence.len(), SWAPS + 1, "{sequence:?}");
    assert_eq!(sequence[0], Case::Upper);
    assert!(sequence.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn broken_versions_are_rejected_or_rolled_back_without_losing_records() {
    let s = Scratch::new();
    let server = LineServer::start(2000);
    let port = free_port();
    // `misbehave` reads this config as "trap on every batch"; the case
    // plugins ignore it. on_error is `fail`: a broken version that got
    // through would stop the pipeline.
    let (child, output) = start(&s, &server, "{ mode = \"trap\", when = \"*\" }", port);
    let control = format!("127.0.0.1:{port}");
    let status = || {
        let out = s
            .sluice(&["status", "--json", "--control", &control])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["stages"][0].clone()
    };
    let events = |needle: &str| {
        status()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.as_str().unwrap().contains(needle))
            .count()
    };

    let broken = s.write("broken.txt", "not a component\n");
    let cases: [(&str, PathBuf, &str); 3] = [
        ("not wasm", broken, "is not a WebAssembly file"),
        (
            "wrong world",
            plugin("wrong_world"),
            "is not a `sluice:plugin/stage@0.1.0` component",
        ),
        (
            "init error",
            plugin("threshold_alert"),
            "rejected its config",
        ),
    ];
    for (n, (what, file, reason)) in cases.iter().enumerate() {
        replace_by_rename(s.dir.path(), file);
        eventually(Duration::from_secs(20), &format!("{what} rejected"), || {
            events("rejected") > n
        });
        let st = status();
        let last = st["events"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(last.contains(reason), "{what}: {last}");
        assert!(
            st["current"]["label"]
                .as_str()
                .unwrap()
                .starts_with("case.wasm@"),
            "{st}"
        );
    }
    // Through the control endpoint, a rejection is the command's answer.
    let out = deploy(&s, &control, "wrong_world");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));

    // A version that traps on every batch gets in, fails its first batch on
    // probation, and is rolled back; the batch is redone by uppercase.
    let current = status()["current"]["hash"].as_str().unwrap().to_string();
    replace_by_rename(s.dir.path(), &plugin("misbehave"));
    eventually(
        Duration::from_secs(20),
        "the trapping version rolled back",
        || events("rolled back") == 1,
    );
    assert_eq!(status()["current"]["hash"].as_str().unwrap(), current);
    std::thread::sleep(Duration::from_millis(300));

    let sent = server.finish();
    let finished = wait_output(child, Duration::from_secs(20));
    assert!(finished.status.success(), "{}", finished.stderr);
    let all = batches(&output);
    assert!(all.iter().all(|b| b.1 == Case::Upper));
    assert_each_record_once(&all, sent);
}

#[test]
fn a_plugin_file_written_slowly_is_loaded_only_once_complete() {
    let s = Scratch::new();
    let server = LineServer::start(2000);
    let (child, output) = start(&s, &server, "{}", free_port());
    // Write lowercase.wasm in place in four pieces, pausing longer than the
    // reload debounce between them: the partial files must never go live.
    let bytes = std::fs::read(plugin("lowercase")).unwrap();
    let mut file = std::fs::File::create(s.path("case.wasm")).unwrap();
    for piece in bytes.chunks(bytes.len().div_ceil(4)) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    drop(file);
    eventually(Duration::from_secs(20), "lowercase live", || {
        latest_case(&output) == Some(Case::Lower)
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent = server.finish();
    let finished = wait_output(child, Duration::from_secs(20));
    assert!(finished.status.success(), "{}", finished.stderr);
    // Partial files were rejected, never run: only the two real versions
    // ever processed records, each batch entirely by one of them.
    assert!(
        finished.stderr.contains("new version rejected"),
        "{}",
        finished.stderr
    );
    let all = batches(&output);
    let mut sequence: Vec<Case> = all.iter().map(|b| b.1).collect();
    sequence.dedup();
    assert_eq!(sequence, [Case::Upper, Case::Lower]);
    assert_each_record_once(&all, sent);
}

#[test]
fn deploy_status_and_rollback_through_the_control_endpoint() {
    let s = Scratch::new();
    let server = LineServer::start(1000);
    let port = free_port();
    let (child, output) = start(&s, &server, "{}", port);
    let control = format!("127.0.0.1:{port}");

    let out = deploy(&s, &control, "lowercase");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed lowercase.wasm@"));
    eventually(Duration::from_secs(20), "lowercase live", || {
        latest_case(&output) == Some(Case::Lower)
    });

    let out = s
        .sluice(&["status", "--control", &control])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stage case: lowercase.wasm@"), "{text}");
    assert!(text.contains("earlier: case.wasm@"), "{text}");

    let out = s
        .sluice(&["rollback", "reload", "case", "--control", &control])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), "uppercase back", || {
        latest_case(&output) == Some(Case::Upper)
    });
    let out = s
        .sluice(&["rollback", "reload", "case", "--control", &control])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing earlier to roll back to"
    );

    let sent = server.finish();
    let finished = wait_output(child, Duration::from_secs(20));
    assert!(finished.status.success(), "{}", finished.stderr);
    let all = batches(&output);
    let mut sequence: Vec<Case> = all.iter().map(|b| b.1).collect();
    sequence.dedup();
    assert_eq!(sequence, [Case::Upper, Case::Lower, Case::Upper]);
    assert_each_record_once(&all, sent);
}

#[test]
fn a_version_that_rejects_most_records_is_rolled_back_and_the_batch_redone() {
    let s = Scratch::new();
    let server = LineServer::start(2000);
    let port = free_port();
    // json-filter accepts this config, then rejects every line (not JSON);
    // the case plugins ignore it.
    let (child, output) = start(&s, &server, "{ field = \"x\", equals = \"y\" }", port);
    let control = format!("127.0.0.1:{port}");
    let out = deploy(&s, &control, "json_filter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rolled_back = || {
        let out = s
            .sluice(&["status", "--json", "--control", &control])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("rolled back")
    };
    eventually(
        Duration::from_secs(20),
        "json-filter rolled back",
        rolled_back,
    );
    std::thread::sleep(Duration::from_millis(300));
    let sent = server.finish();
    let finished = wait_output(child, Duration::from_secs(20));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(finished.stderr.contains("rejected"), "{}", finished.stderr);
    // The batch json-filter rejected was redone by uppercase: nothing
    // dead-lettered, every record out once, all upper case.
    assert!(read_jsonl_dir(&s.path("dead-letter/reload/case")).is_empty());
    let all = batches(&output);
    assert!(all.iter().all(|b| b.1 == Case::Upper));
    assert_each_record_once(&all, sent);
}
