//! One process, one pipeline, a task per partition: word count over Kafka
//! with 1, 2 and 4 tasks, against one chain of stages and native Rust on
//! the same input in the same run.
//!
//! Needs a Kafka-protocol broker at `KAFKA_BOOTSTRAP`. Loads
//! `SLUICE_BENCH_LINES` generated lines (default 1,000,000, 10 words each)
//! into three new topics of 1, 2 and 4 partitions, then runs
//! `kafka → word-split → word-count → null`:
//!
//! - **sluice, N tasks**: the real binary with `tasks = "per-partition"` on
//!   the topic of N partitions (so N tasks, each its own chain of stage
//!   instances on threads of its own), in a new consumer group; timed from
//!   its first partition assignment until the group's committed offsets
//!   cover every line (the tasks commit every 500 ms, so a run's time is
//!   late by up to that);
//! - **sluice, one chain** (`tasks = "one"`) on the 4-partition topic: the
//!   engine without tasks, timed the same way;
//! - **native Rust**: one thread in this process reads the 4-partition topic
//!   with the same client library and counts words in a hash map.
//!
//! A second table runs the same with `running-count`, whose totals are
//! state: with tasks each checkpoint also writes the changed totals to the
//! stage's changelog topic; one chain keeps them in its local file only.
//!
//! Word count is cheap per line: on a 2-core machine with the broker on it,
//! the broker's delivery limits before the stages do. So a second table
//! runs a CPU-bound pipeline, `kafka → misbehave (mode = "slow") → null`,
//! whose stage spins `SLUICE_BENCH_SPIN` iterations (default 20,000) per
//! record, over three more topics (1, 2, 4 partitions) of a tenth of the
//! lines, with 1, 2 and 4 tasks and one chain: what tasks add when the
//! stages are the bottleneck.
//!
//! Run: `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench -p sluice --bench tasks`

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const WORDS_PER_LINE: u32 = 10;

fn main() {
    let Ok(brokers) = std::env::var("KAFKA_BOOTSTRAP") else {
        eprintln!("tasks bench: KAFKA_BOOTSTRAP is not set; start a broker and set it");
        std::process::exit(2);
    };
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let spin: u64 = std::env::var("SLUICE_BENCH_SPIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let guests = support::guests();
    let topic = |kind: &str, partitions: i32| format!("bench-tasks-{run}-{kind}-p{partitions}");
    let cpu_lines = (lines / 10).max(1);
    for partitions in [1, 2, 4] {
        for (kind, n) in [("wc", lines), ("cpu", cpu_lines)] {
            let loaded = Instant::now();
            support::kafka::load(
                &brokers,
                &topic(kind, partitions),
                partitions,
                n,
                WORDS_PER_LINE,
            );
            println!(
                "loaded {n} lines into {} in {:.1} s",
                topic(kind, partitions),
                loaded.elapsed().as_secs_f64()
            );
        }
    }
    let word_count = format!(
        "[[stages]]\nname = \"split\"\nplugin = '{}'\n\n[[stages]]\nname = \"count\"\nplugin = '{}'\n",
        guests.join("word_split.wasm").display(),
        guests.join("word_count.wasm").display()
    );
    let cpu_bound = format!(
        "[[stages]]\nname = \"work\"\nplugin = '{}'\nconfig = {{ mode = \"slow\", spin = \"{spin}\" }}\n",
        guests.join("misbehave.wasm").display()
    );
    let native = native(&brokers, &topic("wc", 4), 4, lines);
    let table = |kind: &str, stages: &str, n: u64| {
        let mut runs = Vec::new();
        for partitions in [1, 2, 4] {
            let t = topic(kind, partitions);
            let m = sluice(&brokers, stages, &t, partitions, n, "per-partition");
            runs.push((format!("sluice, {partitions} task(s)"), m));
        }
        let chain = sluice(&brokers, stages, &topic(kind, 4), 4, n, "one");
        runs.push(("sluice, one chain (4 partitions)".to_string(), chain));
        runs
    };
    let print = |title: String, runs: &[(String, Measured)], n: u64| {
        let rate = |m: &Measured| n as f64 / m.secs;
        let one_task = rate(&runs[0].1);
        println!("{title}");
        for (name, m) in runs {
            println!(
                "  {name:<34} {:>10.0} lines/s ({:.3} s), {:.2}× one task, CPU {:.2} µs/line, {:.2} cores busy",
                rate(m),
                m.secs,
                rate(m) / one_task,
                m.cpu * 1e6 / n as f64,
                m.cpu / m.secs
            );
        }
    };
    let mut runs = table("wc", &word_count, lines);
    runs.push(("native Rust, 1 thread".to_string(), native));
    print(
        format!(
            "kafka → word-split → word-count → null, {lines} lines of {WORDS_PER_LINE} words, one process"
        ),
        &runs,
        lines,
    );
    let running_count = format!(
        "[[stages]]\nname = \"split\"\nplugin = '{}'\n\n[[stages]]\nname = \"count\"\nplugin = '{}'\n",
        guests.join("word_split.wasm").display(),
        guests.join("running_count.wasm").display()
    );
    let runs = table("wc", &running_count, lines);
    print(
        format!(
            "kafka → word-split → running-count (state; with tasks also its changelog) → null, {lines} lines"
        ),
        &runs,
        lines,
    );
    let runs = table("cpu", &cpu_bound, cpu_lines);
    print(
        format!(
            "kafka → misbehave (spin {spin} per record) → null, {cpu_lines} lines, one process"
        ),
        &runs,
        cpu_lines,
    );
}

/// Wall-clock and CPU time of one run.
struct Measured {
    secs: f64,
    /// CPU seconds of the whole process (sluice: from its start).
    cpu: f64,
}

/// Word count in plain Rust on one thread: read every partition, count.
fn native(brokers: &str, topic: &str, partitions: i32, lines: u64) -> Measured {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-tasks-native")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let cpu_before = support::cpu_seconds("self", false);
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut read = 0u64;
    while read < lines {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consuming");
        let text = std::str::from_utf8(message.payload().unwrap_or_default()).unwrap();
        for word in text.split_whitespace() {
            match counts.get_mut(word.as_bytes()) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(word.as_bytes().to_vec(), 1);
                }
            }
        }
        read += 1;
    }
    assert!(counts.values().sum::<u64>() == lines * WORDS_PER_LINE as u64);
    Measured {
        secs: started.elapsed().as_secs_f64(),
        cpu: support::cpu_seconds("self", false) - cpu_before,
    }
}

/// The real binary with `tasks = "<tasks>"` on `topic`, timed from its
/// first assignment until the group's committed offsets cover every line.
fn sluice(
    brokers: &str,
    stages: &str,
    topic: &str,
    partitions: i32,
    lines: u64,
    tasks: &str,
) -> Measured {
    // Each run a group, a pipeline name (so changelog topics) and a folder
    // of its own.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let group = format!("{topic}-{tasks}-{n}");
    let name = format!("tasks-bench-{n}");
    let dir = std::env::temp_dir().join(format!("sluice-{topic}-{tasks}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name = "{name}"
batch_interval = "100ms"
tasks = "{tasks}"

[[sources]]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group = "{group}"
start = "earliest"

{stages}
[[sinks]]
type = "null"
"#
        ),
    )
    .unwrap();
    let mut child = support::sluice_run(&pipeline)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let (assigned_tx, assigned_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Not the status line "no tasks (no partitions assigned)",
            // which comes seconds before the group's first assignment.
            if line.contains("partitions assigned:") {
                let _ = assigned_tx.send(Instant::now());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let Ok(started) = assigned_rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("sluice got no partitions:\n{}", log.join().unwrap());
    };
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let finished = loop {
        let committed = support::kafka::committed_total(&watcher, topic, partitions);
        if committed as u64 >= lines {
            break Instant::now();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sluice exited ({status}):\n{}", log.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = support::cpu_seconds(&child.id().to_string(), false);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let log = log.join().unwrap();
    assert!(
        log.contains(&format!("{lines} records in")),
        "sluice did not report every line:\n{log}"
    );
    if tasks == "per-partition" {
        for p in 0..partitions {
            assert!(log.contains(&format!("task {name}.p{p} started")), "{log}");
        }
    }
    Measured {
        secs: finished.duration_since(started).as_secs_f64(),
        cpu,
    }
}
