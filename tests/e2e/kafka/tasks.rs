//! `tasks = "per-partition"`: a task per assigned partition, each with its
//! own stage instances and state file; several processes of one pipeline
//! share the partitions, and one takes over when another is killed.
//!
//! Each process gets its own state folder (`state_dir`), as it would on a
//! machine of its own.

use std::process::Child;
use std::time::Duration;

use super::*;

/// A per-partition pipeline named `name`: `source` → word-split →
/// `counter` → `sink`, with its state in `state_dir`.
fn per_partition(name: &str, state_dir: &str, source: &str, counter: &str, sink: &str) -> String {
    split_and_count(
        name,
        &format!("tasks = \"per-partition\"\nstate_dir = \"{state_dir}\""),
        source,
        counter,
        sink,
    )
}

/// The lines of `text` that [`line_messages`] sends to `partition` of
/// `partitions`.
fn lines_of(text: &str, partition: u32, partitions: u32) -> String {
    text.lines()
        .enumerate()
        .filter(|(i, _)| *i as u32 % partitions == partition)
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}

/// Each word's highest running total in the files task `task` wrote to
/// `dir` (`<task>-<time>-<id>.jsonl`).
fn running_totals(dir: &Path, task: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return totals;
    };
    let prefix = format!("{task}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) || !name.ends_with(".jsonl") {
            continue;
        }
        for line in read(&entry.path()).lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let word = r["key"].as_str().unwrap().to_string();
            let n: u64 = r["value"].as_str().unwrap().parse().unwrap();
            let at = totals.entry(word).or_insert(0);
            *at = (*at).max(n);
        }
    }
    totals
}

/// How many tasks the last `tasks:` line of a process's log shows running.
fn running_tasks(log: &Path) -> usize {
    read(log)
        .lines()
        .rev()
        .find(|l| l.contains(": tasks: "))
        .map_or(0, |l| l.matches(") running").count())
}

/// The records a process read, from its last `finished:` line.
fn records_in(log: &str) -> u64 {
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
}

fn stop(child: &mut Child, log: &Path) {
    terminate(child);
    let status = wait_deadline(child, Duration::from_secs(60));
    assert!(status.success(), "sluice failed:\n{}", read(log));
}

#[test]
fn a_task_per_partition_keeps_each_partitions_running_totals_across_a_restart() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 4);
    let s = Scratch::new();
    // A name of its own: its changelog topics are the broker's for good.
    let name = unique("wc");
    s.write(
        "p.toml",
        &per_partition(
            &name,
            "state",
            &kafka_source(&brokers, &lines, &unique("group"), ""),
            "running_count",
            "[[sinks]]\ntype = \"directory\"\npath = \"out\"\n",
        ),
    );
    // Every partition holds every word: one chain of stages would count
    // each word over all four, a task per partition counts its own.
    let first = sample_text(1200, 71);
    produce(&brokers, &lines, &line_messages(&first, 4));
    let out = s.path("out");
    let wait_exact = |texts: &[&str], logs: &[PathBuf]| wait_totals(&out, &name, texts, 4, logs);
    let mut child = spawn_logged(&s, "p.toml", "log-1");
    wait_exact(&[&first], &[s.path("log-1")]);
    stop(&mut child, &s.path("log-1"));
    let log = read(&s.path("log-1"));
    for p in 0..4 {
        assert!(log.contains(&format!("task {name}.p{p} started")), "{log}");
        assert!(s.path(&format!("state/{name}.p{p}.redb")).exists(), "{log}");
    }
    assert!(log.contains("1200 records in"), "{log}");

    // A restart carries on from each task's checkpoint and state.
    let second = sample_text(400, 72);
    produce(&brokers, &lines, &line_messages(&second, 4));
    let mut child = spawn_logged(&s, "p.toml", "log-2");
    wait_exact(&[&first, &second], &[s.path("log-2")]);
    stop(&mut child, &s.path("log-2"));
    let log = read(&s.path("log-2"));
    assert!(log.contains("400 records in"), "{log}");
    assert!(log.contains("(its checkpoint)"), "{log}");
}

/// Word count (per-batch counts) from `lines` to `counts`, a task per
/// partition, state in `state_dir`.
fn shared_wordcount(
    brokers: &str,
    lines: &str,
    group: &str,
    counts: &str,
    state_dir: &str,
) -> String {
    per_partition(
        "wc",
        state_dir,
        &kafka_source(
            brokers,
            lines,
            group,
            "options = { \"fetch.wait.max.ms\" = 50 }\n",
        ),
        "word_count",
        &format!("[[sinks]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{counts}\"\n"),
    )
}

/// Makes a topic of 4 partitions for lines and one for counts, starts a
/// reader of the counts, then A and B, processes of one pipeline on them,
/// and waits until they hold 2 tasks each. Returns the lines' topic.
fn two_processes(s: &Scratch, brokers: &str) -> (String, Reader, Child, Child) {
    let (lines, counts) = (unique("lines"), unique("counts"));
    create_topic(brokers, &lines, 4);
    create_topic(brokers, &counts, 1);
    let reader = Reader::start(brokers, &counts);
    let (lines, counts) = (lines.as_str(), counts.as_str());
    let group = unique("group");
    s.write(
        "a.toml",
        &shared_wordcount(brokers, lines, &group, counts, "state-a"),
    );
    s.write(
        "b.toml",
        &shared_wordcount(brokers, lines, &group, counts, "state-b"),
    );
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));
    let a = spawn_logged(s, "a.toml", "log-a");
    eventually(Duration::from_secs(60), "A to run 4 tasks", || {
        running_tasks(&log_a) == 4
    });
    let b = spawn_logged(s, "b.toml", "log-b");
    let start = std::time::Instant::now();
    while !(running_tasks(&log_a) == 2 && running_tasks(&log_b) == 2) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the tasks were not split 2 + 2:\n{}\n----\n{}",
            read(&log_a),
            read(&log_b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (lines.to_string(), reader, a, b)
}

#[test]
fn two_processes_split_the_partitions_and_count_every_line_once() {
    let brokers = shared_broker();
    let s = Scratch::new();
    let (lines, reader, mut a, mut b) = two_processes(&s, &brokers);
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));

    let text = sample_text(2000, 81);
    produce(&brokers, &lines, &line_messages(&text, 4));
    let expected = count_words(&text);
    wait_counted(&reader, &expected, &[log_a.clone(), log_b.clone()]);
    // Let a late duplicate show, if there were one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reader.totals(), expected, "counts differ");

    stop(&mut a, &log_a);
    stop(&mut b, &log_b);
    let (in_a, in_b) = (records_in(&read(&log_a)), records_in(&read(&log_b)));
    // Each read its two partitions' 500 lines; none was read twice.
    assert_eq!((in_a, in_b), (1000, 1000), "A read {in_a}, B read {in_b}");
    for (dir, log) in [("state-a", &log_a), ("state-b", &log_b)] {
        let files = std::fs::read_dir(s.path(dir)).unwrap().count();
        assert!(files >= 2, "{dir} has {files} state files:\n{}", read(log));
    }
}

#[test]
fn sigkill_of_one_process_and_the_other_takes_over_its_partitions_losing_nothing() {
    let brokers = shared_broker();
    let s = Scratch::new();
    let (lines, reader, mut a, mut b) = two_processes(&s, &brokers);
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));

    // Part one is counted in full, so its offsets are committed.
    let first = sample_text(800, 91);
    produce(&brokers, &lines, &line_messages(&first, 4));
    wait_counted(
        &reader,
        &count_words(&first),
        &[log_a.clone(), log_b.clone()],
    );
    std::thread::sleep(Duration::from_secs(1));

    // Part two streams in; A is killed while it does.
    let chunks: Vec<String> = (0..10).map(|i| sample_text(100, 200 + i)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&brokers, &lines, &line_messages(chunk, 4));
        if i == 3 {
            a.kill().unwrap();
            a.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let second = chunks.concat();
    eventually(Duration::from_secs(90), "B to take over A's tasks", || {
        running_tasks(&log_b) == 4
    });
    let expected = sum_counts(&count_words(&first), &count_words(&second));
    wait_counted(&reader, &expected, &[log_a.clone(), log_b.clone()]);
    std::thread::sleep(Duration::from_secs(2));
    let totals = reader.totals();
    // At-least-once: what A had read but not committed when it was killed
    // is counted again by B; never part one, and nothing is missing.
    let extra = words(&totals) - words(&expected);
    assert!(
        extra <= words(&count_words(&second)),
        "{extra} words counted twice: more than the uncommitted part"
    );
    for (word, n) in &expected {
        assert!(
            totals.get(word).copied().unwrap_or(0) >= *n,
            "`{word}` lost"
        );
    }
    eprintln!("after SIGKILL of one of two processes: {extra} words counted twice");
    stop(&mut b, &log_b);
    let log = read(&log_b);
    assert!(log.contains("partitions assigned"), "{log}");
}

/// Waits until each of the `partitions` tasks of pipeline `name` has
/// written, to `out`, running totals equal to the words of its partition's
/// lines of `texts`.
fn wait_totals(out: &Path, name: &str, texts: &[&str], partitions: u32, logs: &[PathBuf]) {
    let all = texts.concat();
    let want: Vec<BTreeMap<String, u64>> = (0..partitions)
        .map(|p| count_words(&lines_of(&all, p, partitions)))
        .collect();
    let start = std::time::Instant::now();
    loop {
        let got: Vec<_> = (0..partitions)
            .map(|p| running_totals(out, &format!("{name}.p{p}")))
            .collect();
        if got == want {
            return;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
            panic!(
                "per-partition totals differ after 90 s\nexpected {want:?}\ngot {got:?}\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `a.toml` and `b.toml` into `s`: the [`per_partition`] pipeline
/// `name` reading `lines` in `group`, counting with `counter`, writing to
/// the folder `out`, its state in `state-a` or `state-b` (each process on
/// a machine of its own), each file changed by `edit`.
fn two_files(
    s: &Scratch,
    brokers: &str,
    (lines, group): (&str, &str),
    name: &str,
    counter: &str,
    edit: impl Fn(String) -> String,
) {
    for (file, state) in [("a.toml", "state-a"), ("b.toml", "state-b")] {
        let pipeline = per_partition(
            name,
            state,
            &kafka_source(brokers, lines, group, ""),
            counter,
            "[[sinks]]\ntype = \"directory\"\npath = \"out\"\n",
        );
        s.write(file, &edit(pipeline));
    }
}

#[test]
fn state_moves_with_its_partition_through_the_changelog() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 2);
    let s = Scratch::new();
    let (name, group) = (unique("wc"), unique("group"));
    two_files(
        &s,
        &brokers,
        (&lines, &group),
        &name,
        "running_count",
        |p| p,
    );
    let out = s.path("out");
    let texts: Vec<String> = (0..3).map(|i| sample_text(300, 150 + i)).collect();

    // A counts the first part; its writes go to the changelog too.
    produce(&brokers, &lines, &line_messages(&texts[0], 2));
    let mut a = spawn_logged(&s, "a.toml", "log-a1");
    wait_totals(&out, &name, &[&texts[0]], 2, &[s.path("log-a1")]);
    stop(&mut a, &s.path("log-a1"));
    let log = read(&s.path("log-a1"));
    assert!(
        log.contains(&format!(
            "created changelog topic {name}-count-changelog (2 partitions, compacted)"
        )),
        "{log}"
    );

    // B, on a machine of its own (no local state), goes on from there: its
    // totals include the first part, so its state came from the changelog.
    produce(&brokers, &lines, &line_messages(&texts[1], 2));
    let mut b = spawn_logged(&s, "b.toml", "log-b");
    wait_totals(&out, &name, &[&texts[0], &texts[1]], 2, &[s.path("log-b")]);
    stop(&mut b, &s.path("log-b"));
    let log = read(&s.path("log-b"));
    for p in 0..2 {
        assert!(
            log.contains(&format!("task {name}.p{p}: restored "))
                && log.contains("(from its start: no local state)"),
            "{log}"
        );
    }

    // A again: its local state is a part behind; it restores only the
    // changelog's tail after it, and the totals stay exact.
    produce(&brokers, &lines, &line_messages(&texts[2], 2));
    let mut a = spawn_logged(&s, "a.toml", "log-a2");
    let parts: Vec<&str> = texts.iter().map(String::as_str).collect();
    wait_totals(&out, &name, &parts, 2, &[s.path("log-a2")]);
    stop(&mut a, &s.path("log-a2"));
    let log = read(&s.path("log-a2"));
    assert!(log.contains("(the tail after the local state)"), "{log}");
    assert!(!log.contains("its state lacks offsets"), "{log}");
}

/// Every word's count summed over all the windows that files in `dir`
/// hold (word-count's output, one record per word and window).
fn window_sums(dir: &Path) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for line in read(&entry.path()).lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let n: u64 = r["value"].as_str().unwrap().parse().unwrap();
            *sums
                .entry(r["key"].as_str().unwrap().to_string())
                .or_insert(0) += n;
        }
    }
    sums
}

#[test]
fn a_windows_records_move_with_its_partition_in_a_rebalance() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 2);
    let s = Scratch::new();
    let (name, group) = (unique("win"), unique("group"));
    // word-count called once per 40 s window with all of its records: a
    // window's count is the sum of its records, so windows that lose or
    // repeat records across the handover show in the sums.
    let count = format!("plugin = '{}'\n", plugin("word_count").display());
    two_files(&s, &brokers, (&lines, &group), &name, "word_count", |p| {
        let windowed = p.replace(
            &count,
            &format!("{count}window = {{ length = \"40s\", slide = \"40s\" }}\n"),
        );
        assert!(windowed.contains("window ="), "{windowed}");
        windowed
    });
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));
    let logs = [log_a.clone(), log_b.clone()];
    let text = sample_text(400, 301);
    produce(&brokers, &lines, &line_messages(&text, 2));

    // A reads everything; its windows hold it (none has ended yet).
    let mut a = spawn_logged(&s, "a.toml", "log-a");
    waiting(
        Duration::from_secs(60),
        "A to read both partitions",
        &logs,
        || {
            read(&log_a)
                .lines()
                .rev()
                .find(|l| l.contains(": tasks: "))
                .is_some_and(|l| l.matches(") running lag 0").count() == 2)
        },
    );
    assert!(
        window_sums(&s.path("out")).is_empty(),
        "a window ended before the handover: the test shows nothing\n{}",
        read(&log_a)
    );

    // B joins: one partition moves to it, and that task's window records
    // come from the changelog (B has no local state).
    let mut b = spawn_logged(&s, "b.toml", "log-b");
    waiting(
        Duration::from_secs(90),
        "the partitions to spread",
        &logs,
        || running_tasks(&log_a) == 1 && running_tasks(&log_b) == 1,
    );
    let log = read(&log_b);
    assert!(
        log.lines()
            .any(|l| l.contains(": restored ") && l.contains("of `window:count` from")),
        "B restored no window records:\n{log}"
    );

    // Both windows end: together they hold every word exactly once.
    let expected = count_words(&text);
    waiting(
        Duration::from_secs(120),
        "both windows to end",
        &logs,
        || window_sums(&s.path("out")) == expected,
    );
    stop(&mut a, &log_a);
    stop(&mut b, &log_b);
    assert_eq!(
        window_sums(&s.path("out")),
        expected,
        "records lost or repeated"
    );
}

#[test]
fn a_standby_keeps_a_warm_copy_so_a_failover_restores_only_the_tail() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 2);
    let s = Scratch::new();
    let (name, group) = (unique("wc"), unique("group"));
    two_files(
        &s,
        &brokers,
        (&lines, &group),
        &name,
        "running_count",
        |p| p.replacen("tasks = ", "standby_replicas = 1\ntasks = ", 1),
    );
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));
    let logs = [log_a.clone(), log_b.clone()];
    let out = s.path("out");
    let texts: Vec<String> = (0..2).map(|i| sample_text(300, 400 + i)).collect();

    // A and B share the two partitions; each follows the other's.
    let mut a = spawn_logged(&s, "a.toml", "log-a");
    waiting(
        Duration::from_secs(60),
        "A to run both tasks",
        &logs,
        || running_tasks(&log_a) == 2,
    );
    // B with its metrics on.
    let mut b = s
        .sluice(&["run", "b.toml", "--metrics", "127.0.0.1:0"])
        .env("SLUICE_RUNTIME_DIR", s.path("runtime"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_b).unwrap())
        .spawn()
        .unwrap();
    waiting(
        Duration::from_secs(90),
        "the partitions to spread",
        &logs,
        || running_tasks(&log_a) == 1 && running_tasks(&log_b) == 1,
    );
    produce(&brokers, &lines, &line_messages(&texts[0], 2));
    wait_totals(&out, &name, &[&texts[0]], 2, &logs);
    let standby_of = |log: &Path| -> Option<u32> {
        let line = read(log)
            .lines()
            .rev()
            .find(|l| l.contains(": tasks: "))?
            .to_string();
        (0..2).find(|p| line.contains(&format!("{name}.p{p} ({lines}[{p}]) standby")))
    };
    waiting(
        Duration::from_secs(30),
        "a standby in each process",
        &logs,
        || standby_of(&log_a).is_some() && standby_of(&log_b).is_some(),
    );
    // A's task, which B follows; a moment for B's standby to apply it.
    let moved = standby_of(&log_b).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // B's metrics show the standby and what it applied.
    let address = read(&log_b)
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("B's log names its metrics address")
        .to_string();
    let metrics = crate::observe::http::get(&address, "/metrics", None).text();
    let samples = crate::observe::parse_metrics(&metrics);
    let task = format!("{name}.p{moved}");
    let standby = [("task", task.as_str()), ("phase", "standby")];
    assert_eq!(
        crate::observe::value(&samples, "sluice_task_phase", &standby),
        1.0,
        "{metrics}"
    );
    let applied =
        crate::observe::value(&samples, "sluice_task_restored_records", &[("task", &task)]);
    assert!(applied > 0.0, "the standby applied nothing:\n{metrics}");

    // A dies; B takes its partition over from the warm copy.
    a.kill().unwrap();
    a.wait().unwrap();
    waiting(Duration::from_secs(90), "B to take over", &logs, || {
        running_tasks(&log_b) == 2
    });
    let log = read(&log_b);
    let restored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("task {name}.p{moved}: restored ")))
        .collect();
    assert!(
        restored.len() == 1 && restored[0].contains("(the tail after the local state)"),
        "B restored {name}.p{moved} from scratch, not from its standby:\n{log}"
    );
    produce(&brokers, &lines, &line_messages(&texts[1], 2));
    wait_totals(&out, &name, &[&texts[0], &texts[1]], 2, &logs);
    stop(&mut b, &log_b);
}

#[test]
fn a_changelog_topic_with_another_partition_count_is_refused_by_name() {
    let brokers = shared_broker();
    let lines = unique("lines");
    create_topic(&brokers, &lines, 2);
    let name = unique("wc");
    create_topic(&brokers, &format!("{name}-count-changelog"), 3);
    let s = Scratch::new();
    s.write(
        "p.toml",
        &per_partition(
            &name,
            "state",
            &kafka_source(&brokers, &lines, &unique("group"), ""),
            "running_count",
            "[[sinks]]\ntype = \"null\"\n",
        ),
    );
    produce(&brokers, &lines, &line_messages("a b c\n", 2));
    let mut child = spawn_logged(&s, "p.toml", "log");
    let status = wait_deadline(&mut child, Duration::from_secs(90));
    let log = read(&s.path("log"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "changelog topic `{name}-count-changelog` has 3 partitions but the input topic `{lines}` has 2"
        )),
        "{log}"
    );
}

/// Each word's highest running total in `messages` (running-count's
/// output: key = the word, value = its total).
fn highest_totals(messages: &[Value]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for m in messages {
        let word = m["key"].as_str().unwrap().to_string();
        let n: u64 = m["value"].as_str().unwrap().parse().unwrap();
        let at = totals.entry(word).or_insert(0);
        *at = (*at).max(n);
    }
    totals
}

/// Waits until the processes logging to `logs` run `total` tasks between
/// them, each at least one.
fn wait_spread(logs: &[PathBuf], total: usize) {
    let what = format!("{total} tasks over {} processes", logs.len());
    waiting(Duration::from_secs(90), &what, logs, || {
        let running = tasks_running(logs);
        running.iter().sum::<usize>() == total && running.iter().all(|n| *n > 0)
    });
}

/// How many tasks, of every process, the logs show running.
fn tasks_running(logs: &[PathBuf]) -> Vec<usize> {
    logs.iter().map(|l| running_tasks(l)).collect()
}

#[test]
fn partition_by_word_makes_running_totals_global_across_three_processes() {
    let brokers = shared_broker();
    let (lines, counts) = (unique("lines"), unique("counts"));
    create_topic(&brokers, &lines, 6);
    create_topic(&brokers, &counts, 1);
    let reader = Reader::start(&brokers, &counts);
    let s = Scratch::new();
    let (name, group) = (unique("wc"), unique("group"));
    let source = kafka_source(
        &brokers,
        &lines,
        &group,
        "options = { \"fetch.wait.max.ms\" = 50 }\n",
    );
    let sink =
        format!("[[sinks]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{counts}\"\n");
    let processes = ["a", "b", "c"];
    for p in processes {
        let file = per_partition(
            &name,
            &format!("state-{p}"),
            &source,
            "running_count",
            &sink,
        )
        .replace(
            "name = \"count\"\n",
            "name = \"count\"\npartition_by = \"value\"\n",
        );
        s.write(&format!("{p}.toml"), &file);
    }
    let logs: Vec<PathBuf> = processes
        .iter()
        .map(|p| s.path(&format!("log-{p}")))
        .collect();
    let mut children: Vec<Child> = processes
        .iter()
        .map(|p| spawn_logged(&s, &format!("{p}.toml"), &format!("log-{p}")))
        .collect();
    // Two parts (split; count and after) of 6 tasks each, over 3 processes.
    wait_spread(&logs, 12);

    // Every word is on every partition of the input: only repartitioning
    // by word brings each word's records to one counting task.
    let first = sample_text(1500, 301);
    produce(&brokers, &lines, &line_messages(&first, 6));
    wait_exactly(&count_words(&first), &logs, highest(&reader));
    let all_logs = logs
        .iter()
        .map(|l| read(l))
        .collect::<Vec<_>>()
        .join("\n----\n");
    assert!(
        all_logs.contains(&format!(
            "parts [{lines} → stages [\"split\"]; {name}-count-repartition → stages [\"count\"]]"
        )),
        "{all_logs}"
    );
    assert!(
        all_logs.contains(&format!(
            "created repartition topic {name}-count-repartition (6 partitions"
        )),
        "{all_logs}"
    );

    // C stops: its tasks, and the counting tasks' state, move to A and B.
    stop(&mut children[2], &logs[2]);
    // Its "records in" are lines it read from the input, not also the
    // words it read back from the repartition topic.
    let read_by_c = records_in(&read(&logs[2]));
    assert!(
        read_by_c > 0 && read_by_c <= 1500,
        "C counts {read_by_c} records in for at most 1500 lines:\n{}",
        read(&logs[2])
    );
    let second = sample_text(900, 302);
    produce(&brokers, &lines, &line_messages(&second, 6));
    let both = format!("{first}{second}");
    wait_exactly(&count_words(&both), &logs[..2], highest(&reader));
    assert_eq!(tasks_running(&logs[..2]).iter().sum::<usize>(), 12);
    // No word was counted twice: no total ever passed its true count.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(highest_totals(&reader.messages()), count_words(&both));

    // B is killed mid-stream; A takes over and nothing is lost
    // (at-least-once: what B had not committed may count twice).
    let chunks: Vec<String> = (0..8).map(|i| sample_text(100, 310 + i)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&brokers, &lines, &line_messages(chunk, 6));
        if i == 3 {
            children[1].kill().unwrap();
            children[1].wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let all = format!("{both}{}", chunks.concat());
    let expected = count_words(&all);
    eventually(Duration::from_secs(90), "A to run all 12 tasks", || {
        running_tasks(&logs[0]) == 12
    });
    let start = std::time::Instant::now();
    loop {
        let got = highest_totals(&reader.messages());
        if expected
            .iter()
            .all(|(w, n)| got.get(w).copied().unwrap_or(0) >= *n)
        {
            let extra: u64 = expected.iter().map(|(w, n)| got[w] - n).sum();
            eprintln!("after SIGKILL of one of two processes: {extra} words counted twice");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "words lost after the SIGKILL:\n{}",
            read(&logs[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(&mut children[0], &logs[0]);
    let log = read(&logs[0]);
    assert!(log.contains(&format!("task {name}.count.p")), "{log}");
}

/// Waits up to `limit` for `cond`, failing with `what` and the logs.
fn waiting(limit: Duration, what: &str, logs: &[PathBuf], mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            let logs: Vec<String> = logs.iter().map(|l| read(l)).collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits until `current` (word → total, read again each time) is
/// `expected`, asserting on the way that no word ever goes past it.
fn wait_exactly(
    expected: &BTreeMap<String, u64>,
    logs: &[PathBuf],
    mut current: impl FnMut() -> BTreeMap<String, u64>,
) {
    let start = std::time::Instant::now();
    loop {
        let got = current();
        let over: Vec<String> = got
            .iter()
            .filter(|(w, n)| **n > expected.get(*w).copied().unwrap_or(0))
            .map(|(w, n)| format!("{w}: {n} > {:?}", expected.get(w)))
            .collect();
        let logs_now = || {
            logs.iter()
                .map(|l| read(l))
                .collect::<Vec<_>>()
                .join("\n----\n")
        };
        assert!(
            over.is_empty(),
            "totals past the true count: {over:?}\n{}",
            logs_now()
        );
        if &got == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "totals incomplete after 120 s: {got:?}\n{}",
            logs_now()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Each word's highest running total that `reader` has seen.
fn highest(reader: &Reader) -> impl FnMut() -> BTreeMap<String, u64> + '_ {
    || highest_totals(&reader.messages())
}

/// The per-batch counts committed to `counts`, added up per word.
fn committed_counts<'a>(
    brokers: &'a str,
    counts: &'a str,
) -> impl FnMut() -> BTreeMap<String, u64> + 'a {
    move || totals(&committed_messages(brokers, counts))
}

/// The pipeline files `a.toml` and `b.toml` (state in `state-a`,
/// `state-b`): `lines` → split → `counter` → Kafka `counts`, a task per
/// partition, exactly-once.
fn exactly_once_files(s: &Scratch, brokers: &str, lines: &str, counts: &str, counter: &str) {
    let (name, group) = (unique("wc"), unique("group"));
    let source = kafka_source(
        brokers,
        lines,
        &group,
        "options = { \"fetch.wait.max.ms\" = 50 }\n",
    );
    let sink =
        format!("[[sinks]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{counts}\"\n");
    for p in ["a", "b"] {
        let file = split_and_count(
            &name,
            &format!(
                "tasks = \"per-partition\"\ndelivery = \"exactly-once\"\nstate_dir = \"state-{p}\""
            ),
            &source,
            counter,
            &sink,
        );
        s.write(&format!("{p}.toml"), &file);
    }
}

/// Topics `lines` (of `partitions`) and `counts` (of one) on the shared
/// broker, and the files of [`exactly_once_files`] in a new scratch folder.
struct ExactlyOnce {
    brokers: String,
    lines: String,
    counts: String,
    s: Scratch,
    logs: [PathBuf; 2],
}

impl ExactlyOnce {
    fn new(partitions: u32, counter: &str) -> ExactlyOnce {
        let brokers = shared_broker();
        let (lines, counts) = (unique("lines"), unique("counts"));
        create_topic(&brokers, &lines, partitions);
        create_topic(&brokers, &counts, 1);
        let s = Scratch::new();
        exactly_once_files(&s, &brokers, &lines, &counts, counter);
        let logs = [s.path("log-a"), s.path("log-b")];
        ExactlyOnce {
            brokers,
            lines,
            counts,
            s,
            logs,
        }
    }
}

#[test]
fn exactly_once_tasks_commit_every_batch_once_through_a_crash() {
    // Per-batch counts: the committed ones add up to the input's exactly
    // only if no batch's output commits twice and none is lost.
    let ExactlyOnce {
        brokers,
        lines,
        counts,
        s,
        logs,
    } = ExactlyOnce::new(4, "word_count");
    let mut a = spawn_logged(&s, "a.toml", "log-a");
    let mut b = spawn_logged(&s, "b.toml", "log-b");
    wait_spread(&logs, 4);
    let first = sample_text(800, 401);
    produce(&brokers, &lines, &line_messages(&first, 4));
    wait_exactly(
        &count_words(&first),
        &logs,
        committed_counts(&brokers, &counts),
    );

    // B is killed mid-stream, transactions open; A takes over, fencing
    // B's producers (the broker aborts what they left open) and starting
    // from the offsets B's last committed transactions carry.
    let chunks: Vec<String> = (0..8).map(|i| sample_text(100, 410 + i)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&brokers, &lines, &line_messages(chunk, 4));
        if i == 3 {
            b.kill().unwrap();
            b.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let second = format!("{first}{}", chunks.concat());
    wait_exactly(
        &count_words(&second),
        &logs,
        committed_counts(&brokers, &counts),
    );
    let log = read(&logs[0]);
    assert!(
        log.contains("(the group's committed offset, where its last transaction ended)"),
        "{log}"
    );

    // B again, with the state files it had when killed: not trusted (they
    // may be a batch ahead of what committed), so rebuilt.
    let mut b = spawn_logged(&s, "b.toml", "log-b2");
    let logs = [logs[0].clone(), s.path("log-b2")];
    waiting(
        Duration::from_secs(90),
        "B to run tasks again",
        &logs,
        || running_tasks(&logs[1]) > 0,
    );
    let third = sample_text(400, 420);
    produce(&brokers, &lines, &line_messages(&third, 4));
    wait_exactly(
        &count_words(&format!("{second}{third}")),
        &logs,
        committed_counts(&brokers, &counts),
    );
    stop(&mut b, &logs[1]);
    stop(&mut a, &logs[0]);
    let log = read(&logs[1]);
    assert!(log.contains("not using its local state file"), "{log}");
}

#[test]
fn a_fenced_zombie_stops_writing_and_says_so() {
    let ExactlyOnce {
        brokers,
        lines,
        counts,
        s,
        logs,
    } = ExactlyOnce::new(2, "word_count");
    // A stalls inside its first batch with output, after the batch's
    // checkpoint and before its transaction commits.
    let mut a = s
        .sluice(&["run", "a.toml"])
        .env("SLUICE_PAUSE_AT", "checkpointed:1")
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&logs[0]).unwrap())
        .spawn()
        .unwrap();
    waiting(Duration::from_secs(90), "A to run 2 tasks", &logs, || {
        running_tasks(&logs[0]) == 2
    });
    let mut b = spawn_logged(&s, "b.toml", "log-b");
    waiting(Duration::from_secs(90), "1 task each", &logs, || {
        tasks_running(&logs) == [1, 1]
    });
    // A is frozen mid-batch, long enough for the group to give its
    // partition to B, then thawed: B's task fenced A's producer, so A
    // cannot commit; it says so and goes on without the task.
    let text = sample_text(400, 441);
    produce(&brokers, &lines, &line_messages(&text, 2));
    waiting(
        Duration::from_secs(60),
        "A to pause mid-batch",
        &logs,
        || read(&logs[0]).contains("SLUICE_PAUSE_AT: pausing"),
    );
    signal(&a, "STOP");
    waiting(
        Duration::from_secs(90),
        "B to take over A's task",
        &logs,
        || running_tasks(&logs[1]) == 2,
    );
    signal(&a, "CONT");
    waiting(
        Duration::from_secs(60),
        "A to find it was fenced",
        &logs,
        || {
            read(&logs[0]).contains(
                "fenced: another process has started this task (transactional id `sluice-",
            )
        },
    );
    // Nothing is lost: every word is in the committed output.
    let expected = count_words(&text);
    waiting(
        Duration::from_secs(90),
        "every word committed",
        &logs,
        || {
            let got = totals(&committed_messages(&brokers, &counts));
            expected
                .iter()
                .all(|(w, n)| got.get(w).copied().unwrap_or(0) >= *n)
        },
    );
    let got = totals(&committed_messages(&brokers, &counts));
    eprintln!(
        "fenced zombie: committed {} words of {} (see the README on the test broker's \
         transactions)",
        words(&got),
        words(&expected)
    );
    stop(&mut b, &logs[1]);
    stop(&mut a, &logs[0]);
}

/// `text` with each word of line `i` suffixed `.p<i % partitions>`: every
/// word then lives in the one partition [`line_messages`] sends its line
/// to, so a task's running totals are the word's whole count.
fn words_of_their_partition(text: &str, partitions: usize) -> String {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| format!("{w}.p{}", i % partitions))
                .collect();
            format!("{}\n", words.join(" "))
        })
        .collect()
}

#[test]
fn exactly_once_state_moves_in_transactions() {
    let ExactlyOnce {
        brokers,
        lines,
        counts,
        s,
        logs,
    } = ExactlyOnce::new(4, "running_count");
    // Each word's highest running total committed (read from the raw log:
    // the test broker's `read_committed` is not to be trusted).
    let committed_highest = || highest_totals(&committed_messages(&brokers, &counts));
    let mut a = spawn_logged(&s, "a.toml", "log-a");
    let mut b = spawn_logged(&s, "b.toml", "log-b");
    wait_spread(&logs, 4);
    let first = words_of_their_partition(&sample_text(800, 431), 4);
    produce(&brokers, &lines, &line_messages(&first, 4));
    wait_exactly(&count_words(&first), &logs, committed_highest);

    // B stops: its tasks move to A, which restores their state from the
    // changelog records B's transactions committed.
    stop(&mut b, &logs[1]);
    // Every task of B committed its last batch: each state file is marked
    // as matching what Kafka holds.
    let files: Vec<String> = std::fs::read_dir(s.path("state-b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let redb: Vec<&String> = files.iter().filter(|f| f.ends_with(".redb")).collect();
    assert!(!redb.is_empty(), "{files:?}");
    for file in redb {
        assert!(
            files.contains(&format!("{file}.clean")),
            "{file} unmarked: {files:?}"
        );
    }
    let more = words_of_their_partition(&sample_text(500, 432), 4);
    produce(&brokers, &lines, &line_messages(&more, 4));
    let second = format!("{first}{more}");
    wait_exactly(&count_words(&second), &logs, committed_highest);
    let log = read(&logs[0]);
    assert!(log.contains("(from its start: no local state)"), "{log}");

    // B again: it stopped cleanly, so the state files of the tasks it gets
    // back are kept (and only the changelog's tail since is restored).
    let mut b = spawn_logged(&s, "b.toml", "log-b2");
    let logs = [logs[0].clone(), s.path("log-b2")];
    waiting(
        Duration::from_secs(90),
        "B to run tasks again",
        &logs,
        || running_tasks(&logs[1]) > 0,
    );
    let more = words_of_their_partition(&sample_text(300, 433), 4);
    produce(&brokers, &lines, &line_messages(&more, 4));
    let third = format!("{second}{more}");
    wait_exactly(&count_words(&third), &logs, committed_highest);
    stop(&mut b, &logs[1]);
    stop(&mut a, &logs[0]);
    let log = read(&logs[1]);
    assert!(!log.contains("not using its local state file"), "{log}");
}
