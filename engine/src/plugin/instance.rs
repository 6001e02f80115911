//! One live instance of a plugin: its `Store` with memory and CPU limits, its
//! sandboxed WASI context, and the calls into `init` and `process`. A trap
//! (the plugin broke) is kept apart from an error the plugin returned, and
//! both from an output that breaks the batch layout.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, Stage, log::Level, state::StateError, types};
use super::sandbox::{BatchClock, BatchContext, BatchRng, stage_seed};
use super::stdio::{LINES_PER_CALL, LogBudget, LogStream, Stream};
use super::{EPOCH_TICK, LogTag, Plugin};
use crate::batch::{Column, Records};
use crate::state::{StageState, Writes};

/// Resource limits of one instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest size of each linear memory, in bytes.
    pub memory: u64,
    /// Longest one `process` call may run (`init` gets at least
    /// [`crate::stage::INIT_TIME_FLOOR`]).
    pub time: Duration,
}

/// Capabilities a pipeline grants a stage beyond the sandbox's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grants {
    /// The real wall clock instead of the batch time.
    pub clock: bool,
    /// Real randomness instead of a deterministic, seeded sequence.
    pub random: bool,
}

/// What the engine tells the plugin about a batch (the pipeline and stage
/// names come from the instance's log tag).
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    /// Batch id.
    pub id: u64,
    /// Batch time, ms since the epoch.
    pub time_ms: u64,
    /// Batch interval, ms.
    pub interval_ms: u64,
}

/// A successful `process` call.
#[derive(Debug, Default)]
pub struct Output {
    /// The records the stage emitted.
    pub records: Records,
    /// Input records that failed on their own: (index, message).
    pub failures: Vec<(u32, String)>,
    /// The batch's writes to the stage's state.
    pub writes: Writes,
}

/// Why a call into a plugin did not produce an output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin trapped (panic, bad memory access, unreachable…).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran past the stage's time limit.
    #[error("exceeded its time limit of {}ms per call", .0.as_millis())]
    Timeout(Duration),
    /// The plugin asked for more memory than the stage allows.
    #[error("exceeded its memory limit of {0} bytes")]
    OutOfMemory(u64),
    /// `init` rejected the stage's config.
    #[error("rejected its config: {0}")]
    InvalidConfig(String),
    /// The plugin returned an error for the whole batch.
    #[error("failed the batch: {0}")]
    Failed(String),
    /// The plugin returned an output that breaks the batch layout.
    #[error("returned a malformed batch: {0}")]
    BadOutput(String),
}

impl CallError {
    /// Whether the instance must be thrown away after this error.
    pub fn kills_instance(&self) -> bool {
        matches!(
            self,
            CallError::Trap(_)
                | CallError::Timeout(_)
                | CallError::OutOfMemory(_)
                | CallError::BadOutput(_)
        )
    }
}

/// Per-store state: the sandbox's WASI context, limits and log tag.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    tag: Arc<LogTag>,
    budget: Arc<LogBudget>,
    state: StateView,
}

/// What a plugin's `state` calls reach: the current batch's writes over
/// the stage's state ([`StageState`]), or, where there is none (`sluice
/// plugin test`, `sluice check`), over entries kept in the instance alone.
pub struct StateView {
    stage: Option<Arc<StageState>>,
    /// Largest key + value, in bytes.
    limit: u64,
    /// This batch's writes, so far.
    writes: Writes,
    /// Without a stage state: earlier batches' writes, for this instance.
    scratch: Writes,
}

impl StateView {
    /// A view over `stage`, or over the instance's own entries; `limit`
    /// bounds key + value.
    pub fn new(stage: Option<Arc<StageState>>, limit: u64) -> Self {
        StateView {
            stage,
            limit,
            writes: Writes::new(),
            scratch: Writes::new(),
        }
    }

    /// Ends a call: a good batch's writes are handed back for the stage to
    /// checkpoint (or, without a stage state, kept in the instance); a
    /// failed one's are dropped.
    fn finish(&mut self, keep: bool) -> Writes {
        let writes = std::mem::take(&mut self.writes);
        match (keep, &self.stage) {
            (false, _) => Writes::new(),
            (true, Some(_)) => writes,
            (true, None) => {
                self.scratch.extend(writes);
                Writes::new()
            }
        }
    }
}

impl bindings::state::Host for InstanceState {
    fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StateError> {
        let view = &self.state;
        if let Some(value) = view.writes.get(&key) {
            return Ok(value.clone());
        }
        match &view.stage {
            Some(stage) => stage
                .get(&key)
                .map_err(|e| StateError::Unavailable(e.to_string())),
            None => Ok(view.scratch.get(&key).cloned().flatten()),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        let size = (key.len() + value.len()) as u64;
        if size > self.state.limit {
            return Err(StateError::TooLarge(format!(
                "a key and value of {size} bytes is over the stage's state_limit of {} bytes",
                self.state.limit
            )));
        }
        self.state.writes.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.state.writes.insert(key, None);
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for InstanceState {}

impl bindings::log::Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        if !self.budget.take() {
            return;
        }
        const MAX: usize = 4096;
        let message = if message.len() > MAX {
            let mut end = MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!("{} […]", &message[..end])
        } else {
            message
        };
        let t = &self.tag;
        match level {
            Level::Trace => {
                tracing::trace!(pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, "{message}")
            }
            Level::Debug => {
                tracing::debug!(pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, "{message}")
            }
            Level::Info => {
                tracing::info!(pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, "{message}")
            }
            Level::Warn => {
                tracing::warn!(pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, "{message}")
            }
            Level::Error => {
                tracing::error!(pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, "{message}")
            }
        }
    }
}

/// Enforces the memory limit and remembers that it was hit, so the trap
/// that follows can be reported as what it is; keeps the size memories
/// have grown to, for the stage's `sluice_plugin_memory_bytes`.
struct Limiter {
    memory: u64,
    hit: bool,
    /// Bytes of linear memory granted so far (every memory's growth).
    size: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded (asked for {desired})",
                self.memory
            ));
        }
        self.size += desired.saturating_sub(current) as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// A live plugin instance.
pub struct Instance {
    store: Store<InstanceState>,
    stage: Stage,
    limits: Limits,
    batch: Arc<BatchContext>,
    seed: u64,
    /// The batch info handed to `process`, names filled in once.
    info: types::BatchInfo,
}

impl Instance {
    /// Instantiates `plugin` and calls its `init` with `config`.
    pub fn new(
        plugin: &Plugin,
        tag: Arc<LogTag>,
        limits: Limits,
        grants: Grants,
        config: &[(String, String)],
        state: StateView,
    ) -> Result<Self, CallError> {
        let batch = Arc::new(BatchContext::default());
        let seed = stage_seed(&tag.pipeline, &tag.stage);
        batch.enter_batch(seed, u64::MAX, crate::batch::now_ms());
        let budget = Arc::new(LogBudget::default());
        budget.reset();
        let stream = |stream| LogStream {
            tag: tag.clone(),
            stream,
            budget: budget.clone(),
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stream(Stream::Stdout))
            .stderr(stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grants.clock {
            wasi.wall_clock(BatchClock(batch.clone()));
        }
        if !grants.random {
            wasi.secure_random(BatchRng::new(batch.clone(), 0))
                .insecure_random(BatchRng::new(batch.clone(), 1))
                .insecure_random_seed(u128::from(seed));
        }
        let state = InstanceState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory: limits.memory,
                hit: false,
                size: 0,
            },
            tag,
            budget,
            state,
        };
        let mut store = Store::new(plugin.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        // Start-up (instantiation and `init`) gets at least
        // INIT_TIME_FLOOR, so a time limit close to it cannot pass one run
        // and fail the next.
        let startup = Limits {
            time: limits.time.max(crate::stage::INIT_TIME_FLOOR),
            ..limits
        };
        store.set_epoch_deadline(deadline_ticks(startup.time));
        let stage = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, startup, e))?;
        let info = types::BatchInfo {
            pipeline: store.data().tag.pipeline.clone(),
            stage: store.data().tag.stage.clone(),
            id: 0,
            time: 0,
            interval: 0,
        };
        let mut instance = Instance {
            store,
            stage,
            limits,
            batch,
            seed,
            info,
        };
        instance
            .store
            .set_epoch_deadline(deadline_ticks(startup.time));
        let result = instance
            .stage
            .sluice_plugin_processor()
            .call_init(&mut instance.store, config);
        // Writes made in `init` count for nothing: state belongs to batches.
        instance.store.data_mut().state.finish(false);
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(types::Error::InvalidConfig(m))) => Err(CallError::InvalidConfig(m)),
            Ok(Err(types::Error::Failed(m))) => Err(CallError::InvalidConfig(m)),
            Err(e) => Err(classify(&instance.store, startup, e)),
        }
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().limiter.size
    }

    /// Runs one batch through the plugin. The input is handed back whatever
    /// happens, so the caller can retry or dead-letter it.
    pub fn process(
        &mut self,
        info: CallInfo,
        input: Records,
    ) -> (Records, Result<Output, CallError>) {
        self.batch.enter_batch(self.seed, info.id, info.time_ms);
        self.store.data().budget.reset();
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.time));
        // The names were set once, when the instance was made.
        self.info.id = info.id;
        self.info.time = info.time_ms;
        self.info.interval = info.interval_ms;
        let wit_input = to_wit(input);
        let result = self.stage.sluice_plugin_processor().call_process(
            &mut self.store,
            &self.info,
            &wit_input,
        );
        let input = from_wit(wit_input);
        let dropped = self.store.data().budget.reset();
        if dropped > 0 {
            let t = &self.store.data().tag;
            tracing::warn!(
                pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, batch = info.id,
                "{dropped} log lines from the plugin dropped (at most {LINES_PER_CALL} per batch)"
            );
        }
        let outcome = match result {
            Ok(Ok(output)) => {
                let records = from_wit(output.batch);
                match records.check() {
                    Ok(()) => Ok(Output {
                        records,
                        failures: output
                            .failures
                            .into_iter()
                            .map(|f| (f.index, f.message))
                            .collect(),
                        writes: Writes::new(),
                    }),
                    Err(problem) => Err(CallError::BadOutput(problem)),
                }
            }
            Ok(Err(types::Error::Failed(m) | types::Error::InvalidConfig(m))) => {
                Err(CallError::Failed(m))
            }
            Err(e) => Err(classify(&self.store, self.limits, e)),
        };
        // Only an output the engine accepts keeps the batch's state writes.
        let writes = self.store.data_mut().state.finish(outcome.is_ok());
        let outcome = outcome.map(|output| Output { writes, ..output });
        (input, outcome)
    }
}

fn deadline_ticks(time: Duration) -> u64 {
    (time.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64).max(1) + 1
}

fn classify(store: &Store<InstanceState>, limits: Limits, error: wasmtime::Error) -> CallError {
    if store.data().limiter.hit {
        return CallError::OutOfMemory(limits.memory);
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallError::Timeout(limits.time);
    }
    CallError::Trap(
        format!("{error:?}")
            .lines()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn column_to_wit(c: Column) -> types::Column {
    types::Column {
        data: c.data,
        offsets: c.offsets,
    }
}

fn column_from_wit(c: types::Column) -> Column {
    Column {
        data: c.data,
        offsets: c.offsets,
    }
}

/// Moves the columns into the generated type: no copy.
fn to_wit(r: Records) -> types::Batch {
    types::Batch {
        timestamps: r.timestamps,
        values: column_to_wit(r.values),
        keys: column_to_wit(r.keys),
        keys_absent: r.keys_absent,
        header_offsets: r.header_offsets,
        header_names: column_to_wit(r.header_names),
        header_values: column_to_wit(r.header_values),
    }
}

fn from_wit(b: types::Batch) -> Records {
    Records {
        timestamps: b.timestamps,
        values: column_from_wit(b.values),
        keys: column_from_wit(b.keys),
        keys_absent: b.keys_absent,
        header_offsets: b.header_offsets,
        header_names: column_from_wit(b.header_names),
        header_values: column_from_wit(b.header_values),
    }
}
