//! `sluice serve` under load, over its real HTTP API:
//!
//! - `noisy`: tenant B's word count fed at a fixed rate through ingest,
//!   alone and beside tenant A running plugins that loop, grow without
//!   bound, trap and flood the log on six pipelines plus an API flood, in
//!   alternating rounds; B's total delay (p50, p99) and losses under each
//!   condition over all rounds of the same run.
//! - `density`: 100 tenants × 10 pipelines of two stages, with a trickle of
//!   data each: the time to create each pipeline (p50, p99), the first
//!   batch of a newly made pipeline, and the server's RSS and CPU once all
//!   are idle.
//! - `api`: `GET /v1/pipelines/{name}` per second from several clients
//!   while a pipeline runs, and that pipeline's delays with and without
//!   the load.
//!
//! Run: `cargo bench -p sluice --bench serve` (all three), or with
//! `SLUICE_BENCH_SERVE=noisy|density|api` for one; `SLUICE_BENCH_TENANTS`
//! (100) and `SLUICE_BENCH_PER_TENANT` (10) size `density`;
//! `SLUICE_BENCH_ROUNDS` (1) and `SLUICE_BENCH_SECONDS` (60 per condition
//! and round) size `noisy` (between rounds the hostile tenant is deleted,
//! which waits for its pipelines to finish what they hold: minutes).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap());
    }
}

fn start() -> Server {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-bench-serve-{}-{n}", std::process::id()));
    let data = dir.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sluice serve");
    let started = Instant::now();
    while request(port, "GET", "/v1/health", None, None, b"").is_none_or(|r| r.0 != 200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the service did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        child,
        port,
        data,
        admin,
    }
}

/// One request; (status, body as JSON or Null).
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    ct: Option<&str>,
    body: &[u8],
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(ct) = ct {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

impl Server {
    fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        request(self.port, method, path, Some(token), ct, body).expect("no answer")
    }

    fn tenant(&self, name: &str, quotas: Value) -> String {
        let (status, body) = self.call(
            &self.admin.clone(),
            "POST",
            "/v1/tenants",
            Some("application/json"),
            json!({ "name": name, "quotas": quotas })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    fn push(&self, token: &str, name: &str, file: &Path) {
        let bytes = std::fs::read(file).unwrap();
        let (status, body) = self.call(
            token,
            "PUT",
            &format!("/v1/plugins/{name}"),
            Some("application/wasm"),
            &bytes,
        );
        assert!(status == 201 || status == 200, "{body}");
    }

    fn apply(&self, token: &str, name: &str, text: &str) -> Duration {
        let started = Instant::now();
        let (status, body) = self.call(
            token,
            "PUT",
            &format!("/v1/pipelines/{name}"),
            Some("application/toml"),
            text.as_bytes(),
        );
        assert!(status == 201 || status == 200, "{name}: {body}");
        started.elapsed()
    }

    /// Sends lines, waiting out `429`s; false if the pipeline is gone.
    fn ingest(&self, token: &str, name: &str, lines: &str) -> bool {
        for _ in 0..200 {
            match self.call(
                token,
                "POST",
                &format!("/v1/pipelines/{name}/ingest"),
                Some("text/plain"),
                lines.as_bytes(),
            ) {
                (200, _) => return true,
                (429, _) => std::thread::sleep(Duration::from_millis(20)),
                _ => return false,
            }
        }
        false
    }

    fn status(&self, token: &str, name: &str) -> Value {
        self.call(token, "GET", &format!("/v1/pipelines/{name}"), None, b"")
            .1
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

fn wordcount(name: &str, interval: &str, memory: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"{interval}\"\n[[sources]]\ntype = \"http\"\n\
         [[stages]]\nname = \"split\"\nplugin = \"split\"\nmemory_limit = \"{memory}\"\n\
         [[stages]]\nname = \"count\"\nplugin = \"count\"\nmemory_limit = \"{memory}\"\n\
         [[sinks]]\ntype = \"null\"\n"
    )
}

fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Feeds `lines_per_s` lines to B for `secs`, in ten sends a second.
fn feed(server: &Server, token: &str, name: &str, lines_per_s: usize, secs: u64) -> usize {
    let maker_line = "the stream of records flows through the sluice gate into batches\n";
    let chunk = maker_line.repeat(lines_per_s / 10);
    let started = Instant::now();
    let mut sent = 0;
    for tick in 0..secs * 10 {
        let due = started + Duration::from_millis(100 * tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        assert!(server.ingest(token, name, &chunk), "ingest refused");
        sent += lines_per_s / 10;
    }
    sent
}

fn delays(status: &Value) -> (f64, f64) {
    let m = &status["metrics"];
    (
        m["p50"]["total_ms"].as_f64().unwrap_or(f64::NAN),
        m["p99"]["total_ms"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Tenant A's six hostile pipelines (a loop to its time limit, growth to
/// its memory limit, a trap, a log flood, a second loop, 20 M spins per
/// record) and its flood of ingest and API calls, until `stop`.
fn hostile(server: &Server, guests: &Path, tenant: &str, stop: Arc<AtomicBool>) {
    let a = server.tenant(tenant, json!({}));
    server.push(&a, "misbehave", &guests.join("misbehave.wasm"));
    for (i, (config, limits)) in [
        ("{ mode = \"loop\", when = \"*\" }", "time_limit = \"1s\""),
        (
            "{ mode = \"grow\", when = \"*\" }",
            "memory_limit = \"32MiB\"",
        ),
        ("{ mode = \"trap\", when = \"*\" }", ""),
        ("{ mode = \"chatty\", when = \"*\" }", ""),
        ("{ mode = \"loop\", when = \"*\" }", "time_limit = \"1s\""),
        (
            "{ mode = \"slow\", spin = 20000000 }",
            "time_limit = \"2s\"",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let text = format!(
            "name = \"bad{i}\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"http\"\n\
             [[stages]]\nname = \"m\"\nplugin = \"misbehave\"\nconfig = {config}\non_error = \"dead-letter\"\nretries = 0\n{limits}\n\
             [[sinks]]\ntype = \"null\"\n"
        );
        server.apply(&a, &format!("bad{i}"), &text);
    }
    let port = server.port;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for i in 0..6 {
                let _ = request(
                    port,
                    "POST",
                    &format!("/v1/pipelines/bad{i}/ingest"),
                    Some(&a),
                    Some("text/plain"),
                    b"boom\nboom\n",
                );
            }
            for _ in 0..20 {
                let _ = request(port, "GET", "/v1/pipelines", Some(&a), None, b"");
            }
        }
    });
}

/// B's word count alone and beside a hostile tenant A, in alternating
/// rounds (each round's A is a new tenant, so every round meets a hostile
/// tenant the service has not seen yet); B's delays are kept per condition
/// over all rounds.
fn noisy(guests: &Path) {
    let rounds: u64 = env_or("SLUICE_BENCH_ROUNDS", 1);
    let secs: u64 = env_or("SLUICE_BENCH_SECONDS", 60);
    let rate = 5_000;
    let server = start();
    let b = server.tenant("b", json!({}));
    server.push(&b, "split", &guests.join("word_split.wasm"));
    server.push(&b, "count", &guests.join("word_count.wasm"));
    let conditions = ["alone", "beside the hostile tenant"];
    let names = ["wc-alone", "wc-noisy"];
    for name in names {
        server.apply(&b, name, &wordcount(name, "100ms", "64MiB"));
    }
    let mut sent = [0usize; 2];
    for round in 0..rounds {
        for (c, name) in names.iter().enumerate() {
            let stop = Arc::new(AtomicBool::new(false));
            let a = format!("a{round}");
            if c == 1 {
                hostile(&server, guests, &a, stop.clone());
            }
            sent[c] += feed(&server, &b, name, rate, secs);
            stop.store(true, Ordering::Relaxed);
            if c == 1 && round + 1 < rounds {
                // The next round starts quiet: its pipelines drop what
                // they hold, waiting only for the plugin calls under way.
                let deleting = Instant::now();
                let (status, body) = server.call(
                    &server.admin.clone(),
                    "DELETE",
                    &format!("/v1/tenants/{a}"),
                    None,
                    b"",
                );
                assert_eq!(status, 204, "{body}");
                eprintln!(
                    "  round {}: hostile tenant deleted in {:.1} s",
                    round + 1,
                    deleting.elapsed().as_secs_f64()
                );
            }
            eprintln!("  round {}: {name} fed", round + 1);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "noisy neighbour: tenant B's word count at {rate} lines/s, 100 ms batches, {rounds} rounds of {secs} s per condition (2 stage workers, cpu_share 1 each):"
    );
    println!(
        "  {:<28} {:>8} {:>10} {:>8} {:>14} {:>14}",
        "B", "sent", "received", "batches", "total p50", "total p99"
    );
    let mut p99s = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let status = server.status(&b, name);
        let got = status["metrics"]["records_in"].as_u64().unwrap_or(0);
        let batches = status["metrics"]["batches"].as_u64().unwrap_or(0);
        let (p50, p99) = delays(&status);
        println!(
            "  {:<28} {:>8} {got:>10} {batches:>8} {p50:>11.1} ms {p99:>11.1} ms",
            conditions[c], sent[c]
        );
        p99s.push((p99, sent[c] as i64 - got as i64));
    }
    println!(
        "  p99 beside / alone: {:.2}×; lines lost: {}",
        p99s[1].0 / p99s[0].0,
        p99s[0].1 + p99s[1].1
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn density(guests: &Path) {
    let tenants: usize = env_or("SLUICE_BENCH_TENANTS", 100);
    let per: usize = env_or("SLUICE_BENCH_PER_TENANT", 10);
    let server = start();
    let rss_empty = server.rss_mib();
    let mut creates = Vec::new();
    let mut firsts = Vec::new();
    let mut tokens = Vec::new();
    let started = Instant::now();
    for t in 0..tenants {
        let token = server.tenant(&format!("t{t}"), json!({ "pipelines": per }));
        server.push(&token, "split", &guests.join("word_split.wasm"));
        server.push(&token, "count", &guests.join("word_count.wasm"));
        for p in 0..per {
            let name = format!("p{p}");
            // One in ten with 100 ms batches (its first batch is measured),
            // the rest with 1 s batches.
            let interval = if p == 0 { "100ms" } else { "1s" };
            creates.push(server.apply(&token, &name, &wordcount(&name, interval, "16MiB")));
            // The first batch of a new pipeline: from its first ingest to
            // its first records out.
            if p == 0 {
                let sent = Instant::now();
                assert!(server.ingest(&token, &name, "first words\n"));
                loop {
                    let status = server.status(&token, &name);
                    if status["metrics"]["records_out"].as_u64().unwrap_or(0) > 0 {
                        firsts.push(sent.elapsed());
                        break;
                    }
                    assert!(sent.elapsed() < Duration::from_secs(30), "no first batch");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        tokens.push(token);
        if (t + 1) % 20 == 0 {
            eprintln!(
                "  {} pipelines after {:.0} s, RSS {:.0} MiB",
                (t + 1) * per,
                started.elapsed().as_secs_f64(),
                server.rss_mib()
            );
        }
    }
    // A trickle: a line into every pipeline, then quiet.
    for (t, token) in tokens.iter().enumerate() {
        for p in 0..per {
            server.ingest(token, &format!("p{p}"), &format!("trickle {t} {p}\n"));
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss_busy = server.rss_mib();
    let pid = server.child.id().to_string();
    let before = support::cpu_seconds(&pid, false);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (support::cpu_seconds(&pid, false) - before) / 10.0 * 100.0;
    // Idle stages drop their instances after --idle-release (30 s).
    std::thread::sleep(Duration::from_secs(30));
    let rss_idle = server.rss_mib();
    let n = tenants * per;
    println!(
        "density: {tenants} tenants × {per} pipelines (http → word-split → word-count → null; one per tenant with 100 ms batches, the rest 1 s):"
    );
    println!(
        "  create a pipeline (PUT, validated, started): p50 {}, p99 {}, max {}",
        ms(quantile(creates.clone(), 0.5)),
        ms(quantile(creates.clone(), 0.99)),
        ms(quantile(creates, 1.0))
    );
    println!(
        "  first batch of a new pipeline with 100 ms batches (a record sent right after its PUT, to its output): p50 {}, p99 {}",
        ms(quantile(firsts.clone(), 0.5)),
        ms(quantile(firsts, 0.99))
    );
    println!(
        "  RSS: {rss_empty:.0} MiB empty, {rss_busy:.0} MiB with {n} pipelines just fed, {rss_idle:.0} MiB once idle instances are released"
    );
    println!("  CPU with {n} quiet pipelines: {idle_cpu:.1} % of one core");
}

fn api(guests: &Path) {
    let server = start();
    let t = server.tenant("api", json!({ "api_rate": 1_000_000 }));
    server.push(&t, "split", &guests.join("word_split.wasm"));
    server.push(&t, "count", &guests.join("word_count.wasm"));
    let mut rows = Vec::new();
    for load in [false, true] {
        let name = if load { "under-load" } else { "quiet" };
        server.apply(&t, name, &wordcount(name, "100ms", "64MiB"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut clients = Vec::new();
        if load {
            for _ in 0..4 {
                let (stop, done, port) = (stop.clone(), done.clone(), server.port);
                let token = t.clone();
                let name = name.to_string();
                clients.push(std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Some((200, _)) = request(
                            port,
                            "GET",
                            &format!("/v1/pipelines/{name}"),
                            Some(&token),
                            None,
                            b"",
                        ) {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        let started = Instant::now();
        feed(&server, &t, name, 5_000, 15);
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        std::thread::sleep(Duration::from_secs(1));
        let (p50, p99) = delays(&server.status(&t, name));
        rows.push((
            name,
            done.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs,
            p50,
            p99,
        ));
    }
    println!(
        "API: GET /v1/pipelines/{{name}} from 4 clients (a connection per request) while word count runs at 5,000 lines/s:"
    );
    for (name, rps, p50, p99) in rows {
        println!(
            "  {name:<12} {rps:>8.0} requests/s answered (200), pipeline total delay p50 {p50:.1} ms, p99 {p99:.1} ms"
        );
    }
    println!(
        "  (the tenant's `api_rate` quota is raised for this; by default a tenant gets 200 calls/s)"
    );
}

fn main() {
    let guests = support::guests();
    let which = std::env::var("SLUICE_BENCH_SERVE").unwrap_or_default();
    if which.is_empty() || which == "noisy" {
        noisy(&guests);
    }
    if which.is_empty() || which == "api" {
        api(&guests);
    }
    if which.is_empty() || which == "density" {
        density(&guests);
    }
}
