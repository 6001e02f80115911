//! The `object-store` sink against a real S3-compatible server (moto's, in
//! memory), checked with an independent client (boto3,
//! `tests/support/s3_client.py`).
//!
//! `tests/run.sh` installs both, starts a server shared by these tests and
//! exports `S3_ENDPOINT` (its address), `SLUICE_MOTO` (the server, for a
//! test that stops and starts one of its own) and `SLUICE_S3_PYTHON` (the
//! Python that has boto3). Each test uses its own bucket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::elasticsearch::{free_port, unique};
use crate::support::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the object-store tests need moto's S3 server and boto3; run them \
             through `bash tests/run.sh`, which installs and starts both (or export S3_ENDPOINT, \
             SLUICE_MOTO and SLUICE_S3_PYTHON yourself)"
        )
    })
}

fn client(endpoint: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(env("SLUICE_S3_PYTHON"))
        .arg(root().join("tests/support/s3_client.py"))
        .arg(endpoint)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3_client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8_lossy(&out.stdout))
}

fn bucket(endpoint: &str) -> String {
    let name = unique("b").replace('_', "-");
    client(endpoint, &["bucket", &name]);
    name
}

/// The objects under `prefix`: key and body.
fn objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    client(endpoint, &["objects", bucket, prefix])
        .into_iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Word totals over the published objects (jsonl word counts), leaving
/// out the staging folder.
fn published_totals(objects: &[(String, String)]) -> BTreeMap<String, u64> {
    let mut records = Vec::new();
    for (key, body) in objects {
        if !key.contains("/_sluice_staging/") {
            records.extend(parse_jsonl(body));
        }
    }
    totals(&records)
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

fn s3_sink(endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\ntype = \"object-store\"\nurl = \"s3://{bucket}/out/words\"\n\
         endpoint = \"{endpoint}\"\nformat = \"jsonl\"\n{extra}\n"
    )
}

fn sluice(s: &Scratch, args: &[&str]) -> Command {
    let mut cmd = s.sluice(args);
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT");
    cmd
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn spawn_logged(s: &Scratch, log: &str, crash: Option<&str>) -> Child {
    let file = std::fs::File::create(s.path(log)).unwrap();
    let mut cmd = sluice(s, &["run", "p.toml", "--control", "off"]);
    if let Some(point) = crash {
        cmd.env("SLUICE_CRASH_AT", point);
    }
    cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap()
}

/// Word count from standard input into time-partitioned objects: the sum
/// over the objects is the input's counts, and every object sits under a
/// `dt=…/hour=…` path named by the pipeline.
#[test]
fn word_counts_land_in_partitioned_objects() {
    let endpoint = env("S3_ENDPOINT");
    let bucket = bucket(&endpoint);
    let s = Scratch::new();
    s.write(
        "p.toml",
        &word_count_pipeline(
            "s3-words",
            "",
            "[[sources]]\ntype = \"stdin\"",
            &s3_sink(&endpoint, &bucket, "partition = \"dt=%Y-%m-%d/hour=%H\""),
        ),
    );
    let text = sample_text(300, 23);
    let done = run_with_input(
        sluice(&s, &["run", "p.toml"]),
        &text,
        Duration::from_secs(60),
    );
    assert!(done.status.success(), "{}", done.stderr);
    let held = objects(&endpoint, &bucket, "");
    assert!(!held.is_empty());
    for (key, _) in &held {
        let rest = key
            .strip_prefix("out/words/dt=")
            .unwrap_or_else(|| panic!("{key}"));
        let (day, rest) = rest.split_once("/hour=").unwrap_or_else(|| panic!("{key}"));
        assert_eq!(day.len(), 10, "{key}");
        assert!(
            rest[2..].starts_with("/s3-words-") && rest.ends_with(".jsonl"),
            "{key}"
        );
    }
    assert_eq!(
        published_totals(&held),
        count_words(&text),
        "{}",
        done.stderr
    );
}

/// Parquet objects, one per batch, read back by an independent reader
/// (pyarrow): the rows add up to the input's counts.
#[test]
fn parquet_objects_read_back_with_pyarrow() {
    let endpoint = env("S3_ENDPOINT");
    let bucket = bucket(&endpoint);
    let s = Scratch::new();
    s.write(
        "p.toml",
        &word_count_pipeline(
            "s3-parquet",
            "",
            "[[sources]]\ntype = \"stdin\"",
            &s3_sink(&endpoint, &bucket, "").replace("format = \"jsonl\"", "format = \"parquet\""),
        ),
    );
    let text = sample_text(200, 29);
    let done = run_with_input(
        sluice(&s, &["run", "p.toml"]),
        &text,
        Duration::from_secs(60),
    );
    assert!(done.status.success(), "{}", done.stderr);
    let held = objects(&endpoint, &bucket, "out/words/");
    assert!(
        !held.is_empty() && held.iter().all(|(k, _)| k.ends_with(".parquet")),
        "{held:?}"
    );
    assert_eq!(
        published_totals(&held),
        count_words(&text),
        "{}",
        done.stderr
    );
}

/// Exactly-once into a bucket: files stream into a watched folder while
/// the engine crashes at each injected point (including between the
/// checkpoint and the copy into place) and is then SIGKILLed ten times; the
/// published objects add up to the input's counts exactly, and a clean stop
/// leaves nothing staged.
#[test]
fn exactly_once_through_injected_crashes_and_sigkills() {
    let endpoint = env("S3_ENDPOINT");
    let bucket = bucket(&endpoint);
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &word_count_pipeline(
            "s3-exact",
            "delivery = \"exactly-once\"",
            "[[sources]]\ntype = \"directory\"\npath = \"input\"\nsettle = \"200ms\"",
            &s3_sink(&endpoint, &bucket, ""),
        ),
    );
    // At least 40 files, and on through every crash and kill.
    let writer = Trickle::start(s.path("input"), 40, |i| sample_text(60, 5000 + i));
    let mut run = 0;
    for point in [
        "written:2",
        "checkpointed:2",
        "renaming:2",
        "acknowledged:2",
    ] {
        let mut child = spawn_logged(&s, &format!("log-{run}"), Some(point));
        let status = wait_deadline(&mut child, Duration::from_secs(60));
        let log = read(&s.path(&format!("log-{run}")));
        assert!(
            !status.success() && log.contains("SLUICE_CRASH_AT: crashing"),
            "run {run} did not crash at {point}: {status}\n{log}"
        );
        run += 1;
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
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
    let settled = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(150));
        published_totals(&objects(&endpoint, &bucket, "")) == expected
    });
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    let logs: Vec<String> = (0..=run)
        .map(|n| read(&s.path(&format!("log-{n}"))))
        .collect();
    assert!(settled, "never settled; logs:\n{}", logs.join("\n----\n"));
    let held = objects(&endpoint, &bucket, "");
    assert_eq!(
        published_totals(&held),
        expected,
        "{}",
        logs.join("\n----\n")
    );
    let staged: Vec<&String> = held
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("/_sluice_staging/"))
        .collect();
    assert!(
        staged.is_empty(),
        "left staged after a clean stop: {staged:?}"
    );
    assert!(status.success(), "{}", logs[run]);
    assert!(
        logs.iter()
            .any(|l| l.contains("object(s) of checkpointed batches published")),
        "no run published what a crash left staged:\n{}",
        logs.join("\n----\n")
    );
}

/// The store is absent when the pipeline starts (the sink waits and says
/// so), then killed and started again mid-stream: nothing is lost. moto
/// keeps nothing across a restart, so the first server's objects are read
/// just before it is killed (the input paused), and the bucket is made
/// again on the second.
#[test]
fn store_absent_at_start_and_restarted_mid_stream_loses_nothing() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = || {
        let child = Command::new(env("SLUICE_MOTO"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(30), "moto to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        client(&endpoint, &["bucket", "restart"]);
        child
    };
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &word_count_pipeline(
            "s3-restart",
            "",
            "[[sources]]\ntype = \"directory\"\npath = \"input\"\nsettle = \"100ms\"",
            &s3_sink(&endpoint, "restart", ""),
        ),
    );
    let mut child = spawn_logged(&s, "log", None);
    let log = s.path("log");
    let drop_file = |n: usize, text: &str| {
        let tmp = s.path(&format!("input/.f{n}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, s.path(&format!("input/f{n}.txt"))).unwrap();
    };
    let parts: Vec<String> = (0..3).map(|i| sample_text(120, 70 + i)).collect();
    drop_file(0, &parts[0]);
    eventually(Duration::from_secs(60), "the sink to say it waits", || {
        read(&log).contains("waiting for the server")
    });
    let mut first = start();
    let expected_first = count_words(&parts[0]);
    eventually(Duration::from_secs(60), "the first part stored", || {
        published_totals(&objects(&endpoint, "restart", "")) == expected_first
    });
    let before_kill = objects(&endpoint, "restart", "");
    first.kill().unwrap();
    first.wait().unwrap();
    let waits = read(&log).matches("waiting for the server").count();
    drop_file(1, &parts[1]);
    eventually(Duration::from_secs(60), "the sink to wait again", || {
        read(&log).matches("waiting for the server").count() > waits
    });
    let mut second = start();
    drop_file(2, &parts[2]);
    let expected_rest = count_words(&format!("{}{}", parts[1], parts[2]));
    let settled = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(150));
        published_totals(&objects(&endpoint, "restart", "")) == expected_rest
    });
    let mut all = before_kill;
    all.extend(objects(&endpoint, "restart", ""));
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(
        settled,
        "the second store never held the rest:\n{}",
        read(&log)
    );
    assert_eq!(
        published_totals(&all),
        count_words(&parts.concat()),
        "{}",
        read(&log)
    );
    assert!(status.success(), "{}", read(&log));
}
