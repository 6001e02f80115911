//! The network sinks (`elasticsearch`, `object-store`, `http`) against a
//! native Rust client doing the same writes in the same run.
//!
//! Each case sends `SLUICE_BENCH_LINES` generated lines (default 200,000,
//! 10 words each) to a local server, every line a record, with no stage in
//! between, so what is measured is the sink's path: batching, encoding,
//! the requests and their answers.
//!
//! - **sluice**: the real binary runs `generator (count = N, rate = 0) →
//!   sink`, timed from its start to its exit (it ends when the generator
//!   has sent every line and every batch is acknowledged: start-up, about
//!   50 ms, is included);
//! - **native**: this process makes the same lines (the generator's own
//!   `LineMaker`) and writes them with the same client library: `_bulk`
//!   requests of 1,000 documents (the sink's default) for Elasticsearch,
//!   one object per 100,000 lines for S3, one POST per 100,000 lines for
//!   HTTP.
//!
//! Servers: Elasticsearch/OpenSearch at `OPENSEARCH_URL` and S3 at
//! `S3_ENDPOINT` (moto; bucket `sluice-bench` is made), each case left out
//! when its variable is unset; the HTTP receiver is an axum server in this
//! process that counts the lines it is sent.
//!
//! Run: `OPENSEARCH_URL=http://127.0.0.1:9200 S3_ENDPOINT=http://127.0.0.1:5000
//! cargo bench -p sluice --bench sinks`

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sluice::source::LineMaker;

const WORDS_PER_LINE: u32 = 10;

fn main() {
    let lines: u64 = std::env::var("SLUICE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-sinks-bench-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows: Vec<(String, f64, f64)> = Vec::new();

    if let Ok(url) = std::env::var("OPENSEARCH_URL") {
        let native = time(|| es_native(&runtime, &url, &format!("bench-native-{run}"), lines));
        let sluice = sluice_case(
            &dir,
            "es",
            lines,
            &format!("type = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"bench-sluice-{run}\"\n"),
        );
        rows.push(("elasticsearch (_bulk)".into(), native, sluice));
    } else {
        println!("(OPENSEARCH_URL not set: the elasticsearch case is left out)");
    }

    if let Ok(endpoint) = std::env::var("S3_ENDPOINT") {
        // SAFETY: set before any thread of ours reads the environment.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        }
        let store = s3_store(&endpoint);
        let _ = runtime.block_on(async {
            let client = reqwest::Client::new();
            client.put(format!("{endpoint}/sluice-bench")).send().await
        });
        let native = time(|| s3_native(&runtime, &store, &format!("native-{run}"), lines));
        let sluice = sluice_case(
            &dir,
            "s3",
            lines,
            &format!(
                "type = \"object-store\"\nurl = \"s3://sluice-bench/sluice-{run}\"\n\
                 endpoint = \"{endpoint}\"\nformat = \"text\"\n"
            ),
        );
        rows.push(("object-store (S3 PUT)".into(), native, sluice));
    } else {
        println!("(S3_ENDPOINT not set: the object-store case is left out)");
    }

    let (url, received) = http_receiver(&runtime);
    let native = time(|| http_native(&runtime, &url, lines));
    let after_native = received.swap(0, Ordering::Relaxed);
    assert_eq!(after_native, lines, "the receiver counted what native sent");
    let sluice = sluice_case(
        &dir,
        "http",
        lines,
        &format!("type = \"http\"\nurl = \"{url}\"\nformat = \"text\"\n"),
    );
    assert_eq!(
        received.load(Ordering::Relaxed),
        lines,
        "the receiver counted what sluice sent"
    );
    rows.push(("http (POST per batch)".into(), native, sluice));

    println!("generator → sink, {lines} lines of {WORDS_PER_LINE} words, every line a record");
    for (name, native, sluice) in &rows {
        let rate = |s: f64| lines as f64 / s;
        println!(
            "  {name:<24} native {:>9.0} lines/s ({native:.2} s)   sluice {:>9.0} lines/s ({sluice:.2} s)   ratio {:.2}",
            rate(*native),
            rate(*sluice),
            rate(*sluice) / rate(*native)
        );
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// The real binary over `generator → sink`, timed start to exit.
fn sluice_case(dir: &std::path::Path, name: &str, lines: u64, sink: &str) -> f64 {
    let pipeline = dir.join(format!("{name}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "name = \"bench-{name}\"\nbatch_interval = \"100ms\"\n\n[[sources]]\ntype = \"generator\"\n\
             rate = 0\ncount = {lines}\nwords_per_line = {WORDS_PER_LINE}\n\n[[sinks]]\n{sink}"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = support::sluice_run(&pipeline)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running sluice");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "sluice failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

/// `_bulk` requests of 1,000 documents, each line as the sink makes it
/// (`{"key": null, "value": …, "timestamp": …}`) under its own id.
fn es_native(runtime: &tokio::runtime::Runtime, url: &str, index: &str, lines: u64) {
    let client = reqwest::Client::new();
    let mut maker = LineMaker::new(1, WORDS_PER_LINE);
    let mut body = String::new();
    let mut sent = 0;
    while sent < lines {
        body.clear();
        let n = 1000.min(lines - sent);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        for i in 0..n {
            let line = maker.next_line();
            body.push_str(&format!(
                "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"n-{}\"}}}}\n",
                sent + i
            ));
            body.push_str(
                &serde_json::json!({"key": null, "value": line, "timestamp": now as u64})
                    .to_string(),
            );
            body.push('\n');
        }
        let answer = runtime.block_on(async {
            client
                .post(format!("{url}/_bulk"))
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await?
                .bytes()
                .await
        });
        let answer = answer.expect("bulk request");
        assert!(
            !answer.starts_with(b"{\"errors\":true"),
            "bulk errors: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
        sent += n;
    }
}

fn s3_store(endpoint: &str) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name("sluice-bench")
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

/// One object per 100,000 lines.
fn s3_native(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn object_store::ObjectStore>,
    prefix: &str,
    lines: u64,
) {
    let mut maker = LineMaker::new(1, WORDS_PER_LINE);
    let mut sent = 0;
    let mut part = 0;
    while sent < lines {
        let n = 100_000.min(lines - sent);
        let mut body = Vec::new();
        for _ in 0..n {
            body.extend_from_slice(maker.next_line().as_bytes());
            body.push(b'\n');
        }
        let path = object_store::path::Path::from(format!("{prefix}/part-{part:05}.txt"));
        runtime
            .block_on(store.put(&path, bytes::Bytes::from(body).into()))
            .expect("PUT");
        sent += n;
        part += 1;
    }
}

/// An axum server that counts the lines POSTed to it.
fn http_receiver(runtime: &tokio::runtime::Runtime) -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new()
        .route(
            "/ingest",
            axum::routing::post(move |body: bytes::Bytes| {
                let counter = counter.clone();
                async move {
                    let n = memchr::memchr_iter(b'\n', &body).count() as u64;
                    counter.fetch_add(n, Ordering::Relaxed);
                    "ok"
                }
            }),
        )
        // The native contender's POSTs carry 100,000 lines (~6 MB), over
        // axum's 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    runtime.spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received)
}

/// One POST per 100,000 lines.
fn http_native(runtime: &tokio::runtime::Runtime, url: &str, lines: u64) {
    let client = reqwest::Client::new();
    let mut maker = LineMaker::new(1, WORDS_PER_LINE);
    let mut sent = 0;
    while sent < lines {
        let n = 100_000.min(lines - sent);
        let mut body = Vec::new();
        for _ in 0..n {
            body.extend_from_slice(maker.next_line().as_bytes());
            body.push(b'\n');
        }
        runtime
            .block_on(async { client.post(url).body(body).send().await?.error_for_status() })
            .expect("POST");
        sent += n;
    }
}
