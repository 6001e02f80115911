//! `/metrics` and the dashboard at scale: a thousand pipelines, and 10 ms
//! batches.
//!
//! In process (the engine's own telemetry code):
//! - what a batch costs the hot path: the `BatchDone` event (counters,
//!   histograms, the timeline, the recent-batches ring; the log line is
//!   filtered out) for a batch of three stages, ns per batch;
//! - 1,000 pipelines of three stages, each with 30 s of 10 ms batches
//!   behind it: the `/metrics` page for all of them, the dashboard's list
//!   (a page of 50, with aggregates over the 1,000) and one pipeline's
//!   detail — time to build each and its size.
//!
//! End to end: `sluice run --metrics` with 1,000 pipelines (generator at
//! 20 lines/s → null, 100 ms batches) and a word count at 10 ms batches
//! (generator at 20,000 lines/s → word-split → word-count → null): the
//! same three fetched over HTTP, the process's memory, and, when
//! `chromedriver` and Chromium are installed, the page in headless
//! Chromium — time to the list drawn, to the word count's page drawn, and
//! the page's own redraw time per poll.
//!
//! Run: `cargo bench -p sluice --bench dashboard` (`SLUICE_BENCH_PIPELINES`
//! changes the 1,000).

mod support;

#[path = "../../tests/e2e/observe/browser.rs"]
#[allow(dead_code)]
mod browser;
#[path = "../../tests/e2e/observe/http.rs"]
#[allow(dead_code)]
mod http;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::dashboard::{ListQuery, data};
use sluice::supervisor::{PipelineInfo, PipelineKey, RunState};
use sluice::telemetry::events::BatchDone;
use sluice::telemetry::expose::{self, Exposed};
use sluice::telemetry::{BatchMetrics, Labels, PipelineMetrics, Reporter, Shape, StageMetrics};

fn shape(name: &str) -> Shape {
    Shape {
        labels: Labels {
            tenant: Some(format!("tenant-{}", name.len() % 7)),
            pipeline: name.to_string(),
        },
        interval: Duration::from_millis(10),
        stages: vec!["parse".into(), "enrich".into(), "count".into()],
        sources: vec!["kafka-0".into()],
        sinks: vec!["kafka-0".into()],
        queue_capacity: 16,
    }
}

fn batch(id: u64, time_ms: u64) -> BatchMetrics {
    let version: Arc<str> = "plugin.wasm@0123456789abcdef".into();
    BatchMetrics {
        id,
        time_ms,
        records_in: 100,
        records_out: 90,
        input_rate: 10_000.0,
        scheduling_delay: Duration::from_micros(300 + id % 700),
        processing_time: Duration::from_micros(2000 + id % 3000),
        total_delay: Duration::from_micros(2300 + id % 3700),
        latency: Some(Duration::from_millis(12)),
        delivery: Duration::from_micros(400),
        stages: ["parse", "enrich", "count"]
            .iter()
            .enumerate()
            .map(|(index, name)| StageMetrics {
                index,
                name: (*name).into(),
                version: version.clone(),
                records_in: 100,
                records_out: 90,
                failed: 1,
                busy: Duration::from_micros(500),
            })
            .collect(),
        pipeline_input: true,
        pipeline_output: true,
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64() * 1000.0)
}

fn in_process(pipelines: usize) {
    // The hot path: one batch done, as the sink thread emits it.
    let m = PipelineMetrics::new(shape("hot"));
    let mut reporter = Reporter::new(m.labels.clone(), m.interval);
    let n = 200_000u64;
    let figures: Vec<BatchMetrics> = (0..1000)
        .map(|i| batch(i, 1_700_000_000_000 + i * 10))
        .collect();
    let started = Instant::now();
    for i in 0..n {
        let mut b = figures[(i % 1000) as usize].clone();
        b.id = i;
        b.time_ms = 1_700_000_000_000 + i * 10;
        BatchDone {
            metrics: &m,
            reporter: &mut reporter,
            batch: &b,
        }
        .emit();
    }
    let with_clone = started.elapsed().as_nanos() as f64 / n as f64;
    let started = Instant::now();
    for i in 0..n {
        std::hint::black_box(figures[(i % 1000) as usize].clone());
    }
    let clone_only = started.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "BatchDone (3 stages, log filtered out): {:.0} ns per batch ({:.0} ns with the figures' own clone)",
        with_clone - clone_only,
        with_clone
    );

    let infos: Vec<PipelineInfo> = (0..pipelines)
        .map(|i| {
            let name = format!("pipeline-{i:04}");
            let metrics = PipelineMetrics::new(shape(&name));
            let mut reporter = Reporter::new(metrics.labels.clone(), metrics.interval);
            let now = sluice::batch::now_ms();
            for k in 0..3000u64 {
                let b = batch(k, now - 30_000 + k * 10);
                BatchDone {
                    metrics: &metrics,
                    reporter: &mut reporter,
                    batch: &b,
                }
                .emit();
            }
            PipelineInfo {
                key: PipelineKey {
                    tenant: metrics.labels.tenant.clone(),
                    name,
                },
                state: RunState::Running,
                stages: Vec::new(),
                metrics,
                tasks: None,
            }
        })
        .collect();
    let (text, ms) = time(|| {
        let exposed: Vec<Exposed<'_>> = infos
            .iter()
            .map(|p| Exposed {
                metrics: &p.metrics,
                up: true,
            })
            .collect();
        expose::render(&exposed, true)
    });
    println!(
        "{pipelines} pipelines: /metrics {:.1} ms, {} KiB, {} samples",
        ms,
        text.len() / 1024,
        text.lines().filter(|l| !l.starts_with('#')).count()
    );
    let query = ListQuery {
        sort: Some("delay".into()),
        ..ListQuery::default()
    };
    let (list, ms) = time(|| data::list(&infos, &query).to_string());
    println!(
        "  list (50 rows, sorted by delay): {:.1} ms, {} KiB",
        ms,
        list.len() / 1024
    );
    let (detail, ms) = time(|| data::detail(&infos[0]).to_string());
    println!(
        "  one pipeline's detail (10 ms batches): {:.1} ms, {} KiB",
        ms,
        detail.len() / 1024
    );
}

fn end_to_end(pipelines: usize) {
    let guests = support::guests();
    let scratch = std::env::temp_dir().join(format!("sluice-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut files = Vec::new();
    for i in 0..pipelines {
        let path = scratch.join(format!("p{i:04}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"idle-{i:04}\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"generator\"\nrate = 20\n[[sinks]]\ntype = \"null\"\n"
            ),
        )
        .unwrap();
        files.push(path);
    }
    let busy = scratch.join("busy.toml");
    support::wordcount_pipeline(
        &busy,
        "wordcount",
        "10ms",
        1 << 40,
        10,
        &guests,
        "word_count.wasm",
    );
    let text = std::fs::read_to_string(&busy)
        .unwrap()
        .replace("rate = 0", "rate = 20000");
    std::fs::write(&busy, text).unwrap();
    files.push(busy);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .args(&files)
        .args(["--control", "off", "--no-watch", "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "warn,sluice=info")
        .env("SLUICE_RUNTIME_DIR", scratch.join("runtime"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("/metrics, dashboard on"))
        .expect("sluice names its metrics address");
    let address = line
        .split("metrics on http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let token_file = line
        .split("token in ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    // Let every pipeline run a while, the word count's timeline fill.
    std::thread::sleep(Duration::from_secs(20));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (what, path, token) in [
        ("/metrics", "/metrics".to_string(), None),
        (
            "list",
            "/ui/api/pipelines?sort=delay".to_string(),
            Some(token.as_str()),
        ),
        (
            "word count's detail",
            "/ui/api/pipelines/wordcount".to_string(),
            Some(token.as_str()),
        ),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let (r, ms) = time(|| http::get(&address, &path, token));
            assert_eq!(r.status, 200, "{path}");
            size = r.body.len();
            times.push(ms);
        }
        println!(
            "  {what}: {:.1} ms (median of 5 over HTTP), {} KiB",
            median(times),
            size / 1024
        );
    }
    let metrics = http::get(&address, "/metrics", None).text();
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "  sluice's resident memory with {} pipelines: {:.0} MiB",
        pipelines + 1,
        rss / 1048576.0
    );

    let has_browser = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_browser {
        let b = browser::Browser::start(1400, 1000);
        let started = Instant::now();
        b.goto(&format!("http://{address}/ui/#token={token}"));
        b.wait_for(
            "the list",
            Duration::from_secs(30),
            "return document.querySelectorAll('#pipelines tbody tr[data-pipeline]').length === 50",
        );
        let list_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        b.eval("location.hash = '#/p//wordcount'; return true");
        b.wait_for(
            "the word count's page",
            Duration::from_secs(30),
            "return document.querySelectorAll('#row-total-delay svg').length === 2",
        );
        let detail_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut draws = Vec::new();
        let mut seen = String::new();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let now =
                b.eval("return document.body.dataset.draws + ' ' + document.body.dataset.drawMs");
            let now = now.as_str().unwrap_or("").to_string();
            if now != seen {
                if let Some(ms) = now.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()) {
                    draws.push(ms);
                }
                seen = now;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let bytes = b.eval(
            "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
               .filter(e => !e.name.includes('/api/')).reduce((n, e) => n + e.transferSize, 0)",
        );
        let severe: Vec<String> = b
            .console()
            .into_iter()
            .filter(|l| l.starts_with("SEVERE"))
            .collect();
        println!(
            "  Chromium: list drawn {:.0} ms after navigation, the word count's page {:.0} ms after the click; \
             redraw per poll {:.1} ms (median of {}), page {} bytes, console errors: {}",
            list_ms,
            detail_ms,
            if draws.is_empty() {
                f64::NAN
            } else {
                median(draws.clone())
            },
            draws.len(),
            bytes,
            severe.len()
        );
    } else {
        println!("  (no chromedriver: the page was not timed)");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&scratch);
}

fn main() {
    let pipelines: usize = std::env::var("SLUICE_BENCH_PIPELINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    in_process(pipelines);
    println!(
        "end to end, `sluice run` with {pipelines} pipelines at 100 ms and a word count at 10 ms:"
    );
    end_to_end(pipelines);
}
