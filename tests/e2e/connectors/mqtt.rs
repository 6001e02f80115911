//! The MQTT source and sink against mosquitto: word count from topics with
//! a wildcard to a topic, retained messages and the topic header, routing
//! by header with bad topics dead-lettered, a broker absent at start and
//! restarted mid-stream, and Sluice killed mid-stream (QoS 1, acknowledged
//! after checkpoints: nothing lost).

use super::*;

fn shared_broker() -> String {
    env("MQTT_URL")
}

/// A mosquitto of a test's own on `port`, keeping its sessions and queued
/// messages in `dir` across a clean restart.
fn own_broker(dir: &Path) -> OwnServer {
    let dir = dir.to_path_buf();
    OwnServer::new(move |port| {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_inflight_messages 0\nmax_queued_messages 0\n\
                 log_dest none\nuser root\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env("SLUICE_MOSQUITTO"));
        cmd.arg("-c").arg(conf);
        cmd
    })
}

fn source(url: &str, topics: &str, client_id: &str) -> String {
    format!(
        "[[sources]]\ntype = \"mqtt\"\nurl = \"{url}\"\ntopics = [{topics}]\nclient_id = \"{client_id}\"\n"
    )
}

#[test]
fn mqtt_wordcount_from_a_wildcard_to_a_topic_matches_an_independent_count() {
    let url = shared_broker();
    let u = unique("wc");
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "mqtt-wordcount"
batch_interval = "200ms"

{}
[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "mqtt"
url = "{url}"
topic = "counts/{u}"
format = "text"
"#,
            source(&url, &format!("\"lines/{u}/+\""), &unique("src")),
            plugin("word_split").display(),
            plugin("word_count").display()
        ),
    );
    let reader = Reader::start(&["mqtt-subscribe", &url, &format!("counts/{u}")]);
    reader.wait_ready();
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    wait_log(
        &s.path("log"),
        "connected (session",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300)); // the subscription
    let (a, b) = (sample_text(1500, 61), sample_text(1500, 62));
    let pa = Sender::start(&["mqtt-publish", &url, &format!("lines/{u}/a")], a.clone());
    let pb = Sender::start(&["mqtt-publish", &url, &format!("lines/{u}/b")], b.clone());
    pa.finish(Duration::from_secs(120));
    pb.finish(Duration::from_secs(120));
    let expected = count_words(&format!("{a}{b}"));
    let got = || {
        totals_of_text(
            reader
                .messages()
                .iter()
                .map(|m| m["value"].as_str().unwrap().to_string()),
        )
    };
    let start = Instant::now();
    while got().values().sum::<u64>() < expected.values().sum::<u64>() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "counts incomplete: {:?}\n{}",
            got(),
            read(&s.path("log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(got(), expected, "counts differ");
    stop(child, &s.path("log"));
}

#[test]
fn mqtt_records_carry_their_topic_and_the_retained_flag() {
    let url = shared_broker();
    let u = unique("rt");
    client_run(
        &["mqtt-publish", &url, &format!("t/{u}/old"), "--retain"],
        "kept\n",
    );
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"mqtt-headers\"\nbatch_interval = \"100ms\"\n{}{TO_DIRECTORY}",
            source(&url, &format!("\"t/{u}/#\""), &unique("src"))
        ),
    );
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    let out = s.path("out");
    eventually(Duration::from_secs(30), "the retained message", || {
        !read_jsonl_dir(&out).is_empty()
    });
    client_run(&["mqtt-publish", &url, &format!("t/{u}/new")], "fresh\n");
    eventually(Duration::from_secs(30), "the new message", || {
        read_jsonl_dir(&out).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(300));
    let records = read_jsonl_dir(&out);
    let seen: Vec<(String, Value)> = records
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap().to_string(),
                r["headers"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "kept".to_string(),
                serde_json::json!([
                    ["mqtt.topic", format!("t/{u}/old")],
                    ["mqtt.retained", "true"]
                ])
            ),
            (
                "fresh".to_string(),
                serde_json::json!([["mqtt.topic", format!("t/{u}/new")]])
            ),
        ]
    );
    // Clear the retained message.
    client_run(
        &["mqtt-publish", &url, &format!("t/{u}/old"), "--retain"],
        "\n",
    );
    stop(child, &s.path("log"));
}

#[test]
fn mqtt_sink_routes_by_header_and_dead_letters_what_has_no_valid_topic() {
    let url = shared_broker();
    let u = unique("rs");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "mqtt-route"
batch_interval = "100ms"

[[sources]]
type = "http"
listen = "{listen}"

[[sinks]]
type = "mqtt"
url = "{url}"
topic = "fixed/{u}"
topic_header = "route"
"#
        ),
    );
    let reader = Reader::start(&["mqtt-subscribe", &url, &format!("+/{u}/#")]);
    reader.wait_ready();
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    eventually(Duration::from_secs(30), "the http source", || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    post_ndjson(
        &listen,
        &format!(
            "{{\"value\": \"a\", \"headers\": {{\"route\": \"r/{u}/1\"}}}}\n\
             {{\"value\": \"b\"}}\n\
             {{\"value\": \"c\", \"headers\": {{\"route\": \"r/{u}/#\"}}}}\n\
             {{\"value\": \"d\", \"headers\": {{\"route\": \"\"}}}}\n"
        ),
    );
    eventually(Duration::from_secs(30), "two messages", || {
        reader.messages().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut got: Vec<(String, String)> = reader
        .messages()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().into(),
                m["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (format!("fixed/{u}"), "b".into()),
            (format!("r/{u}/1"), "a".into())
        ]
    );
    let dead = read_jsonl_dir(&s.path("dead-letter/mqtt-route/sink-0"));
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
    assert_eq!(reasons[0].0, "c");
    assert!(reasons[0].1.contains("wildcard"), "{reasons:?}");
    assert_eq!(reasons[1].0, "d");
    assert!(reasons[1].1.contains("empty"), "{reasons:?}");
    stop(child, &s.path("log"));
}

/// Every numbered line is in the output at least once; returns how many
/// came twice.
fn all_present(out: &Path, lines: &[String]) -> usize {
    let got = values_in(out);
    let set: std::collections::BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&String> = lines.iter().filter(|l| !set.contains(l)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    got.len() - set.len()
}

#[test]
fn mqtt_broker_absent_at_start_and_restarted_mid_stream_loses_nothing() {
    let s = Scratch::new();
    let data = s.mkdir("broker");
    let mut broker = own_broker(&data);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    s.write(
        "p.toml",
        &format!(
            "name = \"mqtt-restart\"\nbatch_interval = \"100ms\"\n{}{TO_DIRECTORY}",
            source(&url, "\"in/#\"", "sluice-restart")
        ),
    );
    let child = spawn_logged(&s, "p.toml", "log", &[]);
    wait_log(
        &s.path("log"),
        "waiting for the broker",
        Duration::from_secs(30),
    );
    broker.start();
    wait_log(
        &s.path("log"),
        "connected (session new)",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300)); // the subscription
    let lines = numbered_lines("m", 3000);
    let sender = Sender::start(
        &["mqtt-publish", &url, "in/x", "--pace", "60"],
        lines.iter().map(|l| format!("{l}\n")).collect(),
    );
    std::thread::sleep(Duration::from_millis(700));
    broker.stop();
    std::thread::sleep(Duration::from_millis(800));
    broker.start();
    sender.finish(Duration::from_secs(180));
    let out = s.path("out");
    eventually(Duration::from_secs(60), "every line", || {
        values_in(&out)
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= lines.len()
    });
    let twice = all_present(&out, &lines);
    eprintln!("mqtt broker restart: {twice} line(s) twice (at-least-once)");
    let log = read(&s.path("log"));
    assert!(log.contains("lost the broker"), "{log}");
    assert!(log.contains("connected (session resumed)"), "{log}");
    stop(child, &s.path("log"));
}

#[test]
fn mqtt_sigkill_of_sluice_under_continuous_input_loses_nothing() {
    let url = shared_broker();
    let u = unique("kill");
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"mqtt-kill\"\nbatch_interval = \"100ms\"\n{}{TO_DIRECTORY}",
            source(&url, &format!("\"k/{u}\""), &u)
        ),
    );
    let mut first = spawn_logged(&s, "p.toml", "log-1", &[]);
    wait_log(
        &s.path("log-1"),
        "connected (session",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = numbered_lines("k", 3000);
    let sender = Sender::start(
        &["mqtt-publish", &url, &format!("k/{u}"), "--pace", "50"],
        lines.iter().map(|l| format!("{l}\n")).collect(),
    );
    std::thread::sleep(Duration::from_millis(600));
    first.kill().unwrap();
    first.wait().unwrap();
    let before = values_in(&s.path("out")).len();
    let child = spawn_logged(&s, "p.toml", "log-2", &[]);
    sender.finish(Duration::from_secs(180));
    let out = s.path("out");
    eventually(Duration::from_secs(60), "every line", || {
        values_in(&out)
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= lines.len()
    });
    let twice = all_present(&out, &lines);
    assert!(
        before > 0 && before < lines.len(),
        "the kill came mid-stream ({before} lines before)"
    );
    eprintln!("mqtt SIGKILL: {twice} line(s) twice (at-least-once)");
    assert!(
        read(&s.path("log-2")).contains("connected (session resumed)"),
        "{}",
        read(&s.path("log-2"))
    );
    stop(child, &s.path("log-2"));
}
