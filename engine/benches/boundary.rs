//! How a batch crosses the host/guest boundary, measured.
//!
//! The same flatMap (split lines into words, one output record per word)
//! runs four ways on the same batches:
//! - `native`: plain Rust in this process, producing columnar output;
//! - `wasm-rows`: a component taking and returning `list<row>` (a record
//!   per element, with a key option, a value list and a timestamp);
//! - `wasm-columns`: the same component taking and returning one list per
//!   field (bytes + offsets + timestamps);
//! - `sluice-word-split`: the shipped `word-split` plugin through the
//!   engine's own instance API and the `sluice:plugin` batch layout.
//!
//! for small (~20 byte) and large (~250 byte) lines and batches of 1 to
//! 10,000 lines. Run: `cargo bench -p sluice --bench boundary`. The guests
//! are built first (`plugins/Cargo.toml`, wasm32-wasip2).

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use sluice::batch::Records;
use sluice::plugin::{CallInfo, Grants, Instance, Limits, LogTag, PluginHost, StateView};
use sluice::source::LineMaker;

mod layouts {
    wasmtime::component::bindgen!({
        path: "../tests/plugins/layouts/wit",
        world: "layouts",
    });
}
use layouts::exports::bench::layouts::split::{Columns, Row};

use support::WasiHost as Host;

fn lines(count: usize, words: u32) -> Vec<String> {
    let mut maker = LineMaker::new(7, words);
    (0..count).map(|_| maker.next_line().to_string()).collect()
}

fn to_columns(lines: &[String]) -> Columns {
    let mut c = Columns {
        data: Vec::new(),
        offsets: vec![0],
        timestamps: Vec::with_capacity(lines.len()),
    };
    for l in lines {
        c.data.extend_from_slice(l.as_bytes());
        c.offsets.push(c.data.len() as u32);
        c.timestamps.push(1);
    }
    c
}

fn to_rows(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .map(|l| Row {
            key: None,
            value: l.as_bytes().to_vec(),
            timestamp: 1,
        })
        .collect()
}

fn to_records(lines: &[String]) -> Records {
    let mut r = Records::default();
    for l in lines {
        r.push_value(l.as_bytes(), 1);
    }
    r
}

/// The native baseline: the same split, into the same columnar output.
fn native_split(input: &Records) -> Records {
    let mut out = Records::default();
    for rec in input.iter() {
        let text = std::str::from_utf8(rec.value()).unwrap();
        for word in text.split_whitespace() {
            out.push_value(word.as_bytes(), rec.timestamp());
        }
    }
    out
}

fn boundary(c: &mut Criterion) {
    let dir = support::guests();
    let mut config = Config::new();
    config.concurrency_support(false);
    let engine = Engine::new(&config).unwrap();
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    let component = Component::from_file(&engine, dir.join("layouts.wasm")).unwrap();
    let mut store = Store::new(&engine, Host::new());
    let guest = layouts::Layouts::instantiate(&mut store, &component, &linker).unwrap();
    let split = guest.bench_layouts_split();

    let host = PluginHost::new().unwrap();
    let word_split = host.load(&dir.join("word_split.wasm")).unwrap();
    let tag = Arc::new(LogTag {
        pipeline: "bench".into(),
        stage: "split".into(),
        plugin: word_split.label(),
    });
    let limits = Limits {
        memory: 1 << 30,
        time: Duration::from_secs(60),
    };
    let mut instance = Instance::new(
        &word_split,
        tag,
        limits,
        Grants::default(),
        &[],
        StateView::new(None, 1 << 20),
    )
    .unwrap();
    let info = CallInfo {
        id: 0,
        time_ms: 0,
        interval_ms: 1000,
    };

    for (size, words) in [("small", 3), ("large", 40)] {
        let mut group = c.benchmark_group(format!("split-{size}"));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20);
        for batch in [1usize, 10, 100, 1000, 10_000] {
            let input = lines(batch, words);
            group.throughput(Throughput::Elements(batch as u64));
            let records = to_records(&input);
            group.bench_with_input(BenchmarkId::new("native", batch), &records, |b, r| {
                b.iter(|| black_box(native_split(r)))
            });
            let rows = to_rows(&input);
            group.bench_with_input(BenchmarkId::new("wasm-rows", batch), &rows, |b, rows| {
                b.iter(|| black_box(split.call_split_rows(&mut store, rows).unwrap()))
            });
            let columns = to_columns(&input);
            group.bench_with_input(
                BenchmarkId::new("wasm-columns", batch),
                &columns,
                |b, cols| b.iter(|| black_box(split.call_split_columns(&mut store, cols).unwrap())),
            );
            let mut records = Some(to_records(&input));
            group.bench_function(BenchmarkId::new("sluice-word-split", batch), |b| {
                b.iter(|| {
                    let (back, out) = instance.process(info, records.take().unwrap());
                    records = Some(back);
                    black_box(out.unwrap())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, boundary);
criterion_main!(benches);
