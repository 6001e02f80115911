//! The ZeroMQ, MQTT and NATS connectors against real peers and servers:
//! pyzmq, mosquitto and nats-server (with JetStream), checked with
//! independent clients (pyzmq, paho-mqtt, nats-py:
//! `tests/support/connectors_client.py`).
//!
//! `tests/run.sh` installs them and starts a mosquitto and a nats-server
//! shared by these tests, exporting `MQTT_URL`, `NATS_URL`,
//! `SLUICE_MOSQUITTO` and `SLUICE_NATS_SERVER` (the binaries, for tests
//! that stop and start servers of their own) and `SLUICE_CONNECTORS_PYTHON`
//! (the Python that has the clients). Each test uses its own topics,
//! subjects, streams and client ids.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

mod mqtt;
mod nats;
mod zeromq;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the connector tests need mosquitto, nats-server and the Python \
             clients; run them through `bash tests/run.sh`, which installs and starts them (or \
             export MQTT_URL, NATS_URL, SLUICE_MOSQUITTO, SLUICE_NATS_SERVER and \
             SLUICE_CONNECTORS_PYTHON yourself)"
        )
    })
}

/// A name no other test (or earlier run against the same server) uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The independent client, with `args`.
fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(env("SLUICE_CONNECTORS_PYTHON"));
    cmd.arg(root().join("tests/support/connectors_client.py"))
        .args(args);
    cmd
}

/// Runs the client to completion with `input` on its standard input.
fn client_run(args: &[&str], input: &str) {
    let mut child = client(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = wait_output(child, Duration::from_secs(240));
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "client {args:?} failed:\n{}",
        out.stderr
    );
}

/// A client started with `input`, left running (a sender paced through a
/// kill and restart); `finish` waits for it.
struct Sender {
    child: Child,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(args: &[&str], input: String) -> Sender {
        let mut child = client(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        Sender {
            child,
            writer: Some(writer),
        }
    }

    fn finish(mut self, limit: Duration) {
        self.writer.take().unwrap().join().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let status = wait_deadline(&mut self.child, limit);
            let _ = e.read_to_string(&mut err);
            assert!(status.success(), "sender failed:\n{err}");
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reading client printing JSON lines, collected until dropped.
struct Reader {
    child: Child,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl Reader {
    fn start(args: &[&str]) -> Reader {
        let mut child = client(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap();
                sink.lock().unwrap().push(value);
            }
        });
        Reader { child, messages }
    }

    /// Messages so far (without the `ready` mark a subscriber prints).
    fn messages(&self) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.get("ready").is_none())
            .cloned()
            .collect()
    }

    fn wait_ready(&self) {
        eventually(Duration::from_secs(30), "the reader to subscribe", || {
            self.messages
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.get("ready").is_some())
        });
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Word totals from word-count output carried as `{"key"}\t{"value"}`-less
/// messages: the `text` format's `word<TAB>count` lines.
fn totals_of_text(values: impl IntoIterator<Item = String>) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for v in values {
        let (word, n) = v
            .rsplit_once('\t')
            .unwrap_or_else(|| panic!("not word<TAB>count: {v:?}"));
        *totals.entry(word.to_string()).or_insert(0) += n.parse::<u64>().unwrap();
    }
    totals
}

/// A directory sink writing JSON lines to `out`.
const TO_DIRECTORY: &str = "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n";

/// `sluice run` with its log going to `log` (readable while it runs).
fn spawn_logged(s: &Scratch, pipeline: &str, log: &str, envs: &[(&str, &str)]) -> Child {
    let file = File::create(s.path(log)).unwrap();
    let mut cmd = s.sluice(&["run", pipeline, "--control", "off"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `log` holds `text`, failing with the log if it does not.
fn wait_log(log: &Path, text: &str, limit: Duration) {
    let start = Instant::now();
    while !read(log).contains(text) {
        assert!(
            start.elapsed() < limit,
            "`{text}` not in the log after {limit:?}:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops sluice with SIGTERM and checks it ended well.
fn stop(mut child: Child, log: &Path) {
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(60));
    assert!(status.success(), "sluice failed:\n{}", read(log));
}

/// The values of a directory sink's JSON-lines output.
fn values_in(dir: &Path) -> Vec<String> {
    read_jsonl_dir(dir)
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until a directory sink's word-count output reaches `expected`
/// for every word, failing with the logs if it does not.
fn wait_totals(dir: &Path, expected: &BTreeMap<String, u64>, logs: &[PathBuf], limit: Duration) {
    let start = Instant::now();
    loop {
        let got = totals(&read_jsonl_dir(dir));
        if expected
            .iter()
            .all(|(w, n)| got.get(w).copied().unwrap_or(0) >= *n)
        {
            return;
        }
        if start.elapsed() > limit {
            let logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
            panic!(
                "counts incomplete after {limit:?}\nexpected {expected:?}\ngot {got:?}\nlogs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Numbered lines `prefix-<i> word word`, so that each is unique.
fn numbered_lines(prefix: &str, count: usize) -> Vec<String> {
    let text = sample_text(count, 7);
    text.lines()
        .enumerate()
        .map(|(i, words)| format!("{prefix}-{i:05} {words}"))
        .collect()
}

/// POSTs `body` as JSON lines to an `http` source at `address`.
fn post_ndjson(address: &str, body: &str) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
}

/// A server process of a test's own, to stop and start; killed when
/// dropped.
struct OwnServer {
    child: Option<Child>,
    port: u16,
    start: Box<dyn Fn(u16) -> Command>,
}

impl OwnServer {
    fn new(start: impl Fn(u16) -> Command + 'static) -> OwnServer {
        OwnServer {
            child: None,
            port: free_port(),
            start: Box::new(start),
        }
    }

    fn start(&mut self) {
        let child = (self.start)(self.port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(20), "the server to listen", || {
            std::net::TcpStream::connect(&address).is_ok()
        });
    }

    /// Stops it with SIGTERM (a clean shutdown: it saves what it keeps).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            wait_deadline(&mut child, Duration::from_secs(30));
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
