//! The `http` sink against a small HTTP server of the test's own (a thread
//! on a loopback port, answering each request by a rule the test sets):
//! retries through `503`s, and records the server refuses dead-lettered
//! with its answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// One request the server took: its idempotency key and body.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    content_type: String,
    body: String,
}

/// A server answering each request with `rule(request number, body)`'s
/// status and text; keeps the requests it answered `200`.
struct Server {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

impl Server {
    fn start(rule: impl Fn(usize, &str) -> (u16, &'static str) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ingest", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (kept, count) = (received.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let (mut length, mut key, mut content_type) = (0, String::new(), String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "idempotency-key" => key = value.trim().to_string(),
                        "content-type" => content_type = value.trim().to_string(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let n = {
                    let mut c = count.lock().unwrap();
                    *c += 1;
                    *c
                };
                let (status, text) = rule(n, &body);
                if status == 200 {
                    kept.lock().unwrap().push(Received {
                        key,
                        content_type,
                        body,
                    });
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Server {
            url,
            received,
            requests,
        }
    }
}

/// Word counts POSTed a batch per request, jsonl; the server fails the
/// first three requests with `503`: the sink waits, says so, and sends
/// again, so the server ends with exactly the input's counts.
#[test]
fn batches_are_posted_and_retried_through_server_errors() {
    let server = Server::start(|n, _| if n <= 3 { (503, "busy") } else { (200, "ok") });
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"http-words\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\n\
             [[stages]]\nname = \"count\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"http\"\nurl = \"{}\"\n",
            plugin("word_split").display(),
            plugin("word_count").display(),
            server.url
        ),
    );
    let text = sample_text(300, 5);
    let done = run_with_input(s.sluice(&["run", "p.toml"]), &text, Duration::from_secs(60));
    assert!(done.status.success(), "{}", done.stderr);
    let received = server.received.lock().unwrap().clone();
    let records: Vec<serde_json::Value> =
        received.iter().flat_map(|r| parse_jsonl(&r.body)).collect();
    assert_eq!(totals(&records), count_words(&text), "{}", done.stderr);
    assert!(
        received
            .iter()
            .all(|r| r.content_type == "application/x-ndjson")
    );
    let mut keys: Vec<&str> = received.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        received.len(),
        "idempotency keys repeat: {received:?}"
    );
    assert!(*server.requests.lock().unwrap() > received.len());
    assert!(
        done.stderr.contains("waiting for the server"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("503"), "{}", done.stderr);
}

/// One request per record: the records the server refuses (`422`) go to
/// the dead-letter folder with its answer; the rest arrive.
#[test]
fn records_the_server_refuses_are_dead_lettered_with_its_answer() {
    let server = Server::start(|_, body| {
        if body.contains("poison") {
            (422, "no poison here")
        } else {
            (200, "ok")
        }
    });
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"http-records\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"stdin\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"{}\"\nper = \"record\"\nformat = \"text\"\n\
             dead_letter = \"refused\"\n",
            server.url
        ),
    );
    let done = run_with_input(
        s.sluice(&["run", "p.toml"]),
        "apple\npoison ivy\nbanana\npoison oak\ncherry\n",
        Duration::from_secs(60),
    );
    assert!(done.status.success(), "{}", done.stderr);
    let mut got: Vec<String> = server
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.trim_end().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["apple", "banana", "cherry"]);
    let refused = read_jsonl_dir(&s.path("refused"));
    let values: Vec<&str> = refused
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["poison ivy", "poison oak"], "{}", done.stderr);
    for r in &refused {
        assert_eq!(r["error"], "HTTP 422 Unprocessable Entity: no poison here");
    }
}
