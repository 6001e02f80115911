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

/// One engine setting to measure, with everything needed to call the plugin.
struct Variant {
    engine: Engine,
    pre: bindings::StagePre<Host>,
    interrupt: Interrupt,
}

impl Variant {
    fn new(component: &[u8], interrupt: Interrupt, pooling: bool) -> Variant {
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
        if pooling {
            let mut pool = PoolingAllocationConfig::new();
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

/// Rounds of measurement; each round times every variant once, in turn, so
/// a noisy neighbour slows all of them alike. Medians are reported.
const ROUNDS: usize = 30;
/// Batches per variant per round.
const BATCHES: usize = 20;

fn main() {
    let component = std::fs::read(support::guests().join("word_split.wasm")).unwrap();
    let batch = batch(&lines());
    let words = LINES * WORDS_PER_LINE;

    let reused: Vec<(&str, Variant)> = [
        ("reused instance, no interruption", Interrupt::None),
        ("reused instance, epoch (the engine's)", Interrupt::Epoch),
        ("reused instance, fuel", Interrupt::Fuel),
    ]
    .into_iter()
    .map(|(name, i)| (name, Variant::new(&component, i, true)))
    .collect();
    let mut instances: Vec<(Store<Host>, Stage)> =
        reused.iter().map(|(_, v)| v.instance()).collect();
    let fresh: Vec<(&str, Variant)> = [
        ("new instance per batch, pooling allocator", true),
        ("new instance per batch, on-demand allocator", false),
    ]
    .into_iter()
    .map(|(name, pooling)| (name, Variant::new(&component, Interrupt::Epoch, pooling)))
    .collect();

    let names: Vec<&str> = std::iter::once("native Rust")
        .chain(reused.iter().map(|(n, _)| *n))
        .chain(fresh.iter().map(|(n, _)| *n))
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
            "  {name:<45} {:>8.1} µs  {:>5.2}× native",
            median * 1e6,
            median / medians[0]
        );
    }
}
