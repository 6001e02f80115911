//! The ZeroMQ source with a pyzmq peer: PULL bound by Sluice, SUB connected
//! to a publisher that is not there yet, multipart messages with the first
//! frame as key, a malformed message dead-lettered, and the write-ahead log
//! across a crash.

use super::*;

fn pipeline(source: &str, rest: &str) -> String {
    pipeline_with("batch_interval = \"200ms\"", source, rest)
}

/// A pipeline with `top` (its interval and more) before the tables.
fn pipeline_with(top: &str, source: &str, rest: &str) -> String {
    format!(
        r#"
name = "zmq"
{top}

[[sources]]
type = "zeromq"
{source}
{rest}"#
    )
}

fn wordcount_stages() -> String {
    format!(
        r#"
[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'
"#,
        plugin("word_split").display(),
        plugin("word_count").display()
    )
}

/// Messages of one frame each, as the client reads them.
fn one_frame_each(lines: &str) -> String {
    lines
        .lines()
        .map(|l| format!("{}\n", serde_json::to_string(&[l]).unwrap()))
        .collect()
}

#[test]
fn zeromq_pull_wordcount_matches_an_independent_count() {
    let s = Scratch::new();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    s.write(
        "p.toml",
        &pipeline(
            &format!("endpoint = \"{endpoint}\"\nsocket = \"pull\"\nbind = true"),
            &format!(
                "{}\n[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n",
                wordcount_stages()
            ),
        ),
    );
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    wait_log(&s.path("log"), "listening", Duration::from_secs(30));
    let text = sample_text(3000, 51);
    client_run(&["zmq-send", &endpoint, "push"], &one_frame_each(&text));
    let expected = count_words(&text);
    wait_totals(
        &s.path("out"),
        &expected,
        &[s.path("log")],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        totals(&read_jsonl_dir(&s.path("out"))),
        expected,
        "counts differ"
    );
    stop(child, &s.path("log"));
}

#[test]
fn zeromq_sub_waits_for_its_publisher_filters_topics_keys_frames_and_dead_letters() {
    let s = Scratch::new();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    s.write(
        "p.toml",
        &pipeline(
            &format!(
                "endpoint = \"{endpoint}\"\nsocket = \"sub\"\nsubscribe = [\"keep.\"]\nkey_frame = true"
            ),
            "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n",
        ),
    );
    // Sluice first: the publisher is not there yet, and the log says so.
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    wait_log(
        &s.path("log"),
        "waiting for a peer at",
        Duration::from_secs(30),
    );
    let messages = [
        r#"["keep.a", "first"]"#,
        r#"["drop.b", "never seen"]"#,
        r#"["keep.c", "two ", "frames"]"#,
        r#"["keep.alone"]"#,
        r#"["keep.d", "last"]"#,
    ];
    client_run(
        &["zmq-send", &endpoint, "pub", "--bind"],
        &format!("{}\n", messages.join("\n")),
    );
    let out = s.path("out");
    eventually(Duration::from_secs(30), "three records", || {
        read_jsonl_dir(&out).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(600));
    let got: Vec<(String, String)> = read_jsonl_dir(&out)
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().into(),
                r["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("keep.a", "first"),
        ("keep.c", "two frames"),
        ("keep.d", "last"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    let dead = read_jsonl_dir(&s.path("dead-letter/zmq/source-0"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["value"], "keep.alone");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("1 frame(s)"),
        "{dead:?}"
    );
    assert!(
        read(&s.path("log")).contains("connected"),
        "{}",
        read(&s.path("log"))
    );
    stop(child, &s.path("log"));
}

/// Everything received is in the write-ahead log before it counts: a crash
/// after a batch's output was staged but before its checkpoint loses
/// nothing, and exactly-once output shows each line once.
#[test]
fn zeromq_with_wal_survives_a_crash_before_the_checkpoint() {
    let s = Scratch::new();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    // A long interval: every line is received (and logged) well before the
    // first batch is cut, and the crash comes after that batch is written.
    s.write(
        "p.toml",
        &pipeline_with(
            "batch_interval = \"3s\"\ndelivery = \"exactly-once\"",
            &format!("endpoint = \"{endpoint}\"\nbind = true\nwal = true"),
            "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n",
        ),
    );
    let lines = numbered_lines("z", 2000);
    let mut crashed = spawn_logged(&s, "p.toml", "log-1", &[("SLUICE_CRASH_AT", "written:1")]);
    wait_log(&s.path("log-1"), "listening", Duration::from_secs(30));
    client_run(
        &["zmq-send", &endpoint, "push"],
        &one_frame_each(&lines.join("\n")),
    );
    let status = wait_deadline(&mut crashed, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the failpoint did not fire:\n{}",
        read(&s.path("log-1"))
    );
    assert!(
        values_in(&s.path("out")).is_empty(),
        "staged output was published"
    );

    // The restart replays the log: every line once, none from the peer.
    let child = spawn_logged(&s, "p.toml", "log-2", &[]);
    let out = s.path("out");
    eventually(Duration::from_secs(60), "the replayed lines", || {
        values_in(&out).len() >= lines.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(values_in(&out), lines);
    assert!(
        read(&s.path("log-2")).contains("replaying 2000 record(s)"),
        "{}",
        read(&s.path("log-2"))
    );
    stop(child, &s.path("log-2"));
}
