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

/// A broker of a test's own, to stop and start.
struct OwnBroker {
    port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    /// A free port, with no broker on it yet.
    fn reserve() -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnBroker { port, child: None }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let url = format!("tcp://{}", self.address());
        let child = Command::new(env("SLUICE_TANSU"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(Duration::from_secs(10), "the broker to listen", || {
            std::net::TcpStream::connect(self.address()).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
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
fn two_engines_share_a_group_and_one_takes_over_when_the_other_stops() {
    let brokers = shared_broker();
    let (lines, counts, group) = (unique("lines"), unique("counts"), unique("group"));
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let s = Scratch::new();
    s.write("p.toml", &wordcount(&brokers, &lines, &group, &counts));
    let reader = Reader::start(&brokers, &counts);
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));

    let mut a = spawn_logged(&s, "p.toml", "log-a");
    eventually(
        Duration::from_secs(30),
        "engine A to own all partitions",
        || read(&log_a).contains(&format!("partitions assigned: {lines}[0,1,2,3]")),
    );
    let mut b = spawn_logged(&s, "p.toml", "log-b");
    let split = |log: &Path| {
        let log = read(log);
        log.lines()
            .rev()
            .find(|l| l.contains("partitions assigned"))
            .and_then(|l| l.split("partitions assigned: ").nth(1))
            .is_some_and(|assigned| assigned.matches(',').count() == 1)
    };
    eventually(
        Duration::from_secs(60),
        "the partitions to be split 2 + 2",
        || split(&log_a) && split(&log_b),
    );

    let first = sample_text(800, 51);
    produce(&brokers, &lines, &line_messages(&first, 4));
    wait_counted(
        &reader,
        &count_words(&first),
        &[log_a.clone(), log_b.clone()],
    );

    // A leaves; B takes over A's partitions.
    terminate(&a);
    assert!(
        wait_deadline(&mut a, Duration::from_secs(30)).success(),
        "{}",
        read(&log_a)
    );
    let second = sample_text(800, 52);
    produce(&brokers, &lines, &line_messages(&second, 4));
    let expected = sum_counts(&count_words(&first), &count_words(&second));
    wait_counted(&reader, &expected, &[log_a.clone(), log_b.clone()]);
    terminate(&b);
    assert!(wait_deadline(&mut b, Duration::from_secs(30)).success());

    let (log_a, log_b) = (read(&log_a), read(&log_b));
    assert!(
        log_b.contains(&format!("partitions assigned: {lines}[0,1,2,3]")),
        "B did not take over every partition:\n{log_b}"
    );
    // Both did part of the work: each read some records.
    let records_in = |log: &str| -> u64 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(" records in"))
            .unwrap_or("");
        let before = line.split(" records in").next().unwrap_or("");
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (in_a, in_b) = (records_in(&log_a), records_in(&log_b));
    assert!(
        in_a > 0 && in_b > 0,
        "A read {in_a}, B read {in_b}:\n{log_a}\n----\n{log_b}"
    );
    assert!(
        in_a + in_b >= 1600,
        "A read {in_a}, B read {in_b}: lines were missed"
    );
}

#[test]
fn waits_for_a_broker_that_is_down_and_survives_its_restart() {
    let mut broker = OwnBroker::reserve();
    let brokers = broker.address();
    let (lines, counts) = (unique("lines"), unique("counts"));
    let s = Scratch::new();
    s.write(
        "p.toml",
        &wordcount(&brokers, &lines, &unique("group"), &counts),
    );
    let log = s.path("log");

    // No broker yet: the engine waits, says so, and does not exit.
    let mut child = spawn_logged(&s, "p.toml", "log");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited:\n{}",
        read(&log)
    );
    let waiting = read(&log);
    assert!(
        waiting.contains(&brokers) && waiting.contains("retrying"),
        "no log line about the unreachable broker:\n{waiting}"
    );

    broker.start();
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let first = sample_text(400, 61);
    produce(&brokers, &lines, &line_messages(&first, 4));
    let reader = Reader::start(&brokers, &counts);
    wait_counted(&reader, &count_words(&first), &[log.clone()]);
    drop(reader);

    // The broker goes away (and, in memory, forgets everything).
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited:\n{}",
        read(&log)
    );
    broker.start();
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    // Fewer lines than before, so the positions the engine remembers are
    // past the end of the new partitions and it starts them again (from
    // `earliest`), as it would after any out-of-range offset.
    let second = sample_text(200, 62);
    produce(&brokers, &lines, &line_messages(&second, 4));
    let reader = Reader::start(&brokers, &counts);
    wait_counted(&reader, &count_words(&second), &[log.clone()]);

    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", read(&log));
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

/// State over Kafka: `running-count` reads a 4-partition topic while input
/// streams in and the engine is SIGKILLed five times (each time after it got
/// its partitions); the checkpoint's offsets, not the group's, say where
/// each restart begins, so every word's latest total is exact at the end.
#[test]
fn running_count_over_kafka_stays_exact_through_sigkills() {
    let brokers = shared_broker();
    let (lines, group) = (unique("lines"), unique("group"));
    create_topic(&brokers, &lines, 4);
    let s = Scratch::new();
    s.write(
        "p.toml",
        &split_and_count(
            "kafka-totals",
            "",
            &kafka_source(&brokers, &lines, &group, ""),
            "running_count",
            "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n",
        ),
    );

    let producer = {
        let (brokers, lines) = (brokers.clone(), lines.clone());
        std::thread::spawn(move || {
            let mut all = String::new();
            for i in 0..16 {
                let chunk = sample_text(60, 500 + i);
                produce(&brokers, &lines, &line_messages(&chunk, 4));
                all.push_str(&chunk);
                std::thread::sleep(Duration::from_millis(400));
            }
            all
        })
    };
    let mut logs = Vec::new();
    for n in 0..5 {
        let log = format!("log-{n}");
        let mut child = spawn_logged(&s, "p.toml", &log);
        let path = s.path(&log);
        eventually(Duration::from_secs(60), "partitions assigned", || {
            read(&path).contains("partitions assigned")
        });
        std::thread::sleep(Duration::from_millis(300 + 150 * n));
        child.kill().unwrap();
        child.wait().unwrap();
        logs.push(path);
    }
    let expected = count_words(&producer.join().unwrap());
    let mut child = spawn_logged(&s, "p.toml", "log-last");
    logs.push(s.path("log-last"));
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(90) {
        got = read_jsonl_dir(&s.path("out"))
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["value"].as_str().unwrap().parse::<u64>().unwrap(),
                )
            })
            .collect();
        if got == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&child);
    let _ = wait_deadline(&mut child, Duration::from_secs(30));
    let all_logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
    assert_eq!(
        got,
        expected,
        "totals differ; logs:\n{}",
        all_logs.join("\n----\n")
    );
    assert!(
        all_logs
            .iter()
            .any(|l| l.contains("starting from the checkpoint")),
        "no restart began at the checkpoint"
    );
}

/// What a `read_committed` reader sees of `topic`, worked out from the raw
/// log by the test client (not trusting the broker's own filtering).
fn committed_messages(brokers: &str, topic: &str) -> Vec<Value> {
    let out = client(brokers, &["committed", topic]).output().unwrap();
    assert!(
        out.status.success(),
        "reading {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Exactly-once Kafka → Kafka: per-batch word counts go to a topic in one
/// transaction per batch. Two crashes are injected where random kills
/// rarely land (right after a batch's transaction is written, and right
/// after its checkpoint, before the commit: the restart must write that
/// batch again from the copy kept with the checkpoint), then three random
/// SIGKILLs follow. The committed output, summed, equals the input's counts
/// exactly: no batch committed twice, none lost.
#[test]
fn exactly_once_kafka_to_kafka_commits_no_output_twice_through_crashes() {
    let brokers = shared_broker();
    let (lines, counts, group) = (unique("lines"), unique("counts"), unique("group"));
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 2);
    let s = Scratch::new();
    s.write(
        "p.toml",
        &split_and_count(
            "kafka-exactly-once",
            "delivery = \"exactly-once\"\n",
            // A crashed member holds its partitions for this long: keep
            // restarts quick.
            &kafka_source(
                &brokers,
                &lines,
                &group,
                "options = { \"session.timeout.ms\" = 3000, \"heartbeat.interval.ms\" = 1000 }\n",
            ),
            "word_count",
            &format!(
                "[[sinks]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{counts}\"\n"
            ),
        ),
    );

    // Input keeps coming until the crashes are over, so every run has
    // batches to crash in.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (brokers, lines, stop) = (brokers.clone(), lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut all = String::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let chunk = sample_text(20, 900 + i);
                produce(&brokers, &lines, &line_messages(&chunk, 4));
                all.push_str(&chunk);
                i += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            all
        })
    };
    let mut logs = Vec::new();
    for (n, point) in ["written:2", "checkpointed:2"].iter().enumerate() {
        let log = format!("log-crash-{n}");
        let file = File::create(s.path(&log)).unwrap();
        let mut child = s
            .sluice(&["run", "p.toml"])
            .env("SLUICE_CRASH_AT", point)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let began = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if began.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("run {n} did not crash at {point}:\n{}", read(&s.path(&log)));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = read(&s.path(&log));
        assert!(
            !status.success() && text.contains("SLUICE_CRASH_AT: crashing"),
            "run {n} did not crash at {point}: {status}\n{text}"
        );
        logs.push(s.path(&log));
    }
    for n in 0..3 {
        let log = format!("log-{n}");
        let mut child = spawn_logged(&s, "p.toml", &log);
        let path = s.path(&log);
        eventually(Duration::from_secs(60), "partitions assigned", || {
            read(&path).contains("partitions assigned")
        });
        std::thread::sleep(Duration::from_millis(500 + 300 * n));
        child.kill().unwrap();
        child.wait().unwrap();
        logs.push(path);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let expected = count_words(&producer.join().unwrap());
    let mut child = spawn_logged(&s, "p.toml", "log-last");
    logs.push(s.path("log-last"));
    let start = Instant::now();
    let sums = |output: &[Value]| -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for m in output {
            let count = m["value"].as_str().unwrap().parse::<u64>().unwrap();
            *sums
                .entry(m["key"].as_str().unwrap().to_string())
                .or_insert(0) += count;
        }
        sums
    };
    while start.elapsed() < Duration::from_secs(90) {
        if sums(&committed_messages(&brokers, &counts)) == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    terminate(&child);
    let _ = wait_deadline(&mut child, Duration::from_secs(30));
    let got = sums(&committed_messages(&brokers, &counts));
    let all_logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
    let logs_text = all_logs.join("\n----\n");
    let off: Vec<String> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .map(|(w, n)| format!("{w}: {} of {n}", got.get(w).copied().unwrap_or(0)))
        .collect();
    assert!(
        off.is_empty() && got.len() == expected.len(),
        "committed counts differ from the input's: {off:?}; logs:\n{logs_text}"
    );
    // The run after the crash between checkpoint and commit wrote that
    // batch again.
    assert!(
        all_logs[2].contains("was not committed before the crash"),
        "{}",
        all_logs[2]
    );
}

/// Exactly-once after the state file is deleted: the marker in the broker
/// still says an earlier state file's checkpoint `n`, while the new state
/// counts from 1 again. A crash between the new checkpoint 1 and its commit
/// must still be repaired on restart (the batch written again), not taken
/// for committed because 1 <= n. Input before and after the reset goes
/// through different topics, so the committed counts must be exactly both
/// inputs' counts.
#[test]
fn exactly_once_survives_a_deleted_state_file_and_a_crash_before_the_first_commit() {
    let brokers = shared_broker();
    let (before, after, counts) = (unique("lines"), unique("lines"), unique("counts"));
    create_topic(&brokers, &before, 2);
    create_topic(&brokers, &after, 2);
    create_topic(&brokers, &counts, 1);
    // One pipeline name in every run: the transactional id and the marker
    // are the same across the reset, as for a user who deletes the file.
    let name = unique("eo-reset");
    let pipeline = |topic: &str, group: &str| {
        split_and_count(
            &name,
            "delivery = \"exactly-once\"\n",
            &kafka_source(&brokers, topic, group, ""),
            "word_count",
            &format!(
                "[[sinks]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{counts}\"\n"
            ),
        )
    };
    let sums = |output: &[Value]| -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for m in output {
            let count = m["value"].as_str().unwrap().parse::<u64>().unwrap();
            *sums
                .entry(m["key"].as_str().unwrap().to_string())
                .or_insert(0) += count;
        }
        sums
    };
    let wait_for = |expected: &BTreeMap<String, u64>| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if sums(&committed_messages(&brokers, &counts)) == *expected {
                return true;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        false
    };
    let s = Scratch::new();

    // Run 1: several checkpoints, so the marker ends well above 1.
    let text_before = (0..4).map(|i| sample_text(30, 700 + i)).collect::<String>();
    s.write("p.toml", &pipeline(&before, &unique("group")));
    let mut child = spawn_logged(&s, "p.toml", "log-1");
    for i in 0..4 {
        produce(
            &brokers,
            &before,
            &line_messages(&sample_text(30, 700 + i), 2),
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let mut expected = count_words(&text_before);
    let done = wait_for(&expected);
    terminate(&child);
    let _ = wait_deadline(&mut child, Duration::from_secs(30));
    assert!(
        done,
        "run 1 did not commit its counts:\n{}",
        read(&s.path("log-1"))
    );

    // The state file goes; new input, then a crash after checkpoint 1 and
    // before its commit.
    std::fs::remove_dir_all(s.path("state")).unwrap();
    let text_after = sample_text(40, 800);
    produce(&brokers, &after, &line_messages(&text_after, 2));
    s.write("p.toml", &pipeline(&after, &unique("group")));
    let file = File::create(s.path("log-2")).unwrap();
    let status = s
        .sluice(&["run", "p.toml"])
        .env("SLUICE_CRASH_AT", "checkpointed:1")
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    let log_2 = read(&s.path("log-2"));
    assert!(
        !status.success() && log_2.contains("SLUICE_CRASH_AT: crashing"),
        "run 2 did not crash after checkpoint 1: {status}\n{log_2}"
    );
    assert!(
        log_2.contains("setting it back to 0"),
        "run 2 did not reset the marker:\n{log_2}"
    );

    // Run 3 writes checkpoint 1's output again and reads on.
    let mut child = spawn_logged(&s, "p.toml", "log-3");
    for (word, n) in count_words(&text_after) {
        *expected.entry(word).or_insert(0) += n;
    }
    let done = wait_for(&expected);
    terminate(&child);
    let _ = wait_deadline(&mut child, Duration::from_secs(30));
    let log_3 = read(&s.path("log-3"));
    let got = sums(&committed_messages(&brokers, &counts));
    assert!(
        done,
        "committed counts differ from both inputs' counts: {} words of {} right\nrun 2:\n{log_2}\nrun 3:\n{log_3}",
        expected
            .iter()
            .filter(|(w, n)| got.get(*w) == Some(n))
            .count(),
        expected.len()
    );
    assert!(
        log_3.contains("was not committed before the crash"),
        "run 3 did not write checkpoint 1 again:\n{log_3}"
    );
}
