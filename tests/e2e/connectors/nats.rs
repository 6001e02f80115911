//! The NATS source and sink against nats-server with JetStream: word count
//! from one stream to another under exactly-once with Sluice killed
//! mid-stream (the sum over what the output stream holds equals the
//! input's counts), a server absent at start and restarted mid-stream
//! (nothing lost), and core NATS with subjects and headers from record
//! headers, bad ones dead-lettered.

use super::*;

fn shared_server() -> String {
    env("NATS_URL")
}

/// A nats-server of a test's own with JetStream, storing in `dir`.
fn own_server(dir: &Path) -> OwnServer {
    let dir = dir.to_path_buf();
    OwnServer::new(move |port| {
        let mut cmd = Command::new(env("SLUICE_NATS_SERVER"));
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir);
        cmd
    })
}

fn add_stream(url: &str, name: &str, subject: &str) {
    client_run(&["nats-stream", url, name, subject], "");
}

/// Everything `stream` holds, as the independent client reads it.
fn stream_values(url: &str, stream: &str) -> Vec<String> {
    let out = client(&["nats-read", url, stream]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn nats_jetstream_wordcount_exactly_once_through_a_sigkill_under_continuous_input() {
    let url = shared_server();
    let u = unique("wc");
    let (lines, counts) = (format!("LINES{u}"), format!("COUNTS{u}"));
    add_stream(&url, &lines, &format!("lines.{u}"));
    add_stream(&url, &counts, &format!("counts.{u}"));
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "nats-wordcount"
batch_interval = "200ms"
delivery = "exactly-once"

[[sources]]
type = "nats"
url = "{url}"
stream = "{lines}"

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "nats"
url = "{url}"
subject = "counts.{u}"
jetstream = true
format = "text"
"#,
            plugin("word_split").display(),
            plugin("word_count").display()
        ),
    );
    // Part one is counted in full before the input goes on.
    let first = sample_text(500, 71);
    client_run(
        &["nats-publish", &url, &format!("lines.{u}"), "--jetstream"],
        &first,
    );
    let mut child = spawn_logged(&s, "p.toml", "log-1", &[]);
    let words = |text: &str| count_words(text).values().sum::<u64>();
    let counted = |url: &str| totals_of_text(stream_values(url, &counts));
    eventually(Duration::from_secs(60), "part one counted", || {
        counted(&url).values().sum::<u64>() >= words(&first)
    });
    // Part two streams in; Sluice is killed while it does.
    let second = sample_text(3000, 72);
    let sender = Sender::start(
        &[
            "nats-publish",
            &url,
            &format!("lines.{u}"),
            "--jetstream",
            "--pace",
            "40",
        ],
        second.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let child = spawn_logged(&s, "p.toml", "log-2", &[]);
    sender.finish(Duration::from_secs(180));
    let expected = count_words(&format!("{first}{second}"));
    let total: u64 = expected.values().sum();
    let start = Instant::now();
    while counted(&url).values().sum::<u64>() < total {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "counts incomplete\n{}\n----\n{}",
            read(&s.path("log-1")),
            read(&s.path("log-2"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counted(&url),
        expected,
        "the output stream's sum differs from the input's counts"
    );
    stop(child, &s.path("log-2"));
}

#[test]
fn nats_server_absent_at_start_and_restarted_mid_stream_loses_nothing() {
    let s = Scratch::new();
    let data = s.mkdir("server");
    let mut server = own_server(&data);
    let url = format!("nats://127.0.0.1:{}", server.port);
    s.write(
        "p.toml",
        &format!(
            r#"
name = "nats-restart"
batch_interval = "100ms"

[[sources]]
type = "nats"
url = "{url}"
stream = "IN"

[[sinks]]
type = "nats"
url = "{url}"
subject = "out.all"
jetstream = true
"#
        ),
    );
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    wait_log(
        &s.path("log"),
        "waiting for JetStream",
        Duration::from_secs(30),
    );
    server.start();
    add_stream(&url, "IN", "in.>");
    add_stream(&url, "OUT", "out.>");
    wait_log(&s.path("log"), "reading", Duration::from_secs(30));
    let lines = numbered_lines("n", 3000);
    let sender = Sender::start(
        &["nats-publish", &url, "in.x", "--jetstream", "--pace", "60"],
        lines.iter().map(|l| format!("{l}\n")).collect(),
    );
    std::thread::sleep(Duration::from_millis(800));
    server.stop();
    std::thread::sleep(Duration::from_millis(800));
    server.start();
    sender.finish(Duration::from_secs(180));
    let distinct = || {
        stream_values(&url, "OUT")
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
    };
    eventually(
        Duration::from_secs(90),
        "every line in the output stream",
        || distinct().len() >= lines.len(),
    );
    let got = distinct();
    let missing: Vec<&String> = lines.iter().filter(|l| !got.contains(*l)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let log = read(&s.path("log"));
    assert!(log.contains("disconnected from the server"), "{log}");
    stop(child, &s.path("log"));
}

#[test]
fn nats_core_subjects_and_headers_both_ways_with_bad_records_dead_lettered() {
    let url = shared_server();
    let u = unique("core");
    let listen = format!("127.0.0.1:{}", free_port());
    // Pipeline A: HTTP in, core NATS out, subject from a header.
    let a = Scratch::new();
    a.write(
        "p.toml",
        &format!(
            r#"
name = "to-nats"
batch_interval = "100ms"

[[sources]]
type = "http"
listen = "{listen}"

[[sinks]]
type = "nats"
url = "{url}"
subject = "fixed.{u}"
subject_header = "route"
"#
        ),
    );
    // Pipeline B: core NATS in, files out.
    let b = Scratch::new();
    b.write(
        "p.toml",
        &format!(
            "name = \"from-nats\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"nats\"\n\
             url = \"{url}\"\nsubjects = [\"*.{u}\"]\n{TO_DIRECTORY}"
        ),
    );
    let reader = Reader::start(&["nats-subscribe", &url, &format!("*.{u}")]);
    reader.wait_ready();
    let from = spawn_logged(&b, "p.toml", "log", &[]);
    wait_log(&b.path("log"), "subscribed", Duration::from_secs(30));
    let to = spawn_logged(&a, "p.toml", "log", &[]);
    eventually(Duration::from_secs(30), "the http source", || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    post_ndjson(
        &listen,
        &format!(
            "{{\"value\": \"a\", \"headers\": {{\"route\": \"r.{u}\", \"trace\": \"t1\"}}}}\n\
             {{\"value\": \"b\"}}\n\
             {{\"value\": \"c\", \"headers\": {{\"route\": \"has space.{u}\"}}}}\n\
             {{\"value\": \"d\", \"headers\": {{\"bad:name\": \"x\"}}}}\n"
        ),
    );
    eventually(Duration::from_secs(30), "two messages", || {
        reader.messages().len() >= 2
    });
    let out = b.path("out");
    eventually(Duration::from_secs(30), "two records", || {
        read_jsonl_dir(&out).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut got: Vec<(String, String, Value)> = reader
        .messages()
        .iter()
        .map(|m| {
            (
                m["subject"].as_str().unwrap().into(),
                m["value"].as_str().unwrap().into(),
                m["headers"].clone(),
            )
        })
        .collect();
    got.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        got,
        vec![
            (
                format!("r.{u}"),
                "a".into(),
                serde_json::json!({"route": format!("r.{u}"), "trace": "t1"})
            ),
            (format!("fixed.{u}"), "b".into(), serde_json::json!({})),
        ]
    );
    let mut records: Vec<(String, Value)> = read_jsonl_dir(&out)
        .iter()
        .map(|r| (r["value"].as_str().unwrap().into(), r["headers"].clone()))
        .collect();
    records.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(records[0].0, "a");
    let headers = records[0].1.as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["nats.subject", format!("r.{u}")])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&serde_json::json!(["trace", "t1"])),
        "{headers:?}"
    );
    assert_eq!(
        records[1],
        (
            "b".to_string(),
            serde_json::json!([["nats.subject", format!("fixed.{u}")]])
        )
    );
    let dead = read_jsonl_dir(&a.path("dead-letter/to-nats/sink-0"));
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap().into(),
                r["error"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == "c" && reasons[0].1.contains("white space"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "d" && reasons[1].1.contains("not a NATS header name"),
        "{reasons:?}"
    );
    stop(to, &a.path("log"));
    stop(from, &b.path("log"));
}
