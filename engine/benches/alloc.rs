//! Heap allocations per record in sources, sinks and the stage path.
//!
//! Each case is a small pipeline run in this process with a counting global
//! allocator, twice: over `SMALL` and over `LARGE` records. The difference
//! between the two runs, divided by the difference in records, is what one
//! more record costs; start-up, per-batch and per-chunk allocations (a few
//! per 1,024 records) cancel out or shrink to a few hundredths. A source or
//! sink that allocates once per record shows as 1.0 or more.
//!
//! Only the Rust heap is counted: librdkafka's own C allocations (it copies
//! each produced message, and keeps each fetched one) are not. Threads a
//! case leaves behind (the socket feeder, a Kafka client closing) count in
//! whichever run is under way; the difference of two runs cancels most of
//! it.
//!
//! Run: `cargo bench -p sluice --bench alloc`; with `KAFKA_BOOTSTRAP` set
//! (a Kafka-protocol broker, see the README) the Kafka sink and source join.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use sluice::config::{FolderBase, PipelineFile};
use sluice::pipeline::Pipeline;
use sluice::plugin::PluginHost;
use sluice::source::LineMaker;

/// Counts every allocation and reallocation made through the Rust heap.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to `System` unchanged; only counters are
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: Counting = Counting;

const SMALL: u64 = 200_000;
const LARGE: u64 = 1_000_000;
const WORDS: u32 = 10;

/// What one run of a case took.
struct Taken {
    allocations: u64,
    bytes: u64,
    seconds: f64,
}

/// The parts of a pipeline file a case changes.
struct Case {
    name: &'static str,
    /// `[[sources]]` and anything it needs, for `records` records, in
    /// `dir`; may start a server that feeds it.
    source: fn(dir: &Path, records: u64) -> String,
    /// `[[stages]]` (or nothing) and `[[sinks]]`.
    rest: fn(dir: &Path, guests: &Path) -> String,
    /// A source that never ends: stop the pipeline once this many records
    /// reached the sinks.
    endless: bool,
}

fn generator(_: &Path, records: u64) -> String {
    format!(
        "[[sources]]\ntype = \"generator\"\nrate = 0\ncount = {records}\nwords_per_line = {WORDS}\n"
    )
}

fn lines(records: u64) -> Vec<u8> {
    let mut maker = LineMaker::new(1, WORDS);
    let mut text = Vec::new();
    for _ in 0..records {
        text.extend_from_slice(maker.next_line().as_bytes());
        text.push(b'\n');
    }
    text
}

fn directory_source(dir: &Path, records: u64) -> String {
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("lines.txt"), lines(records)).unwrap();
    "[[sources]]\ntype = \"directory\"\npath = \"input\"\nwatch = false\n".into()
}

fn socket_source(_: &Path, records: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let text = lines(records);
    std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(&text).unwrap();
    });
    format!("[[sources]]\ntype = \"socket\"\naddress = \"{address}\"\nreconnect = false\n")
}

fn kafka_source(_: &Path, _records: u64) -> String {
    format!(
        "[[sources]]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{}\"]\ngroup = \"sluice-alloc-{}-{}\"\nstart = \"earliest\"\n",
        brokers(),
        kafka_topic(),
        std::process::id(),
        GROUP.fetch_add(1, Relaxed)
    )
}

fn null_sink(_: &Path, _: &Path) -> String {
    "[[sinks]]\ntype = \"null\"\n".into()
}

fn text_files(_: &Path, _: &Path) -> String {
    "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"text\"\n".into()
}

fn jsonl_files(_: &Path, _: &Path) -> String {
    "[[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n".into()
}

fn kafka_sink(_: &Path, _: &Path) -> String {
    format!(
        "[[sinks]]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{}\"\n",
        brokers(),
        kafka_topic()
    )
}

fn uppercase_stage(_: &Path, guests: &Path) -> String {
    format!(
        "[[stages]]\nname = \"upper\"\nplugin = '{}'\n\n[[sinks]]\ntype = \"null\"\n",
        guests.join("uppercase.wasm").display()
    )
}

fn brokers() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap()
}

/// The topic the Kafka sink case writes and the Kafka source case reads:
/// one per run of the bench, per size.
fn kafka_topic() -> String {
    format!("sluice-alloc-{}-{}", std::process::id(), SIZE.load(Relaxed))
}

static SIZE: AtomicU64 = AtomicU64::new(0);
static GROUP: AtomicU64 = AtomicU64::new(0);

fn run(case: &Case, records: u64, guests: &Path, runtime: &tokio::runtime::Runtime) -> Taken {
    SIZE.store(records, Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"alloc\"\nbatch_interval = \"100ms\"\n\n{}\n{}",
        (case.source)(dir.path(), records),
        (case.rest)(dir.path(), guests)
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, &text).unwrap();
    let spec = PipelineFile::parse(&path, text)
        .unwrap()
        .resolve(&FolderBase::of_file(&path))
        .unwrap();
    let host = PluginHost::new().unwrap();
    let pipeline = {
        let _guard = runtime.enter();
        Pipeline::build(&spec, &host).unwrap()
    };
    let metrics = pipeline.metrics();
    let (stop, stopped) = watch::channel(false);
    let handle = runtime.handle().clone();
    let (allocations, bytes) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    let started = Instant::now();
    let thread = std::thread::spawn(move || pipeline.run(&handle, stopped));
    if case.endless {
        while metrics.totals().records_out < records {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.send(true).unwrap();
    }
    let summary = thread.join().unwrap().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let taken = Taken {
        allocations: ALLOCATIONS.load(Relaxed) - allocations,
        bytes: BYTES.load(Relaxed) - bytes,
        seconds,
    };
    let out = metrics.totals().records_out;
    assert_eq!(out, records, "{}: {summary:?}", case.name);
    taken
}

fn main() {
    let guests = support::guests();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cases = vec![
        Case {
            name: "generator → null",
            source: generator,
            rest: null_sink,
            endless: false,
        },
        Case {
            name: "directory (a file of lines) → null",
            source: directory_source,
            rest: null_sink,
            endless: false,
        },
        Case {
            name: "socket → null",
            source: socket_source,
            rest: null_sink,
            endless: false,
        },
        Case {
            name: "generator → directory, text",
            source: generator,
            rest: text_files,
            endless: false,
        },
        Case {
            name: "generator → directory, jsonl",
            source: generator,
            rest: jsonl_files,
            endless: false,
        },
        Case {
            name: "generator → uppercase (Wasm) → null",
            source: generator,
            rest: uppercase_stage,
            endless: false,
        },
    ];
    if std::env::var_os("KAFKA_BOOTSTRAP").is_some() {
        cases.push(Case {
            name: "generator → kafka",
            source: generator,
            rest: kafka_sink,
            endless: false,
        });
        cases.push(Case {
            name: "kafka → null (the topic just written)",
            source: kafka_source,
            rest: null_sink,
            endless: true,
        });
    } else {
        println!("(KAFKA_BOOTSTRAP not set: the Kafka cases are left out)");
    }
    println!(
        "lines of {WORDS} words; per extra record between runs of {SMALL} and {LARGE} records"
    );
    println!(
        "  {:<42} {:>12} {:>14} {:>12}",
        "case", "allocations", "bytes", "lines/s"
    );
    for case in &cases {
        let small = run(case, SMALL, &guests, &runtime);
        let large = run(case, LARGE, &guests, &runtime);
        let extra = (LARGE - SMALL) as f64;
        println!(
            "  {:<42} {:>12.3} {:>14.1} {:>12.0}",
            case.name,
            (large.allocations as f64 - small.allocations as f64) / extra,
            (large.bytes as f64 - small.bytes as f64) / extra,
            LARGE as f64 / large.seconds,
        );
    }
}
