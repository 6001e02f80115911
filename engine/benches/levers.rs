//! Two runtime levers, measured on the real `word-split` plugin over one
//! batch of 1,000 lines (10 words each), beside native Rust doing the same
//! split in the same run:
//!
//! - **CPU limit: epoch vs fuel.** The engine stops a runaway plugin with
//!   epoch interruption (a counter a ticker thread bumps; compiled code
//!   checks it at loop heads and calls). Fuel counts every instruction
//!   instead. Both against no interruption at all.
//! - **Instance reuse vs a new instance per batch.** The engine keeps one
//!   instance per stage across batches. The alternative, a fresh instance
//!   (instantiate + `init`) for every batch, with wasmtime's pooling
//!   allocator (slots kept ready, what the engine configures) or the
//!   default on-demand one (memory mapped per instance).
//! - **Reusing guest memory.** A reused instance finds its linear memory
//!   already grown and its pages already touched. A new instance in a
//!   pooling slot normally gets its memory back zeroed by `madvise` (every
//!   page faults in again); with `linear_memory_keep_resident` the slot
//!   keeps its pages and zeroes them with `memset`. The difference between
//!   the two is the cost of fresh memory; between the latter and a reused
//!   instance, the cost of instantiation and `init` alone.
//! - **Zero-copy payloads.** A flatMap's output mostly repeats bytes of its
//!   input. A bench guest (`tests/plugins/layouts`) runs the same split
//!   two ways: output copied into new columns (as `sluice:plugin` does
//!   today), and output as spans into the input (start, end, input index),
//!   from which the host builds the same columns out of the input it still
//!   holds. No interruption in either; the native split is the baseline.
//!
//! Each variant is its own wasmtime `Engine` with only that setting changed;
//! the plugin's `process` is called through bindings made here from `wit/`.
//! The variants are timed in turn, round after round, and the medians
//! reported, so that a busy neighbour on a shared machine slows all alike.
//!
//! Run: `cargo bench -p sluice --bench levers`.

mod support;

use std::hint::black_box;
use std::time::Instant;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "stage",
    });
}

use bindings::Stage;
use bindings::sluice::plugin::types::{Batch, BatchInfo, Column};
use bindings::sluice::plugin::{log, state, types};

const LINES: usize = 1_000;
const WORDS_PER_LINE: usize = 10;

// The store's data: WASI with nothing granted, and no-op log and state (the
// split uses neither).
use support::WasiHost as Host;

impl types::Host for Host {}

impl log::Host for Host {
    fn log(&mut self, _level: log::Level, _message: String) {}
}

impl state::Host for Host {
    fn get(&mut self, _key: Vec<u8>) -> Result<Option<Vec<u8>>, state::StateError> {
        Ok(None)
    }
    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) -> Result<(), state::StateError> {
        Ok(())
    }
    fn delete(&mut self, _key: Vec<u8>) {}
}

/// How a variant stops a runaway call.
#[derive(Clone, Copy)]
enum Interrupt {
    None,
    Epoch,
    Fuel,
}

/// Where a variant's instances get their memory.
#[derive(Clone, Copy)]
enum Alloc {
    /// Mapped per instance (wasmtime's default).
    OnDemand,
    /// Slots kept ready; a slot's memory is reset by `madvise`.
    Pooling,
    /// Slots kept ready; up to 64 MiB of a slot's memory stays resident
    /// and is reset by `memset`.
    PoolingResident,
}

/// One engine setting to measure, with everything needed to call the plugin.
struct Variant {
    engine: Engine,
    pre: bindings::StagePre<Host>,
    interrupt: Interrupt,
}

impl Variant {
    fn new(component: &[u8], interrupt: Interrupt, alloc: Alloc) -> Variant {
        let mut config = Config::new();
        config.concurrency_support(false);
        match interrupt {
            Interrupt::None => {}
            Interrupt::Epoch => {
                config.epoch_interruption(true);
            }
            Interrupt::Fuel => {
                config.consume_fuel(true);
            }
        }
        if let Alloc::Pooling | Alloc::PoolingResident = alloc {
            let mut pool = PoolingAllocationConfig::new();
            if let Alloc::PoolingResident = alloc {
                pool.linear_memory_keep_resident(64 << 20);
                pool.table_keep_resident(1 << 20);
            }
            pool.total_component_instances(16);
            pool.total_core_instances(64);
            pool.total_memories(32);
            pool.total_tables(64);
            pool.max_memory_size(1 << 30);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, component).unwrap();
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        Stage::add_to_linker::<_, HasSelf<Host>>(&mut linker, |h| h).unwrap();
        let pre = bindings::StagePre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Variant {
            engine,
            pre,
            interrupt,
        }
    }

    /// A new store and instance, its `init` called, limits armed as the
    /// engine arms them per call.
    fn instance(&self) -> (Store<Host>, Stage) {
        let mut store = Store::new(&self.engine, Host::new());
        self.arm(&mut store);
        let stage = self.pre.instantiate(&mut store).unwrap();
        stage
            .sluice_plugin_processor()
            .call_init(&mut store, &[])
            .unwrap()
            .unwrap();
        (store, stage)
    }

    fn arm(&self, store: &mut Store<Host>) {
        match self.interrupt {
            Interrupt::None => {}
            // The engine's limits are far away: nothing ticks here, so the
            // cost measured is the checks alone.
            Interrupt::Epoch => {
                store.epoch_deadline_trap();
                store.set_epoch_deadline(1 << 40);
            }
            Interrupt::Fuel => store.set_fuel(u64::MAX / 2).unwrap(),
        }
    }

    fn process(&self, store: &mut Store<Host>, stage: &Stage, batch: &Batch) -> usize {
        self.arm(store);
        let info = BatchInfo {
            pipeline: "bench".into(),
            stage: "split".into(),
            id: 0,
            time: 0,
            interval: 100,
        };
        let out = stage
            .sluice_plugin_processor()
            .call_process(store, &info, batch)
            .unwrap()
            .unwrap();
        out.batch.timestamps.len()
    }
}

fn lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            (0..WORDS_PER_LINE)
                .map(|w| format!("w{}", (i * 7 + w * 13) % 500))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn batch(lines: &[String]) -> Batch {
    let empty = || Column {
        data: Vec::new(),
        offsets: Vec::new(),
    };
    let mut values = Column {
        data: Vec::new(),
        offsets: vec![0],
    };
    for l in lines {
        values.data.extend_from_slice(l.as_bytes());
        values.offsets.push(values.data.len() as u32);
    }
    Batch {
        timestamps: vec![1; lines.len()],
        values,
        keys: empty(),
        keys_absent: Vec::new(),
        header_offsets: Vec::new(),
        header_names: empty(),
        header_values: empty(),
    }
}

/// The native baseline: the same split into the same columnar output.
fn native_split(batch: &Batch) -> usize {
    let mut data = Vec::new();
    let mut offsets = vec![0u32];
    let mut timestamps = Vec::new();
    for (i, ts) in batch.timestamps.iter().enumerate() {
        let value = &batch.values.data
            [batch.values.offsets[i] as usize..batch.values.offsets[i + 1] as usize];
        for word in std::str::from_utf8(value).unwrap().split_whitespace() {
            data.extend_from_slice(word.as_bytes());
            offsets.push(data.len() as u32);
            timestamps.push(*ts);
        }
    }
    black_box((&data, &offsets));
    timestamps.len()
}

mod layouts {
    wasmtime::component::bindgen!({
        path: "../tests/plugins/layouts/wit",
        world: "layouts",
    });
}
use layouts::exports::bench::layouts::split::Columns;

/// The zero-copy lever: one instance of the `layouts` bench guest.
struct Payloads {
    store: std::cell::RefCell<Store<support::WasiHost>>,
    guest: layouts::Layouts,
}

impl Payloads {
    fn new(component: &[u8]) -> Payloads {
        let mut config = Config::new();
        config.concurrency_support(false);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, component).unwrap();
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let mut store = Store::new(&engine, Host::new());
        let guest = layouts::Layouts::instantiate(&mut store, &component, &linker).unwrap();
        Payloads {
            store: std::cell::RefCell::new(store),
            guest,
        }
    }

    /// The output copied into new columns in the guest and lifted out.
    fn copied(&self, input: &Columns) -> Columns {
        let store = &mut *self.store.borrow_mut();
        self.guest
            .bench_layouts_split()
            .call_split_columns(store, input)
            .unwrap()
    }

    /// The output as spans, and the same columns built by the host from its
    /// own copy of the input.
    fn spans(&self, input: &Columns) -> Columns {
        let store = &mut *self.store.borrow_mut();
        let spans = self
            .guest
            .bench_layouts_split()
            .call_split_spans(store, input)
            .unwrap();
        let mut out = Columns {
            data: Vec::with_capacity(input.data.len()),
            offsets: Vec::with_capacity(spans.sources.len() + 1),
            timestamps: Vec::with_capacity(spans.sources.len()),
        };
        out.offsets.push(0);
        for (k, &source) in spans.sources.iter().enumerate() {
            let start = spans.bounds[2 * k] as usize;
            let end = spans.bounds[2 * k + 1] as usize;
            out.data.extend_from_slice(&input.data[start..end]);
            out.offsets.push(out.data.len() as u32);
            out.timestamps.push(input.timestamps[source as usize]);
        }
        out
    }
}

fn to_columns(lines: &[String]) -> Columns {
    let mut c = Columns {
        data: Vec::new(),
        offsets: vec![0],
        timestamps: vec![1; lines.len()],
    };
    for l in lines {
        c.data.extend_from_slice(l.as_bytes());
        c.offsets.push(c.data.len() as u32);
    }
    c
}

/// Rounds of measurement; each round times every variant once, in turn, so
/// a noisy neighbour slows all of them alike. Medians are reported.
const ROUNDS: usize = 30;
/// Batches per variant per round.
const BATCHES: usize = 20;

fn main() {
    let component = std::fs::read(support::guests().join("word_split.wasm")).unwrap();
    let lines = lines();
    let batch = batch(&lines);
    let columns = to_columns(&lines);
    let words = LINES * WORDS_PER_LINE;

    let reused: Vec<(&str, Variant)> = [
        ("reused instance, no interruption", Interrupt::None),
        ("reused instance, epoch (the engine's)", Interrupt::Epoch),
        ("reused instance, fuel", Interrupt::Fuel),
    ]
    .into_iter()
    .map(|(name, i)| (name, Variant::new(&component, i, Alloc::Pooling)))
    .collect();
    let mut instances: Vec<(Store<Host>, Stage)> =
        reused.iter().map(|(_, v)| v.instance()).collect();
    let fresh: Vec<(&str, Variant)> = [
        ("new instance per batch, pooling allocator", Alloc::Pooling),
        (
            "new instance per batch, pooling, memory resident",
            Alloc::PoolingResident,
        ),
        (
            "new instance per batch, on-demand allocator",
            Alloc::OnDemand,
        ),
    ]
    .into_iter()
    .map(|(name, alloc)| (name, Variant::new(&component, Interrupt::Epoch, alloc)))
    .collect();
    let payloads = Payloads::new(&std::fs::read(support::guests().join("layouts.wasm")).unwrap());
    // Both ways must give the same columns, or comparing them means nothing.
    let (copied, spans) = (payloads.copied(&columns), payloads.spans(&columns));
    assert_eq!(
        (copied.data, copied.offsets, copied.timestamps),
        (spans.data, spans.offsets, spans.timestamps)
    );

    let names: Vec<&str> = std::iter::once("native Rust")
        .chain(reused.iter().map(|(n, _)| *n))
        .chain(fresh.iter().map(|(n, _)| *n))
        .chain([
            "layouts guest, output copied into columns",
            "layouts guest, output as spans into the input",
        ])
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..BATCHES {
            f();
        }
        started.elapsed().as_secs_f64() / BATCHES as f64
    };
    for round in 0..=ROUNDS {
        let mut taken = vec![time(&mut || {
            assert_eq!(native_split(black_box(&batch)), words)
        })];
        for ((_, variant), (store, stage)) in reused.iter().zip(&mut instances) {
            taken.push(time(&mut || {
                assert_eq!(variant.process(store, stage, &batch), words)
            }));
        }
        for (_, variant) in &fresh {
            taken.push(time(&mut || {
                let (mut store, stage) = variant.instance();
                assert_eq!(variant.process(&mut store, &stage, &batch), words)
            }));
        }
        taken.push(time(&mut || {
            assert_eq!(black_box(payloads.copied(&columns)).timestamps.len(), words)
        }));
        taken.push(time(&mut || {
            assert_eq!(black_box(payloads.spans(&columns)).timestamps.len(), words)
        }));
        // Round 0 warms up.
        if round > 0 {
            for (s, t) in samples.iter_mut().zip(taken) {
                s.push(t);
            }
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect();
    println!(
        "word-split, one batch of {LINES} lines ({words} words out); medians of {ROUNDS} rounds"
    );
    for (name, median) in names.iter().zip(&medians) {
        println!(
            "  {name:<50} {:>8.1} µs  {:>5.2}× native",
            median * 1e6,
            median / medians[0]
        );
    }
}
