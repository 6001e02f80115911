//! The `elasticsearch` sink against a real OpenSearch-compatible server
//! (`osmem-server`, in memory), checked with an independent client (Python's
//! standard library, `tests/support/search_client.py`).
//!
//! `tests/run.sh` installs the server, starts one shared by these tests and
//! exports `OPENSEARCH_URL` (its address) and `SLUICE_OSMEM` (the server
//! binary, for tests that stop and start a server of their own). Each test
//! writes its own indices. A restarted osmem starts empty: the restart test
//! counts what the first server held before it was killed plus what the
//! second one holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Elasticsearch tests need osmem-server; run them through \
             `bash tests/run.sh`, which installs and starts it (or export OPENSEARCH_URL and \
             SLUICE_OSMEM yourself)"
        )
    })
}

/// A name no other test (or earlier run against the same server) uses;
/// lowercase, as index names must be.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An osmem server of a test's own, on `port`; killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16) -> Server {
        let child = Command::new(env("SLUICE_OSMEM"))
            .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "osmem to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let _ = url;
        Server { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every document of `index` (a name or pattern), read by the independent
/// client; none when the index does not exist.
fn docs(url: &str, index: &str) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(root().join("tests/support/search_client.py"))
        .args([url, "docs", index])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading {index}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8_lossy(&out.stdout))
}

/// Word totals over word-count documents (`{"key": word, "value": "n"}`).
fn word_totals(docs: &[Value]) -> BTreeMap<String, u64> {
    let sources: Vec<Value> = docs.iter().map(|d| d["_source"].clone()).collect();
    totals(&sources)
}

fn word_count_pipeline(name: &str, top: &str, source: &str, sink: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\n{top}\n{source}\n\
         [[stages]]\nname = \"split\"\nplugin = '{}'\n\n\
         [[stages]]\nname = \"count\"\nplugin = '{}'\n\n{sink}",
        plugin("word_split").display(),
        plugin("word_count").display()
    )
}

fn es_sink(url: &str, index: &str, extra: &str) -> String {
    format!("[[sinks]]\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"{index}\"\n{extra}\n")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn spawn_logged(s: &Scratch, log: &str, crash: Option<&str>) -> Child {
    let file = std::fs::File::create(s.path(log)).unwrap();
    let mut cmd = s.sluice(&["run", "p.toml", "--control", "off"]);
    if let Some(point) = crash {
        cmd.env("SLUICE_CRASH_AT", point);
    }
    cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap()
}

/// Word count from standard input into an index per day of event time:
/// the sum over the documents the server holds is the input's counts, every
/// index is named from the template, and ids are the sink's own.
#[test]
fn word_counts_reach_the_index_exactly() {
    let url = env("OPENSEARCH_URL");
    let prefix = unique("wc");
    let s = Scratch::new();
    s.write(
        "p.toml",
        &word_count_pipeline(
            "es-words",
            "",
            "[[sources]]\ntype = \"stdin\"",
            &es_sink(&url, &format!("{prefix}-%Y.%m.%d"), "bulk_max_records = 7"),
        ),
    );
    let text = sample_text(400, 17);
    let done = run_with_input(s.sluice(&["run", "p.toml"]), &text, Duration::from_secs(60));
    assert!(done.status.success(), "{}", done.stderr);
    let held = docs(&url, &format!("{prefix}-*"));
    assert_eq!(word_totals(&held), count_words(&text), "{}", done.stderr);
    let today = Command::new("date")
        .args(["-u", "+%Y.%m.%d"])
        .output()
        .unwrap();
    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    for doc in &held {
        let index = doc["_index"].as_str().unwrap();
        // Event time is when a line was read: today, or yesterday just
        // after midnight.
        assert!(index.starts_with(&format!("{prefix}-20")), "{index}");
        assert_eq!(index.len(), prefix.len() + 11, "{index}");
        assert!(doc["_id"].as_str().unwrap().contains('-'), "{doc}");
    }
    assert!(
        held.iter()
            .any(|d| d["_index"].as_str().unwrap().ends_with(&today))
    );
}

/// Documents the server refuses (a mapping error) go to the dead-letter
/// folder with the server's reason; the rest of the batch is indexed.
#[test]
fn refused_documents_are_dead_lettered_with_the_reason() {
    let url = env("OPENSEARCH_URL");
    let index = unique("typed");
    let created = Command::new("python3")
        .arg(root().join("tests/support/search_client.py"))
        .args([
            url.as_str(),
            "create",
            &index,
            r#"{"mappings": {"properties": {"n": {"type": "integer"}}}}"#,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"es-typed\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"stdin\"\n{}",
            es_sink(&url, &index, "dead_letter = \"refused\"")
        ),
    );
    let input = "{\"n\": 1, \"w\": \"one\"}\n{\"n\": \"many\", \"w\": \"bad\"}\n{\"n\": 3, \"w\": \"three\"}\nplain text\n";
    let done = run_with_input(s.sluice(&["run", "p.toml"]), input, Duration::from_secs(60));
    assert!(done.status.success(), "{}", done.stderr);
    let held = docs(&url, &index);
    let mut words: Vec<&str> = held
        .iter()
        .filter_map(|d| d["_source"]["w"].as_str())
        .collect();
    words.sort();
    assert_eq!(words, ["one", "three"], "{held:?}");
    // A line that is not a JSON object is indexed as the jsonl object.
    assert!(
        held.iter().any(|d| d["_source"]["value"] == "plain text"),
        "{held:?}"
    );
    let refused = read_jsonl_dir(&s.path("refused"));
    assert_eq!(refused.len(), 1, "{refused:?}\n{}", done.stderr);
    assert_eq!(refused[0]["value"], "{\"n\": \"many\", \"w\": \"bad\"}");
    let reason = refused[0]["error"].as_str().unwrap();
    assert!(
        reason.starts_with("400 mapper_parsing_exception") && reason.contains("[n]"),
        "{reason}"
    );
    assert!(done.stderr.contains("dead-lettered"), "{}", done.stderr);
}

/// The server is absent when the pipeline starts (the sink waits and says
/// so), then killed mid-stream and started again: nothing read while it was
/// away is lost. osmem keeps nothing across a restart, so the first
/// server's documents are read just before it is killed, with the input
/// paused so that none are in flight.
#[test]
fn server_absent_at_start_and_restarted_mid_stream_loses_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &word_count_pipeline(
            "es-restart",
            "",
            "[[sources]]\ntype = \"directory\"\npath = \"input\"\nsettle = \"100ms\"",
            &es_sink(&url, "restart", ""),
        ),
    );
    let mut child = spawn_logged(&s, "log", None);
    let log = s.path("log");
    let drop_file = |n: usize, text: &str| {
        let tmp = s.path(&format!("input/.f{n}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, s.path(&format!("input/f{n}.txt"))).unwrap();
    };
    let parts: Vec<String> = (0..3).map(|i| sample_text(150, 40 + i)).collect();
    drop_file(0, &parts[0]);
    eventually(Duration::from_secs(30), "the sink to say it waits", || {
        read(&log).contains("waiting for the server")
    });
    let first = Server::start(port);
    let expected_first = count_words(&parts[0]);
    eventually(Duration::from_secs(60), "the first part indexed", || {
        word_totals(&docs(&url, "restart")) == expected_first
    });
    let before_kill = docs(&url, "restart");
    first.kill();
    let waits_before = read(&log).matches("waiting for the server").count();
    drop_file(1, &parts[1]);
    eventually(Duration::from_secs(30), "the sink to wait again", || {
        read(&log).matches("waiting for the server").count() > waits_before
    });
    let _second = Server::start(port);
    drop_file(2, &parts[2]);
    let expected_rest = count_words(&format!("{}{}", parts[1], parts[2]));
    let settled = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        word_totals(&docs(&url, "restart")) == expected_rest
    });
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    assert!(
        settled,
        "after the restart the server holds {:?}, expected {expected_rest:?}\n{}",
        word_totals(&docs(&url, "restart")),
        read(&log)
    );
    let mut all = before_kill;
    all.extend(docs(&url, "restart"));
    assert_eq!(
        word_totals(&all),
        count_words(&parts.concat()),
        "{}",
        read(&log)
    );
    assert!(status.success(), "{}", read(&log));
    assert!(read(&log).contains("went through after"), "{}", read(&log));
}

/// Exactly-once into an index: files stream into a watched folder while
/// the engine crashes at each injected point and is then SIGKILLed ten
/// times at random moments; the sum over what the server holds equals the
/// input's counts exactly (replays overwrite their documents: same ids).
#[test]
fn exactly_once_through_injected_crashes_and_sigkills() {
    let url = env("OPENSEARCH_URL");
    let index = unique("exact");
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &word_count_pipeline(
            "es-exact",
            "delivery = \"exactly-once\"",
            "[[sources]]\ntype = \"directory\"\npath = \"input\"\nsettle = \"200ms\"",
            &es_sink(&url, &index, ""),
        ),
    );
    // At least 50 files, and on through every crash and kill.
    let writer = Trickle::start(s.path("input"), 50, |i| sample_text(60, 3000 + i));
    let mut run = 0;
    for point in ["written:2", "checkpointed:2", "acknowledged:2"] {
        let mut child = spawn_logged(&s, &format!("log-{run}"), Some(point));
        let status = wait_deadline(&mut child, Duration::from_secs(60));
        let log = read(&s.path(&format!("log-{run}")));
        assert!(
            !status.success() && log.contains("SLUICE_CRASH_AT: crashing"),
            "run {run} did not crash at {point}: {status}\n{log}"
        );
        run += 1;
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10 {
        let mut child = spawn_logged(&s, &format!("log-{run}"), None);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 500));
        child.kill().unwrap();
        child.wait().unwrap();
        run += 1;
    }
    let expected = count_words(&writer.finish());
    let mut child = spawn_logged(&s, &format!("log-{run}"), None);
    wait_until_resumed(&s.path(&format!("log-{run}")));
    let settled = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        word_totals(&docs(&url, &index)) == expected
    });
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    let logs: Vec<String> = (0..=run)
        .map(|n| read(&s.path(&format!("log-{n}"))))
        .collect();
    // Checked after the stop too: nothing more may arrive.
    assert!(settled, "never settled; logs:\n{}", logs.join("\n----\n"));
    assert_eq!(
        word_totals(&docs(&url, &index)),
        expected,
        "{}",
        logs.join("\n----\n")
    );
    assert!(status.success(), "{}", logs[run]);
    assert!(
        logs.iter().any(|l| l.contains("sending checkpoint")),
        "no run repaired a checkpoint whose bulk request the crash cut off:\n{}",
        logs.join("\n----\n")
    );
}
