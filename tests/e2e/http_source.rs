//! The `http` source under `sluice run`: lines, JSON lines and Flume events
//! POSTed to a port of its own become records; a bad body is refused whole,
//! naming what is wrong; a body over `max_body` is refused; a full queue
//! answers `429` with `Retry-After`.

use std::process::Stdio;
use std::time::Duration;

use crate::serve::support::{free_port, raw};
use crate::support::*;

#[test]
fn records_posted_in_every_format_reach_the_sink() {
    let s = Scratch::new();
    let port = free_port();
    s.write(
        "p.toml",
        &format!(
            "name = \"web\"\nbatch_interval = \"100ms\"\n\
             [[sources]]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\nmax_body = \"4KiB\"\n\
             [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n"
        ),
    );
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let post = |ct: &str, body: &[u8]| raw(port, "POST", "/", None, Some(ct), body).unwrap();
    let a = post("text/plain", b"line one\nline two\n");
    assert_eq!(
        (a.status, a.body["accepted"].as_u64()),
        (200, Some(2)),
        "{a:?}"
    );
    let a = post(
        "application/x-ndjson",
        b"{\"value\": \"json one\", \"key\": \"k1\", \"timestamp\": 42, \"headers\": {\"h\": \"v\"}}\n",
    );
    assert_eq!(a.status, 200, "{a:?}");
    let a = post(
        "application/json",
        br#"[{"headers": {"host": "web1"}, "body": "flume event"}]"#,
    );
    assert_eq!(a.status, 200, "{a:?}");
    // Refused whole, with the place named.
    let a = post(
        "application/x-ndjson",
        b"{\"value\": \"fine\"}\n{\"valu\": 1}\n",
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body["error"].as_str().unwrap().starts_with("line 2:"),
        "{a:?}"
    );
    let a = post("text/plain", &vec![b'x'; 5000]);
    assert_eq!(a.status, 413, "{a:?}");
    eventually(Duration::from_secs(20), "the records", || {
        read_jsonl_dir(&s.path("out")).len() == 4
    });
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
    let records = read_jsonl_dir(&s.path("out"));
    let values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["line one", "line two", "json one", "flume event"]);
    assert_eq!(records[2]["key"], "k1");
    assert_eq!(records[2]["timestamp"], 42);
    assert_eq!(records[3]["headers"], serde_json::json!([["host", "web1"]]));
}

#[test]
fn a_full_queue_answers_429_and_takes_nothing_of_the_body() {
    let s = Scratch::new();
    let port = free_port();
    // A slow stage and a one-chunk queue: the queue fills at once.
    s.write(
        "p.toml",
        &format!(
            "name = \"slow\"\nbatch_interval = \"50ms\"\nqueue_capacity = 1\n\
             [[sources]]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\n\
             [[stages]]\nname = \"slow\"\nplugin = '{}'\ntime_limit = \"60s\"\n\
             config = {{ mode = \"slow\", spin = 2000000 }}\n\
             [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"text\"\n",
            plugin("misbehave").display()
        ),
    );
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut accepted = 0u64;
    let mut refused = 0;
    // Sends until the queue has refused five bodies (on a busy machine the
    // client may be slower than the stage for a while), then stops, so what
    // was accepted stays small enough for the slow stage to finish.
    let sending = std::time::Instant::now();
    for i in 0.. {
        if refused >= 5 || sending.elapsed() > Duration::from_secs(90) {
            break;
        }
        let body: String = (0..50).map(|j| format!("r{i}-{j}\n")).collect();
        let a = raw(port, "POST", "/", None, Some("text/plain"), body.as_bytes()).unwrap();
        match a.status {
            200 => accepted += a.body["accepted"].as_u64().unwrap(),
            429 => {
                assert!(
                    a.headers.to_ascii_lowercase().contains("retry-after: 1"),
                    "{}",
                    a.headers
                );
                refused += 1;
            }
            other => panic!("{other}: {a:?}"),
        }
    }
    assert!(refused > 0, "the queue never filled");
    let waiting = format!("every one of the {accepted} accepted records");
    // The slow stage spends about a millisecond a record on a quiet core; a
    // busy machine (the client slow to fill the queue) accepts more, and
    // takes longer over each.
    let budget = Duration::from_secs(120 + accepted / 200);
    eventually(budget, &waiting, || {
        let lines: usize = std::fs::read_dir(s.path("out"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
            .sum();
        lines as u64 == accepted
    });
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(60)).success());
}
