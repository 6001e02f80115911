//! The Kafka source and sink against a real Kafka-protocol broker (tansu,
//! over TCP), checked with an independent client (Python confluent-kafka,
//! `tests/support/kafka_client.py`).
//!
//! `tests/run.sh` installs both, starts a broker shared by these tests and
//! exports `KAFKA_BOOTSTRAP` (its address), `SLUICE_TANSU` (the broker
//! binary, for tests that stop and start a broker of their own) and
//! `SLUICE_KAFKA_PYTHON` (the Python that has confluent-kafka). Each test
//! uses its own topics and consumer group.
//!
//! tansu keeps topics in memory here: a restarted broker starts empty.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

mod delivery;
mod failover;
mod lag;
mod tasks;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Kafka tests need a broker and a client; run them through \
             `bash tests/run.sh`, which installs and starts both (or export KAFKA_BOOTSTRAP, \
             SLUICE_TANSU and SLUICE_KAFKA_PYTHON yourself)"
        )
    })
}

/// The broker `tests/run.sh` started.
fn shared_broker() -> String {
    env("KAFKA_BOOTSTRAP")
}

/// A name no other test (or earlier run against the same broker) uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn client(brokers: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env("SLUICE_KAFKA_PYTHON"));
    cmd.arg(root().join("tests/support/kafka_client.py"))
        .arg(brokers)
        .args(args);
    cmd
}

fn create_topic(brokers: &str, topic: &str, partitions: u32) {
    let out = client(brokers, &["create", topic, &partitions.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating topic {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Produces `messages` (see kafka_client.py for their shape).
fn produce(brokers: &str, topic: &str, messages: &[Value]) {
    let mut child = client(brokers, &["produce", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "producing to {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each line of `text` as a message, spread over `partitions` in turn.
fn line_messages(text: &str, partitions: u32) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, line)| json!({"value": line, "partition": i as u32 % partitions}))
        .collect()
}

/// Every message of a topic, read from the start by a client process that
/// runs until dropped.
struct Reader {
    child: Child,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl Reader {
    fn start(brokers: &str, topic: &str) -> Reader {
        let mut child = client(brokers, &["consume", topic])
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

    fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Word totals from word-count's output so far.
    fn totals(&self) -> BTreeMap<String, u64> {
        totals(&self.messages())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Word count from Kafka to Kafka, as a pipeline file.
fn wordcount(brokers: &str, lines: &str, group: &str, counts: &str) -> String {
    format!(
        r#"
name = "kafka-wordcount"
batch_interval = "200ms"

[[sources]]
type = "kafka"
brokers = "{brokers}"
topics = ["{lines}"]
group = "{group}"
start = "earliest"
options = {{ "fetch.wait.max.ms" = 50 }}

[[stages]]
name = "split"
plugin = '{}'
dead_letter = "dead-letter"

[[stages]]
name = "count"
plugin = '{}'

# A restarted (in-memory) tansu has forgotten the producer's id and refuses
# its messages until they time out; a new producer then delivers them.
[[sinks]]
type = "kafka"
brokers = "{brokers}"
topic = "{counts}"
options = {{ "message.timeout.ms" = 8000 }}
"#,
        plugin("word_split").display(),
        plugin("word_count").display()
    )
}

/// `sluice run` with its log going to `log` (readable while it runs).
fn spawn_logged(s: &Scratch, pipeline: &str, log: &str) -> Child {
    let file = File::create(s.path(log)).unwrap();
    s.sluice(&["run", pipeline])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until a word count over Kafka has counted at least `expected`,
/// failing with both sides if it does not.
fn wait_counted(reader: &Reader, expected: &BTreeMap<String, u64>, logs: &[PathBuf]) {
    let start = Instant::now();
    loop {
        let totals = reader.totals();
        if expected
            .iter()
            .all(|(w, n)| totals.get(w).copied().unwrap_or(0) >= *n)
        {
            return;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
            panic!(
                "counts incomplete after 90 s\nexpected {expected:?}\ngot {totals:?}\nlogs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a `read_committed` reader sees of `topic`, worked out from the raw
/// log by the test client: the test broker hands aborted transactions'
/// records to `read_committed` consumers too (it sends no list of aborted
/// transactions with its fetch answers, from which clients filter).
fn committed_messages(brokers: &str, topic: &str) -> Vec<Value> {
    let out = client(brokers, &["committed", topic]).output().unwrap();
    assert!(
        out.status.success(),
        "reading {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8(out.stdout).unwrap())
}

fn words(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

fn sum_counts(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut sum = a.clone();
    for (w, n) in b {
        *sum.entry(w.clone()).or_insert(0) += n;
    }
    sum
}

#[test]
fn wordcount_from_four_partitions_matches_an_independent_count() {
    let brokers = shared_broker();
    let (lines, counts) = (unique("lines"), unique("counts"));
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let text = sample_text(3000, 31);
    produce(&brokers, &lines, &line_messages(&text, 4));

    let s = Scratch::new();
    s.write(
        "p.toml",
        &wordcount(&brokers, &lines, &unique("group"), &counts),
    );
    let mut child = spawn_logged(&s, "p.toml", "log");
    let reader = Reader::start(&brokers, &counts);
    let expected = count_words(&text);
    wait_counted(&reader, &expected, &[s.path("log")]);
    // Let a late duplicate show, if there were one.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reader.totals(), expected, "counts differ");

    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    let log = read(&s.path("log"));
    assert!(status.success(), "sluice failed:\n{log}");
    assert!(
        log.contains(&format!("partitions assigned: {lines}[0,1,2,3]")),
        "{log}"
    );
    assert!(log.contains("3000 records in"), "{log}");
}

#[test]
fn sigkill_mid_stream_and_restart_loses_nothing() {
    let brokers = shared_broker();
    let (lines, counts, group) = (unique("lines"), unique("counts"), unique("group"));
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let s = Scratch::new();
    s.write("p.toml", &wordcount(&brokers, &lines, &group, &counts));
    let reader = Reader::start(&brokers, &counts);

    // Part one is counted in full, so its offsets are committed.
    let first = sample_text(500, 41);
    produce(&brokers, &lines, &line_messages(&first, 4));
    let mut child = spawn_logged(&s, "p.toml", "log-1");
    wait_counted(&reader, &count_words(&first), &[s.path("log-1")]);
    std::thread::sleep(Duration::from_millis(500));

    // Part two streams in; the engine is killed while it does.
    let chunks: Vec<String> = (0..10).map(|i| sample_text(100, 100 + i)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&brokers, &lines, &line_messages(chunk, 4));
        if i == 3 {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let second = chunks.concat();
    let mut child = spawn_logged(&s, "p.toml", "log-2");

    let expected = sum_counts(&count_words(&first), &count_words(&second));
    wait_counted(&reader, &expected, &[s.path("log-1"), s.path("log-2")]);
    std::thread::sleep(Duration::from_secs(1));
    let totals = reader.totals();
    let extra = words(&totals) - words(&expected);
    // Only what was read after the last commit before the kill is counted
    // twice: never part one.
    assert!(
        extra <= words(&count_words(&second)),
        "{extra} words counted twice: more than the uncommitted part"
    );
    eprintln!("after SIGKILL: {extra} words counted twice (at-least-once)");
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_message_that_is_not_utf8_is_dead_lettered_not_fatal() {
    let brokers = shared_broker();
    let (lines, counts) = (unique("lines"), unique("counts"));
    create_topic(&brokers, &lines, 1);
    create_topic(&brokers, &counts, 1);
    produce(
        &brokers,
        &lines,
        &[
            json!({"value": "good words here"}),
            json!({"value_hex": "ff fe 00 41".replace(' ', ""), "key": "bad-one"}),
            json!({"value": "more good words"}),
        ],
    );
    let s = Scratch::new();
    s.write(
        "p.toml",
        &wordcount(&brokers, &lines, &unique("group"), &counts),
    );
    let mut child = spawn_logged(&s, "p.toml", "log");
    let reader = Reader::start(&brokers, &counts);
    let expected = count_words("good words here\nmore good words\n");
    wait_counted(&reader, &expected, &[s.path("log")]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reader.totals(), expected);

    let dead = read_jsonl_dir(&s.path("dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "bad-one");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("UTF-8"),
        "{dead:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "{}",
        read(&s.path("log"))
    );
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn keys_headers_and_timestamps_pass_through_and_a_header_picks_the_topic() {
    let brokers = shared_broker();
    let (input, main, other) = (unique("in"), unique("main"), unique("other"));
    create_topic(&brokers, &input, 2);
    create_topic(&brokers, &main, 1);
    create_topic(&brokers, &other, 1);
    produce(
        &brokers,
        &input,
        &[
            json!({"value": "one", "key": "k1", "headers": {"trace": "t-1"}, "partition": 0}),
            json!({"value": "two", "key": "k2", "headers": {"route": other, "trace": "t-2"}, "partition": 1}),
            json!({"value": "three", "partition": 0}),
        ],
    );
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "passthrough"
batch_interval = "100ms"

[[sources]]
type = "kafka"
brokers = "{brokers}"
topics = ["{input}"]
group = "{}"
start = "earliest"

[[sinks]]
type = "kafka"
brokers = "{brokers}"
topic = "{main}"
topic_header = "route"
"#,
            unique("group")
        ),
    );
    let mut child = spawn_logged(&s, "p.toml", "log");
    let source = Reader::start(&brokers, &input);
    let to_main = Reader::start(&brokers, &main);
    let to_other = Reader::start(&brokers, &other);
    eventually(Duration::from_secs(60), "3 messages through", || {
        to_main.messages().len() + to_other.messages().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let by_value = |messages: Vec<Value>| -> BTreeMap<String, Value> {
        messages
            .into_iter()
            .map(|m| (m["value"].as_str().unwrap().to_string(), m))
            .collect()
    };
    let (sent, main_out, other_out) = (
        by_value(source.messages()),
        by_value(to_main.messages()),
        by_value(to_other.messages()),
    );
    assert_eq!(main_out.keys().collect::<Vec<_>>(), ["one", "three"]);
    assert_eq!(other_out.keys().collect::<Vec<_>>(), ["two"]);
    for (value, out) in main_out.iter().chain(other_out.iter()) {
        let input = &sent[value];
        for field in ["key", "timestamp", "headers"] {
            assert_eq!(out[field], input[field], "{field} of `{value}`");
        }
    }
    terminate(&child);
    assert!(
        wait_deadline(&mut child, Duration::from_secs(30)).success(),
        "{}",
        read(&s.path("log"))
    );
}

#[test]
fn start_committed_without_committed_offsets_is_a_clear_error() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 1);
    produce(&brokers, &lines, &[json!({"value": "x"})]);
    let s = Scratch::new();
    let group = unique("group");
    s.write(
        "p.toml",
        &format!(
            "name = \"c\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"{lines}\"]\n\
             group = \"{group}\"\nstart = \"committed\"\n[[sinks]]\ntype = \"null\"\n"
        ),
    );
    let done = wait_output(
        s.sluice(&["run", "p.toml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert!(!done.status.success());
    assert!(
        done.stderr.contains("no committed offset") && done.stderr.contains(&group),
        "{}",
        done.stderr
    );
}

/// A `[[sources]]` table reading `topic` from the earliest offset in
/// `group`, with `extra` lines added.
fn kafka_source(brokers: &str, topic: &str, group: &str, extra: &str) -> String {
    format!(
        "[[sources]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n\
         group = \"{group}\"\nstart = \"earliest\"\n{extra}"
    )
}

/// A pipeline file: `source` → word-split → `counter` (a plugin) → `sink`
/// (a `[[sinks]]` table), 100 ms batches, with top-level keys `top`.
fn split_and_count(name: &str, top: &str, source: &str, counter: &str, sink: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\n{top}\n{source}\n\
         [[stages]]\nname = \"split\"\nplugin = '{}'\n\n\
         [[stages]]\nname = \"count\"\nplugin = '{}'\n\n{sink}",
        plugin("word_split").display(),
        plugin(counter).display()
    )
}
