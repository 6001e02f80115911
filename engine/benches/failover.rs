//! Scaling out across processes on Kafka: what a second process costs, how
//! long a failover takes, and how fast a task's state comes back from its
//! changelog.
//!
//! Needs a Kafka-protocol broker at `KAFKA_BOOTSTRAP`. Three parts, each
//! in new topics, groups and folders:
//!
//! - **Two processes against one**: `kafka → word-split → word-count →
//!   null` with `tasks = "per-partition"` over a 4-partition topic of
//!   `SLUICE_BENCH_LINES` lines (default 1,000,000, 10 words each): one
//!   process (4 tasks), then two processes of the same pipeline in one
//!   consumer group (2 tasks each, after the group's rebalance), each timed
//!   from the first partition assignment until the group's committed
//!   offsets cover every line; CPU per line over both processes.
//! - **Failover**: two processes of `kafka → word-split → running-count →
//!   directory` (state, so a changelog) over a 4-partition topic that a
//!   feeder fills at `SLUICE_BENCH_RATE` lines/s (default 2,000); when both
//!   write output, one is killed with SIGKILL, and the survivor's log and
//!   output folder tell when it was given the lost partitions, when their
//!   tasks had restored their state and started, and when each wrote its
//!   first output. Repeated `SLUICE_BENCH_FAILOVERS` times (default 3).
//! - **Restore**: a changelog topic filled with `SLUICE_BENCH_RESTORE_MB`
//!   MB of state (default 100; 1,000,000 records of 100 bytes per 100 MB),
//!   then one process of a pipeline whose stage that changelog belongs to,
//!   with no local state (a new machine): the task's restore as its log
//!   line reports it, beside a native-Rust consumer reading the same
//!   records with the same client library (no state file) in the same run.
//!
//! Run: `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench -p sluice --bench failover`
//! (`SLUICE_BENCH_PART=scale|failover|restore` runs one part).

mod support;

use support::kafka::{bulk_producer, create_topic, send};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice::source::LineMaker;

const WORDS_PER_LINE: u32 = 10;
const PARTITIONS: i32 = 4;

fn main() {
    let Ok(brokers) = std::env::var("KAFKA_BOOTSTRAP") else {
        eprintln!("failover bench: KAFKA_BOOTSTRAP is not set; start a broker and set it");
        std::process::exit(2);
    };
    let number = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let part = std::env::var("SLUICE_BENCH_PART").unwrap_or_default();
    let runs = |p: &str| part.is_empty() || part == p;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let bench = Bench {
        brokers: brokers.clone(),
        guests: support::guests(),
        run,
    };
    if runs("scale") {
        bench.scale(number("SLUICE_BENCH_LINES", 1_000_000));
    }
    if runs("failover") {
        for standby in [false, true] {
            bench.failover(
                number("SLUICE_BENCH_RATE", 2_000),
                number("SLUICE_BENCH_FAILOVERS", 3),
                number("SLUICE_BENCH_STATE_MB", 100),
                standby,
            );
        }
    }
    if runs("restore") {
        bench.restore(number("SLUICE_BENCH_RESTORE_MB", 100));
    }
}

struct Bench {
    brokers: String,
    guests: PathBuf,
    run: u128,
}

/// A `sluice run` process whose log lines are kept, each with the instant
/// it was read.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Process {
    fn start(pipeline: &Path) -> Process {
        let mut child = support::sluice_run(pipeline)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("running sluice");
        let log = Arc::new(Mutex::new(Vec::new()));
        let into = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                into.lock().unwrap().push((Instant::now(), line));
            }
        });
        Process { child, log }
    }

    /// When the first line after `since` containing every one of `parts`
    /// was read.
    fn line_after(&self, since: Instant, parts: &[&str]) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(at, line)| *at >= since && parts.iter().all(|p| line.contains(p)))
            .map(|(at, _)| *at)
    }

    fn text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn cpu(&self) -> f64 {
        support::cpu_seconds(&self.child.id().to_string(), false)
    }

    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// Stops it gracefully and waits.
    fn stop(mut self) -> String {
        self.signal("-TERM");
        let _ = self.child.wait();
        self.text()
    }
}

impl Bench {
    fn topic(&self, kind: &str) -> String {
        format!("bench-failover-{}-{kind}", self.run)
    }

    /// A pipeline file in a new folder `dir`, reading `topic` in `group`,
    /// with top-level keys `top` and tables `rest` after the source.
    fn pipeline(
        &self,
        dir: &Path,
        name: &str,
        (topic, group): (&str, &str),
        top: &str,
        rest: &str,
    ) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("pipeline.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nbatch_interval = \"100ms\"\ntasks = \"per-partition\"\n{top}\
                 state_dir = \"{}\"\n\n[[sources]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
                 topics = [\"{topic}\"]\ngroup = \"{group}\"\nstart = \"earliest\"\n\n{rest}",
                dir.join("state").display(),
                self.brokers
            ),
        )
        .unwrap();
        path
    }

    fn stages(&self, counter: &str) -> String {
        format!(
            "[[stages]]\nname = \"split\"\nplugin = '{}'\n\n[[stages]]\nname = \"count\"\nplugin = '{}'\n\n",
            self.guests.join("word_split.wasm").display(),
            self.guests.join(format!("{counter}.wasm")).display()
        )
    }

    /// One process against two on a 4-partition topic.
    fn scale(&self, lines: u64) {
        let topic = self.topic("scale");
        let loaded = Instant::now();
        support::kafka::load(&self.brokers, &topic, PARTITIONS, lines, WORDS_PER_LINE);
        println!(
            "loaded {lines} lines into {topic} in {:.1} s",
            loaded.elapsed().as_secs_f64()
        );
        let stages = format!("{}[[sinks]]\ntype = \"null\"\n", self.stages("word_count"));
        let mut results = Vec::new();
        for processes in [1usize, 2] {
            let group = format!("{topic}-g{processes}");
            let name = format!("failover-bench-{}-scale{processes}", self.run);
            let dirs: Vec<PathBuf> = (0..processes)
                .map(|i| std::env::temp_dir().join(format!("{name}-{i}")))
                .collect();
            let started = Instant::now();
            let procs: Vec<Process> = dirs
                .iter()
                .map(|dir| {
                    Process::start(&self.pipeline(dir, &name, (&topic, &group), "", &stages))
                })
                .collect();
            let first = wait_for(Duration::from_secs(60), "a first assignment", || {
                procs
                    .iter()
                    .filter_map(|p| p.line_after(started, &["partitions assigned:"]))
                    .min()
            });
            let done = wait_committed(&self.brokers, &group, &topic, lines, &procs);
            let cpu: f64 = procs.iter().map(Process::cpu).sum();
            let logs: Vec<String> = procs.into_iter().map(Process::stop).collect();
            let read: u64 = logs.iter().map(|l| records_in(l)).sum();
            for dir in &dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            let secs = done.duration_since(first).as_secs_f64();
            results.push((processes, secs, cpu, read));
        }
        println!(
            "kafka → word-split → word-count → null, {lines} lines of {WORDS_PER_LINE} words, \
             {PARTITIONS} partitions, tasks = \"per-partition\""
        );
        let one = lines as f64 / results[0].1;
        for (processes, secs, cpu, read) in &results {
            let rate = lines as f64 / secs;
            println!(
                "  {processes} process(es) {rate:>10.0} lines/s ({secs:.3} s), {:.2}× one process, \
                 CPU {:.2} µs/line, {:.2} cores busy, {read} lines read ({} read twice)",
                rate / one,
                cpu * 1e6 / lines as f64,
                cpu / secs,
                read.saturating_sub(lines)
            );
        }
    }

    /// Kills one of two processes while a feeder writes; times the
    /// survivor's takeover.
    fn failover(&self, rate: u64, rounds: u64, state_mb: u64, standby: bool) {
        let variant = if standby { "standby" } else { "alone" };
        let topic = self.topic(&format!("feed-{variant}"));
        let name = format!("failover-bench-{}-{variant}", self.run);
        create_topic(&self.brokers, &topic, PARTITIONS);
        // State beside the words' totals: keys no line makes, restored
        // with the rest.
        let changelog = format!("{name}-count-changelog");
        let loaded = Instant::now();
        load_state(&self.brokers, &changelog, PARTITIONS, state_mb * 10_000);
        println!(
            "failover: loaded {state_mb} MB of state into {changelog} in {:.1} s",
            loaded.elapsed().as_secs_f64()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = {
            let (brokers, topic, stop) = (self.brokers.clone(), topic.clone(), stop.clone());
            std::thread::spawn(move || feed(&brokers, &topic, rate, &stop))
        };
        let group = format!("{topic}-g");
        let dirs: Vec<PathBuf> = ["a", "b"]
            .iter()
            .map(|p| std::env::temp_dir().join(format!("{name}-{p}")))
            .collect();
        let pipeline = |dir: &Path| {
            let sink = format!(
                "[[sinks]]\ntype = \"directory\"\npath = \"{}\"\n",
                dir.join("out").display()
            );
            let standby = if standby {
                "standby_replicas = 1\n"
            } else {
                ""
            };
            self.pipeline(
                dir,
                &name,
                (&topic, &group),
                standby,
                &format!("{}{sink}", self.stages("running_count")),
            )
        };
        let files: Vec<PathBuf> = dirs.iter().map(|d| pipeline(d)).collect();
        println!(
            "failover{}: kafka → word-split → running-count ({state_mb} MB of state in its \
             changelog) → directory, {PARTITIONS} partitions fed {rate} lines/s, two processes, \
             one killed (SIGKILL), session.timeout.ms 6000 (the default)",
            if standby {
                " with standby_replicas = 1"
            } else {
                ""
            }
        );
        let mut alive = [
            Some(Process::start(&files[0])),
            Some(Process::start(&files[1])),
        ];
        for round in 0..rounds {
            let (victim, survivor) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
            // Both hold partitions and write.
            wait_for(
                Duration::from_secs(120),
                "both processes to hold tasks",
                || {
                    let a = owned(&dirs[0], &name).len();
                    let b = owned(&dirs[1], &name).len();
                    (a > 0 && b > 0 && a + b == PARTITIONS as usize).then_some(())
                },
            );
            std::thread::sleep(Duration::from_secs(3));
            let lost = owned(&dirs[victim], &name);
            let (killed, killed_wall) = (Instant::now(), std::time::SystemTime::now());
            let mut victim_process = alive[victim].take().unwrap();
            victim_process.signal("-KILL");
            let _ = victim_process.child.wait();
            let s = alive[survivor].as_ref().unwrap();
            let out = dirs[survivor].join("out");
            let mut first_output = Vec::new();
            for p in &lost {
                let task = format!("{name}.p{p}");
                let at = wait_for(Duration::from_secs(120), "the lost tasks' output", || {
                    newest_file_of(&out, &task)
                        .filter(|t| *t > killed_wall)
                        .map(|_| Instant::now())
                });
                first_output.push(at);
            }
            let assigned = s
                .line_after(killed, &["partitions assigned:"])
                .unwrap_or(killed);
            let started: Vec<Instant> = lost
                .iter()
                .filter_map(|p| s.line_after(killed, &[&format!("task {name}.p{p} started at")]))
                .collect();
            // Records the lost tasks restored (their restore lines).
            let restored: u64 = s
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|(at, _)| *at >= killed)
                .filter_map(|(_, l)| {
                    let (_, after) = l.split_once(": restored ")?;
                    after.split(' ').next()?.parse::<u64>().ok()
                })
                .sum();
            let secs = |t: Instant| t.duration_since(killed).as_secs_f64();
            println!(
                "  round {}: killed {} holding {lost:?}; survivor assigned them after {:.2} s, \
                 their tasks started after {:.2} s ({restored} records restored), first output after \
                 {:.2} s (last of them {:.2} s)",
                round + 1,
                ["A", "B"][victim],
                secs(assigned),
                started.iter().max().map_or(f64::NAN, |t| secs(*t)),
                first_output.iter().min().map_or(f64::NAN, |t| secs(*t)),
                first_output.iter().max().map_or(f64::NAN, |t| secs(*t)),
            );
            // The killed one comes back for the next round.
            alive[victim] = Some(Process::start(&files[victim]));
        }
        stop.store(true, Ordering::Release);
        let fed = feeder.join().unwrap();
        for p in alive.into_iter().flatten() {
            p.stop();
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        println!("  ({fed} lines fed)");
    }

    /// A restore of `megabytes` MB of state from a changelog into a new
    /// machine's empty state, against a plain read of the same records.
    fn restore(&self, megabytes: u64) {
        let input = self.topic("restore-in");
        let name = format!("failover-bench-{}-restore", self.run);
        let changelog = format!("{name}-count-changelog");
        create_topic(&self.brokers, &input, 1);
        let records = megabytes * 10_000;
        let loaded = Instant::now();
        let bytes = load_state(&self.brokers, &changelog, 1, records);
        println!(
            "restore: loaded {records} records ({:.1} MB of keys and values) into {changelog} in {:.1} s",
            bytes as f64 / 1e6,
            loaded.elapsed().as_secs_f64()
        );
        let dir = std::env::temp_dir().join(&name);
        let rest = format!(
            "{}[[sinks]]\ntype = \"null\"\n",
            self.stages("running_count")
        );
        let started = Instant::now();
        let group = format!("{name}-g");
        let process = Process::start(&self.pipeline(&dir, &name, (&input, &group), "", &rest));
        wait_for(Duration::from_secs(600), "the task to start", || {
            process.line_after(started, &[&format!("task {name}.p0 started at")])
        });
        let log = process.stop();
        let _ = std::fs::remove_dir_all(&dir);
        let line = log
            .lines()
            .find(|l| l.contains(": restored ") && l.contains(&changelog))
            .unwrap_or_else(|| panic!("no restore line:\n{log}"));
        println!(
            "  sluice (a task of a new process): {}",
            line.split(": restored ").nth(1).unwrap_or(line)
        );
        let progress = log
            .lines()
            .filter(|l| l.contains(": restoring `stage:count`"))
            .count();
        println!("  progress lines while restoring: {progress}");
        let read = Instant::now();
        let n = read_all(&self.brokers, &changelog);
        let secs = read.elapsed().as_secs_f64();
        println!(
            "  native Rust, read only (same client library, no state file): {n} records in {secs:.2} s \
             ({:.0} records/s, {:.1} MB/s)",
            n as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
}

/// Waits up to `limit` for `found` to give a value.
fn wait_for<T>(limit: Duration, what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = found() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `group`'s committed offsets on `topic` cover `lines`.
fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    lines: u64,
    procs: &[Process],
) -> Instant {
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let start = Instant::now();
    loop {
        let committed = support::kafka::committed_total(&watcher, topic, PARTITIONS);
        if committed as u64 >= lines {
            return Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not done after 600 s:\n{}",
            procs
                .iter()
                .map(Process::text)
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The records a process read, from its `finished:` line.
fn records_in(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let before = l.split(" records in").next()?;
            if before.len() == l.len() {
                return None;
            }
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The partitions whose tasks wrote to `dir/out` in the last second.
fn owned(dir: &Path, name: &str) -> Vec<i32> {
    let out = dir.join("out");
    (0..PARTITIONS)
        .filter(|p| {
            newest_file_of(&out, &format!("{name}.p{p}"))
                .is_some_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(1))
        })
        .collect()
}

/// When task `task` last wrote a file to `out` (`<task>-<time>-<id>.jsonl`).
fn newest_file_of(out: &Path, task: &str) -> Option<std::time::SystemTime> {
    let prefix = format!("{task}-");
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Writes generated lines to `topic` at `rate` per second, spread over its
/// partitions, until `stop`; returns how many.
fn feed(brokers: &str, topic: &str, rate: u64, stop: &AtomicBool) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let mut maker = LineMaker::new(7, WORDS_PER_LINE);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Acquire) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let line = maker.next_line().to_string();
            let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .payload(line.as_bytes())
                .partition((sent % PARTITIONS as u64) as i32);
            if producer.send(record).is_err() {
                break;
            }
            sent += 1;
        }
        producer.poll(Duration::from_millis(10));
    }
    let _ = producer.flush(Duration::from_secs(30));
    sent
}

/// Fills a new changelog topic of `partitions` with `records` records of
/// 100 bytes (a 20-byte key, an 80-byte value), spread evenly; returns
/// their bytes.
fn load_state(brokers: &str, topic: &str, partitions: i32, records: u64) -> u64 {
    create_topic(brokers, topic, partitions);
    let producer = bulk_producer(brokers);
    let value = [b'7'; 80];
    for i in 0..records {
        let key = format!("key-{i:016}");
        send(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(&value[..])
                .partition((i % partitions as u64) as i32),
        );
    }
    producer.flush(Duration::from_secs(300)).expect("loading");
    records * 100
}

/// Reads partition 0 of `topic` from its start to its end; returns the
/// records read.
fn read_all(brokers: &str, topic: &str) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-failover-native")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "20")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&at).unwrap();
    let mut n = 0u64;
    let mut bytes = 0usize;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    assert!(bytes > 0);
    n
}
