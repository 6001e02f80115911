//! Kafka → Wasm → Kafka word count, against native Rust doing the same
//! Kafka round trip in the same run.
//!
//! Needs a Kafka-protocol broker at `KAFKA_BOOTSTRAP` (see "Kafka" in the
//! README for running one). Loads `SLUICE_BENCH_LINES` lines (default
//! 1,000,000, 10 words each) into a new 4-partition topic, then:
//!
//! - **sluice**: the real binary runs `kafka → word-split → word-count →
//!   kafka` in a new consumer group; timed from its partitions being
//!   assigned (so the group join is left out) until the group's committed
//!   offsets cover every line, which the engine does only after the sink
//!   has every count delivered;
//! - **native**: plain Rust in this process with the same client library:
//!   a consumer reads every partition, splits and counts each chunk of
//!   messages in a hash map, produces the counts (idempotent, `acks=all`)
//!   and waits for their delivery; timed from assignment to the last
//!   delivery;
//! - **read only**: the same consumer reading every message and doing
//!   nothing with it, first: what the broker itself can deliver.
//! - **sluice, exactly-once**: the same pipeline with `delivery =
//!   "exactly-once"` (a Kafka transaction per batch, committed after the
//!   checkpoint), in a group of its own, timed the same way.
//!
//! Run: `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench -p sluice --bench kafka`

mod support;

use support::kafka::{create_topic, send};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const WORDS_PER_LINE: u32 = 10;
const PARTITIONS: i32 = 4;

fn main() {
    let Ok(brokers) = std::env::var("KAFKA_BOOTSTRAP") else {
        eprintln!(
            "kafka bench: KAFKA_BOOTSTRAP is not set; start a broker (README, \"Kafka\") and set it"
        );
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
    let input = format!("bench-lines-{run}");
    let loaded = Instant::now();
    support::kafka::load(&brokers, &input, PARTITIONS, lines, WORDS_PER_LINE);
    println!(
        "loaded {lines} lines into {input} ({PARTITIONS} partitions) in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );

    let bare = read_only(&brokers, &input, lines);
    let native = native(&brokers, &input, &format!("bench-native-{run}"), lines);
    let least = sluice(
        &brokers,
        &input,
        &format!("bench-sluice-{run}"),
        lines,
        format!("{run}"),
        "at-least-once",
    );
    let exactly = sluice(
        &brokers,
        &input,
        &format!("bench-sluice-eos-{run}"),
        lines,
        format!("eos-{run}"),
        "exactly-once",
    );

    let rate = |m: &Measured| lines as f64 / m.secs;
    let cpu_us = |m: &Measured| m.cpu * 1e6 / lines as f64;
    println!("kafka → word count → kafka, {lines} lines of {WORDS_PER_LINE} words");
    for (name, m) in [
        ("read only (no work)", &bare),
        ("native Rust (rdkafka)", &native),
        ("sluice (Wasm stages)", &least),
        ("sluice, exactly-once", &exactly),
    ] {
        println!(
            "  {name:<22} {:>10.0} lines/s  ({:.3} s), CPU {:.2} µs/line",
            rate(m),
            m.secs,
            cpu_us(m)
        );
    }
    println!(
        "  ratio sluice/native    {:>10.2} (throughput), {:.2} (CPU per line)",
        rate(&least) / rate(&native),
        cpu_us(&least) / cpu_us(&native)
    );
    println!(
        "  exactly-once/at-least-once {:>6.2} (throughput)",
        rate(&exactly) / rate(&least)
    );
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// A consumer of every partition of `input` from its start, outside any
/// group.
fn reader(brokers: &str, input: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-native")
        .set("enable.auto.commit", "false")
        // As the engine's source sets it (see there).
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(input, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Only reading the input: the broker's own limit for both sides.
fn read_only(brokers: &str, input: &str, lines: u64) -> Measured {
    let consumer = reader(brokers, input);
    let started = Instant::now();
    let cpu_before = support::cpu_seconds("self", false);
    let mut read = 0u64;
    while read < lines {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.expect("consuming");
            read += 1;
        }
    }
    Measured {
        secs: started.elapsed().as_secs_f64(),
        cpu: support::cpu_seconds("self", false) - cpu_before,
    }
}

/// The same round trip in plain Rust.
fn native(brokers: &str, input: &str, output: &str, lines: u64) -> Measured {
    create_topic(brokers, output, 1);
    let consumer = reader(brokers, input);
    let producer = producer(brokers);
    let started = Instant::now();
    let cpu_before = support::cpu_seconds("self", false);
    let mut read = 0u64;
    while read < lines {
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut chunk = 0;
        while chunk < 100_000 && read < lines {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                break;
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
            chunk += 1;
            read += 1;
        }
        for (word, count) in &counts {
            let value = count.to_string();
            send(
                &producer,
                BaseRecord::to(output)
                    .key(word.as_slice())
                    .payload(value.as_bytes()),
            );
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("delivering");
    Measured {
        secs: started.elapsed().as_secs_f64(),
        cpu: support::cpu_seconds("self", false) - cpu_before,
    }
}

/// Wall-clock and CPU time of one side.
struct Measured {
    secs: f64,
    /// CPU seconds of the whole process (sluice: from its start, so
    /// including start-up and the group join).
    cpu: f64,
}

/// The real binary, timed from partition assignment to the last commit.
fn sluice(
    brokers: &str,
    input: &str,
    output: &str,
    lines: u64,
    run: String,
    delivery: &str,
) -> Measured {
    create_topic(brokers, output, 1);
    let guests = support::guests();
    let group = format!("bench-sluice-{run}");
    let dir = std::env::temp_dir().join(format!("sluice-kafka-bench-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name = "kafka-bench"
batch_interval = "100ms"
delivery = "{delivery}"

[[sources]]
type = "kafka"
brokers = "{brokers}"
topics = ["{input}"]
group = "{group}"
start = "earliest"

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"
"#,
            guests.join("word_split.wasm").display(),
            guests.join("word_count.wasm").display()
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
            if line.contains("partitions assigned") {
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

    // The group's committed offsets, as another client sees them.
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let finished = loop {
        let committed = support::kafka::committed_total(&watcher, input, PARTITIONS);
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
    assert!(
        log.contains(&format!("{delivery} delivery")),
        "sluice did not run with {delivery} delivery:\n{log}"
    );
    Measured {
        secs: finished.duration_since(started).as_secs_f64(),
        cpu,
    }
}
