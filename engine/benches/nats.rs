//! NATS JetStream → Wasm → JetStream word count, against native Rust doing
//! the same round trip with the same client library in the same run.
//!
//! Needs a nats-server with JetStream at `NATS_URL` (README, "ZeroMQ, MQTT
//! and NATS"). Loads `SLUICE_BENCH_LINES` lines (default 500,000, 10 words
//! each) into a new file-backed stream, then:
//!
//! - **read only**: a pull consumer reading every message and acknowledging
//!   the last one: what the server itself delivers;
//! - **native**: a pull consumer (acknowledging all up to a message, as the
//!   engine's source does) that splits and counts each chunk of up to
//!   100,000 messages in a hash map, publishes the counts to JetStream and
//!   waits for their confirmations, then acknowledges the chunk's last
//!   message; timed from the first pull to the last acknowledgement;
//! - **sluice**: the real binary, `nats (jetstream) → word-split →
//!   word-count → nats (jetstream)`, timed from its consumer reading until
//!   the consumer's acknowledgement floor (which moves only after a batch's
//!   counts are confirmed by the output stream and checkpointed) reaches
//!   the last message.
//!
//! Run: `NATS_URL=nats://127.0.0.1:4222 cargo bench -p sluice --bench nats`

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sluice::source::LineMaker;

const WORDS_PER_LINE: u32 = 10;

fn main() {
    let Ok(url) = std::env::var("NATS_URL") else {
        eprintln!("nats bench: NATS_URL is not set; start nats-server -js (README) and set it");
        std::process::exit(2);
    };
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let input = format!("BENCHIN{run}");
    let client = runtime
        .block_on(async_nats::connect(url.as_str()))
        .expect("connecting");
    let js = {
        let _entered = runtime.enter();
        jetstream::new(client)
    };
    let loaded = Instant::now();
    runtime.block_on(load(&js, &input, &format!("bin.{run}"), lines));
    println!(
        "loaded {lines} lines into stream {input} in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    runtime.block_on(add_stream(
        &js,
        &format!("BENCHOUT{run}"),
        &format!("bout.{run}.>"),
    ));

    let bare = runtime.block_on(native(&js, &input, None, lines));
    let native = runtime.block_on(native(
        &js,
        &input,
        Some(format!("bout.{run}.native")),
        lines,
    ));
    let sluice = sluice(
        &runtime,
        &js,
        &url,
        &input,
        &format!("bout.{run}.sluice"),
        lines,
    );
    let rate = |secs: f64| lines as f64 / secs;
    println!("jetstream → word count → jetstream, {lines} lines of {WORDS_PER_LINE} words");
    for (name, secs) in [
        ("read only (no work)", bare),
        ("native Rust (async-nats)", native),
        ("sluice (Wasm stages)", sluice),
    ] {
        println!("  {name:<24} {:>10.0} lines/s  ({secs:.3} s)", rate(secs));
    }
    println!(
        "  ratio sluice/native      {:>10.2}",
        rate(sluice) / rate(native)
    );
}

async fn add_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("creating the stream");
}

/// Publishes `lines` generated lines, up to 1,000 confirmations awaited at
/// once.
async fn load(js: &jetstream::Context, stream: &str, subject: &str, lines: u64) {
    add_stream(js, stream, subject).await;
    let mut maker = LineMaker::new(1, WORDS_PER_LINE);
    let mut waiting = FuturesUnordered::new();
    for _ in 0..lines {
        let line = maker.next_line().to_string();
        let ack = js
            .publish(subject.to_string(), line.into())
            .await
            .expect("publishing");
        waiting.push(ack.into_future());
        while waiting.len() >= 1000 {
            waiting.next().await.unwrap().expect("confirmation");
        }
    }
    while let Some(ack) = waiting.next().await {
        ack.expect("confirmation");
    }
}

/// Reads the stream with a consumer of its own; with `output`, counts and
/// publishes each chunk's counts before acknowledging it.
async fn native(js: &jetstream::Context, input: &str, output: Option<String>, lines: u64) -> f64 {
    let stream = js.get_stream(input).await.unwrap();
    let name = format!("native-{}", output.is_some());
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1024)
        .messages()
        .await
        .unwrap();
    let mut read = 0u64;
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    while read < lines {
        let message = messages.next().await.unwrap().expect("reading");
        read += 1;
        if let Some(subject) = &output {
            let text = std::str::from_utf8(&message.payload).unwrap();
            for word in text.split_whitespace() {
                match counts.get_mut(word.as_bytes()) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(word.as_bytes().to_vec(), 1);
                    }
                }
            }
            if read % 100_000 == 0 || read == lines {
                let mut waiting = FuturesUnordered::new();
                for (word, n) in counts.drain() {
                    let body = format!("{}\t{n}", String::from_utf8_lossy(&word));
                    let ack = js.publish(subject.clone(), body.into()).await.unwrap();
                    waiting.push(ack.into_future());
                }
                while let Some(ack) = waiting.next().await {
                    ack.expect("confirmation");
                }
                message.ack().await.unwrap();
            }
        } else if read == lines {
            message.ack().await.unwrap();
        }
    }
    started.elapsed().as_secs_f64()
}

/// The real binary, timed from its consumer reading to its acknowledgement
/// floor reaching the end of the stream.
fn sluice(
    runtime: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    url: &str,
    input: &str,
    output: &str,
    lines: u64,
) -> f64 {
    let guests = support::guests();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name = "nats-bench"
batch_interval = "100ms"

[[sources]]
type = "nats"
url = "{url}"
stream = "{input}"
consumer = "sluice"

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "nats"
url = "{url}"
subject = "{output}"
jetstream = true
format = "text"
"#,
            guests.join("word_split.wasm").display(),
            guests.join("word_count.wasm").display()
        ),
    )
    .unwrap();
    let mut child = support::sluice_run(&pipeline)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let (reading_tx, reading_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(": reading") {
                let _ = reading_tx.send(Instant::now());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let Ok(started) = reading_rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("sluice did not start reading:\n{}", log.join().unwrap());
    };
    let finished = runtime.block_on(async {
        let stream = js.get_stream(input).await.unwrap();
        loop {
            if let Ok(info) = stream.consumer_info("sluice").await {
                if info.ack_floor.stream_sequence >= lines {
                    break Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = log.join().unwrap();
    assert!(
        log.contains(&format!("{lines} records in")),
        "sluice did not report every line:\n{log}"
    );
    finished.duration_since(started).as_secs_f64()
}
