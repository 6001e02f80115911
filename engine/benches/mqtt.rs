//! MQTT → Wasm → MQTT word count, against native Rust doing the same round
//! trip with the same client library in the same run.
//!
//! Needs a mosquitto at `MQTT_URL` that neither limits QoS 1 messages in
//! flight nor queued (`max_inflight_messages 0`, `max_queued_messages 0`;
//! README, "ZeroMQ, MQTT and NATS"). Each contender has a persistent
//! session (clean session off) subscribed at QoS 1 while it is away; then
//! `SLUICE_BENCH_LINES` lines (default 200,000, 10 words each) are
//! published at QoS 1, so the broker holds them queued for every session, as
//! a topic holds a Kafka consumer's backlog. Each contender then connects
//! and drains its queue:
//!
//! - **read only**: a client that takes every message and acknowledges it
//!   at once: what the broker itself delivers;
//! - **native**: a client that splits and counts each chunk of up to
//!   100,000 messages in a hash map and publishes the counts (QoS 1, waiting
//!   for the broker's confirmations) before acknowledging the chunk's
//!   messages, as the engine's source does after a checkpoint;
//! - **sluice**: the real binary, `mqtt → word-split → word-count → mqtt`,
//!   timed from its connection until a subscriber here has counts adding
//!   up to every word published.
//!
//! Run: `MQTT_URL=mqtt://127.0.0.1:1883 cargo bench -p sluice --bench mqtt`

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use sluice::source::LineMaker;

const WORDS_PER_LINE: u32 = 10;

fn main() {
    let Ok(url) = std::env::var("MQTT_URL") else {
        eprintln!("mqtt bench: MQTT_URL is not set; start mosquitto (README) and set it");
        std::process::exit(2);
    };
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (host, port) = url
        .strip_prefix("mqtt://")
        .and_then(|a| a.rsplit_once(':'))
        .expect("MQTT_URL is mqtt://host:port");
    let port: u16 = port.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let input = format!("bench/{run}/in");
    let ids = [
        format!("bare-{run}"),
        format!("native-{run}"),
        format!("sluice-{run}"),
    ];
    runtime.block_on(async {
        for id in &ids {
            subscribe_away(host, port, id, &input).await;
        }
        let loaded = Instant::now();
        publish_lines(host, port, &input, lines).await;
        println!(
            "published {lines} lines to {input} ({} sessions queue them) in {:.1} s",
            ids.len(),
            loaded.elapsed().as_secs_f64()
        );
    });
    let bare = runtime.block_on(drain(host, port, &ids[0], None, lines));
    let native = runtime.block_on(drain(
        host,
        port,
        &ids[1],
        Some(format!("bench/{run}/native")),
        lines,
    ));
    let sluice = sluice(
        &runtime,
        host,
        port,
        &url,
        &ids[2],
        &input,
        &format!("bench/{run}/sluice"),
        lines,
    );
    let rate = |secs: f64| lines as f64 / secs;
    println!("mqtt → word count → mqtt, {lines} lines of {WORDS_PER_LINE} words (QoS 1)");
    for (name, secs) in [
        ("read only (no work)", bare),
        ("native Rust (rumqttc)", native),
        ("sluice (Wasm stages)", sluice),
    ] {
        println!("  {name:<22} {:>10.0} lines/s  ({secs:.3} s)", rate(secs));
    }
    println!(
        "  ratio sluice/native    {:>10.2}",
        rate(sluice) / rate(native)
    );
}

fn options(host: &str, port: u16, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, host, port);
    o.set_clean_session(clean)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000)
        .set_keep_alive(Duration::from_secs(30));
    o
}

/// Leaves a persistent session subscribed to `topic` at QoS 1.
async fn subscribe_away(host: &str, port: u16, id: &str, topic: &str) {
    let (client, mut events) = AsyncClient::new(options(host, port, id, false), 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("subscribing") {
            break;
        }
    }
    client.disconnect().await.unwrap();
    while !matches!(
        events.poll().await,
        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
    ) {}
}

/// Publishes `lines` generated lines at QoS 1 and waits for every PUBACK.
async fn publish_lines(host: &str, port: u16, topic: &str, lines: u64) {
    let (client, mut events) = AsyncClient::new(options(host, port, "bench-loader", true), 1000);
    let topic = topic.to_string();
    let sender = tokio::spawn(async move {
        let mut maker = LineMaker::new(1, WORDS_PER_LINE);
        for _ in 0..lines {
            let line = maker.next_line().to_string();
            client
                .publish(&topic, QoS::AtLeastOnce, false, line)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < lines {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publishing") {
            acked += 1;
        }
    }
    let _ = sender.await;
}

/// Connects as `id` and takes every queued message; with `output`, counts
/// words per chunk and publishes the counts before acknowledging it.
async fn drain(host: &str, port: u16, id: &str, output: Option<String>, lines: u64) -> f64 {
    let mut o = options(host, port, id, false);
    o.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(o, 200_000);
    let started = Instant::now();
    let mut read = 0u64;
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut unacked: Vec<Publish> = Vec::new();
    let mut pending_acks = 0u64;
    while read < lines || pending_acks > 0 {
        match events.poll().await.expect("draining") {
            Event::Incoming(Packet::Publish(p)) => {
                read += 1;
                let Some(_) = &output else {
                    client.try_ack(&p).unwrap();
                    continue;
                };
                for word in std::str::from_utf8(&p.payload).unwrap().split_whitespace() {
                    match counts.get_mut(word.as_bytes()) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(word.as_bytes().to_vec(), 1);
                        }
                    }
                }
                unacked.push(p);
                if read % 100_000 == 0 || read == lines {
                    for (word, n) in counts.drain() {
                        let body = format!("{}\t{n}", String::from_utf8_lossy(&word));
                        client
                            .try_publish(output.as_deref().unwrap(), QoS::AtLeastOnce, false, body)
                            .unwrap();
                        pending_acks += 1;
                    }
                    for p in unacked.drain(..) {
                        client.try_ack(&p).unwrap();
                    }
                }
            }
            Event::Incoming(Packet::PubAck(_)) => pending_acks -= 1,
            _ => {}
        }
    }
    started.elapsed().as_secs_f64()
}

/// The real binary, timed from its connection until the counts it
/// published add up to every word.
#[allow(clippy::too_many_arguments)]
fn sluice(
    runtime: &tokio::runtime::Runtime,
    host: &str,
    port: u16,
    url: &str,
    id: &str,
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
name = "mqtt-bench"
batch_interval = "100ms"

[[sources]]
type = "mqtt"
url = "{url}"
topics = ["{input}"]
client_id = "{id}"

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "mqtt"
url = "{url}"
topic = "{output}"
format = "text"
"#,
            guests.join("word_split.wasm").display(),
            guests.join("word_count.wasm").display()
        ),
    )
    .unwrap();
    // A subscriber to the counts, before sluice publishes any.
    let words = lines * u64::from(WORDS_PER_LINE);
    let (counted_tx, counted_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let subscriber = {
        let (host, output) = (host.to_string(), output.to_string());
        runtime.spawn(async move {
            let (client, mut events) =
                AsyncClient::new(options(&host, port, &format!("{output}-reader"), true), 10);
            client.subscribe(&output, QoS::AtLeastOnce).await.unwrap();
            let mut sum = 0u64;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        sum += text.rsplit_once('\t').unwrap().1.parse::<u64>().unwrap();
                        if sum >= words {
                            let _ = counted_tx.send((Instant::now(), sum));
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("counts subscriber: {e}"),
                }
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("subscribing to the counts");
    let mut child = support::sluice_run(&pipeline)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let (connected_tx, connected_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("connected (session") {
                let _ = connected_tx.send(Instant::now());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let Ok(started) = connected_rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("sluice did not connect:\n{}", log.join().unwrap());
    };
    let Ok((finished, sum)) = counted_rx.recv_timeout(Duration::from_secs(600)) else {
        let _ = child.kill();
        panic!("the counts did not add up:\n{}", log.join().unwrap());
    };
    subscriber.abort();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(sum, words, "sluice counted more words than published");
    finished.duration_since(started).as_secs_f64()
}
