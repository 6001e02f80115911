//! Delivery over Kafka through crashes: state that stays exact through
//! SIGKILLs, and exactly-once Kafka → Kafka (transactions, the progress
//! marker, a deleted state file).

use std::collections::BTreeMap;
use std::fs::File;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

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
    while start.elapsed() < Duration::from_secs(90) {
        if committed_sums(&brokers, &counts) == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    terminate(&child);
    let _ = wait_deadline(&mut child, Duration::from_secs(30));
    let got = committed_sums(&brokers, &counts);
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
    let wait_for = |expected: &BTreeMap<String, u64>| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if committed_sums(&brokers, &counts) == *expected {
                return true;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        false
    };
    let s = Scratch::new();

    // Run 1: at least one checkpoint, so the marker ends at 1 or more.
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
    let mut child = s
        .sluice(&["run", "p.toml"])
        .env("SLUICE_CRASH_AT", "checkpointed:1")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let status = wait_deadline(&mut child, Duration::from_secs(90));
    let log_2 = read(&s.path("log-2"));
    assert!(
        !status.success() && log_2.contains("SLUICE_CRASH_AT: crashing"),
        "run 2 did not crash after checkpoint 1: {status}\n{log_2}"
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
    let got = committed_sums(&brokers, &counts);
    let off: Vec<String> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .map(|(w, n)| format!("{w}: {} of {n}", got.get(w).copied().unwrap_or(0)))
        .collect();
    assert!(
        done && got == expected,
        "committed counts differ from both inputs' counts: {off:?}\nrun 2:\n{log_2}\nrun 3:\n{log_3}"
    );
    assert!(
        log_2.contains("setting it back to 0"),
        "run 2 did not reset the marker:\n{log_2}"
    );
    assert!(
        log_3.contains("was not committed before the crash"),
        "run 3 did not write checkpoint 1 again:\n{log_3}"
    );
}

/// Per-batch word counts committed to `topic` (read_committed), summed per
/// word.
fn committed_sums(brokers: &str, topic: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for m in committed_messages(brokers, topic) {
        let count = m["value"].as_str().unwrap().parse::<u64>().unwrap();
        *sums
            .entry(m["key"].as_str().unwrap().to_string())
            .or_insert(0) += count;
    }
    sums
}

/// A source hears that a batch is safe only after the sinks wrote it and
/// its checkpoint is taken: crash a second after the first batch with
/// output was acknowledged (its offsets committed to the group by then),
/// restart, and every line is in the output. Were the offsets acknowledged
/// before the write, the crash would lose that batch for good.
#[test]
fn offsets_are_acknowledged_only_after_the_batch_is_written() {
    let brokers = shared_broker();
    let (lines, group) = (unique("lines"), unique("group"));
    create_topic(&brokers, &lines, 1);
    // More lines than one chunk holds (1,024), so the first batch is not
    // the whole topic.
    let text: String = (0..3000).map(|i| format!("line-{i}\n")).collect();
    produce(&brokers, &lines, &line_messages(&text, 1));
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"acked\"\nbatch_interval = \"100ms\"\nmax_batch_records = 100\n{}\n\
             [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"text\"\n",
            kafka_source(&brokers, &lines, &group, "")
        ),
    );
    let output = |s: &Scratch| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(s.path("out"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut crashed = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .env("SLUICE_CRASH_AT", "acknowledged:1")
        .stdout(Stdio::null())
        .stderr(File::create(s.path("log-1")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_deadline(&mut crashed, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the crash point was not reached: {}",
        read(&s.path("log-1"))
    );
    let after_crash = output(&s).len();
    assert!(
        after_crash > 0 && after_crash < 3000,
        "{after_crash} lines written before the crash"
    );
    let mut child = spawn_logged(&s, "p.toml", "log-2");
    let expected: Vec<String> = text.lines().map(str::to_string).collect();
    let start = Instant::now();
    while output(&s).len() < expected.len() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "lines lost: {} of {} in the output\n{}\n----\n{}",
            output(&s).len(),
            expected.len(),
            read(&s.path("log-1")),
            read(&s.path("log-2"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", read(&s.path("log-2")));
    assert_eq!(output(&s), expected.into_iter().collect());
}
