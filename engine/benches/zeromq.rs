//! ZeroMQ → Wasm word count, against native Rust doing the same in the same
//! run.
//!
//! No server: a PUSH socket in this process (the `zeromq` crate, as the
//! engine's source uses) sends `SLUICE_BENCH_LINES` lines (default
//! 1,000,000, 10 words each) as fast as the receiver takes them, to:
//!
//! - **read only**: a PULL socket in this process that receives every
//!   message and does nothing with it: what the transport itself carries;
//! - **native**: a PULL socket in this process that splits and counts each
//!   chunk of up to 100,000 lines in a hash map and writes the counts of
//!   each chunk as a JSON-lines file into a folder, as the directory sink
//!   does;
//! - **sluice**: the real binary, `zeromq (PULL, bound) → word-split →
//!   word-count → directory`, timed from the first message sent until the
//!   counts in its output folder add up to every word sent.
//!
//! Run: `cargo bench -p sluice --bench zeromq`

mod support;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::source::LineMaker;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

const WORDS_PER_LINE: u32 = 10;

fn main() {
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut maker = LineMaker::new(1, WORDS_PER_LINE);
    let input: Vec<Bytes> = (0..lines)
        .map(|_| Bytes::from(maker.next_line().to_string()))
        .collect();
    let bare = runtime.block_on(in_process(&input, false));
    let native = runtime.block_on(in_process(&input, true));
    let sluice = sluice(&runtime, &input);
    let rate = |secs: f64| lines as f64 / secs;
    println!("zeromq → word count → files, {lines} lines of {WORDS_PER_LINE} words");
    for (name, secs) in [
        ("read only (no work)", bare),
        ("native Rust (zeromq)", native),
        ("sluice (Wasm stages)", sluice),
    ] {
        println!("  {name:<22} {:>10.0} lines/s  ({secs:.3} s)", rate(secs));
    }
    println!(
        "  ratio sluice/native    {:>10.2}",
        rate(sluice) / rate(native)
    );
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends every line to `endpoint` (connecting), as fast as it is taken.
async fn push(endpoint: String, input: Vec<Bytes>) {
    let mut socket = zeromq::PushSocket::new();
    socket
        .connect(&endpoint)
        .await
        .expect("connecting the pusher");
    for line in input {
        socket.send(ZmqMessage::from(line)).await.expect("sending");
    }
    // Let the last messages leave before the socket goes.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Receives every line in this process; with `count`, counts words per
/// chunk and writes each chunk's counts as a file.
async fn in_process(input: &[Bytes], count: bool) -> f64 {
    let endpoint = format!("tcp://127.0.0.1:{}", port());
    let mut pull = zeromq::PullSocket::new();
    pull.bind(&endpoint).await.expect("binding");
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let pusher = tokio::spawn(push(endpoint, input.to_vec()));
    let mut received = 0;
    let mut chunk = 0;
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    while received < input.len() {
        let message = pull.recv().await.expect("receiving");
        received += 1;
        if !count {
            continue;
        }
        let text = std::str::from_utf8(message.get(0).unwrap()).unwrap();
        for word in text.split_whitespace() {
            match counts.get_mut(word.as_bytes()) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(word.as_bytes().to_vec(), 1);
                }
            }
        }
        if received % 100_000 == 0 || received == input.len() {
            write_counts(out.path(), chunk, &counts);
            counts.clear();
            chunk += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    pusher.abort();
    secs
}

fn write_counts(dir: &Path, chunk: u64, counts: &HashMap<Vec<u8>, u64>) {
    let mut text = Vec::new();
    for (word, n) in counts {
        let _ = writeln!(
            text,
            "{{\"key\":{:?},\"value\":\"{n}\"}}",
            String::from_utf8_lossy(word)
        );
    }
    std::fs::write(dir.join(format!("chunk-{chunk}.jsonl")), text).unwrap();
}

/// The real binary, timed from the first message sent until its output
/// counts every word.
fn sluice(runtime: &tokio::runtime::Runtime, input: &[Bytes]) -> f64 {
    let guests = support::guests();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", port());
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name = "zeromq-bench"
batch_interval = "100ms"

[[sources]]
type = "zeromq"
endpoint = "{endpoint}"
bind = true

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "directory"
path = "out"
format = "jsonl"
"#,
            guests.join("word_split.wasm").display(),
            guests.join("word_count.wasm").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = support::sluice_run(&pipeline)
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("running sluice");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(Instant::now() < deadline, "sluice did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let words = input.len() as u64 * u64::from(WORDS_PER_LINE);
    let started = Instant::now();
    let pusher = runtime.spawn(push(endpoint, input.to_vec()));
    let out = dir.path().join("out");
    loop {
        if support::counted_words(&out) >= words {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sluice exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    pusher.abort();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        support::counted_words(&out),
        words,
        "sluice counted more words than sent"
    );
    secs
}
