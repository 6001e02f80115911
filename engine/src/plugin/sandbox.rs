//! What the sandbox puts in place of the real world for a plugin that has
//! not been granted it: a wall clock that reads the batch time, randomness
//! that is a pseudo-random stream seeded by pipeline, stage and batch (so a
//! replayed batch sees the same numbers, whatever instance runs it), and a
//! monotonic clock whose timers fire at once (a plugin cannot park the
//! pipeline's thread in a sleep where the CPU limit cannot reach it; a
//! plugin that waits by spinning on the clock hits its time limit instead).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostWallClock, WasiView};

/// Per-instance sandbox values the engine updates before each batch.
#[derive(Debug, Default)]
pub struct BatchContext {
    /// The batch time, ms since the epoch.
    pub time_ms: AtomicU64,
    /// The seed of this batch's random stream.
    pub seed: AtomicU64,
    /// Bumped each time `seed` is set, so the stream restarts.
    pub epoch: AtomicU64,
}

impl BatchContext {
    /// Points the clock and the random stream at a batch.
    pub fn enter_batch(&self, base_seed: u64, batch_id: u64, time_ms: u64) {
        self.time_ms.store(time_ms, Ordering::Relaxed);
        self.seed
            .store(mix(base_seed ^ mix(batch_id)), Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

/// The wall clock of a plugin not granted the real one: the batch time.
pub struct BatchClock(pub Arc<BatchContext>);

impl HostWallClock for BatchClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.time_ms.load(Ordering::Relaxed))
    }
}

/// A SplitMix64 stream restarted from the batch's seed at every batch.
pub struct BatchRng {
    context: Arc<BatchContext>,
    /// Tells apart streams that share a context.
    stream: u64,
    epoch: u64,
    state: u64,
}

impl BatchRng {
    /// Stream number `stream` of `context`.
    pub fn new(context: Arc<BatchContext>, stream: u64) -> Self {
        BatchRng {
            context,
            stream,
            epoch: u64::MAX,
            state: 0,
        }
    }

    fn next(&mut self) -> u64 {
        let epoch = self.context.epoch.load(Ordering::Relaxed);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.state = mix(self.context.seed.load(Ordering::Relaxed)
                ^ self.stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }
}

impl rand_core::TryRng for BatchRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable seed for a stage: FNV-1a of pipeline and stage names.
pub fn stage_seed(pipeline: &str, stage: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pipeline.bytes().chain([0]).chain(stage.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `wasi:clocks/monotonic-clock` with timers that are ready at once.
pub struct NoWaitClock<'a>(WasiClocksCtxView<'a>);

/// `HasData` marker for [`NoWaitClock`].
pub struct NoWait;

impl HasData for NoWait {
    type Data<'a> = NoWaitClock<'a>;
}

struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

impl monotonic_clock::Host for NoWaitClock<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        monotonic_clock::Host::now(&mut self.0)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        monotonic_clock::Host::resolution(&mut self.0)
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.0.table.push(Ready)?;
        subscribe(self.0.table, ready)
    }

    fn subscribe_duration(
        &mut self,
        _duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.0.table.push(Ready)?;
        subscribe(self.0.table, ready)
    }
}

/// Replaces the linker's monotonic clock with [`NoWaitClock`].
pub fn add_no_wait_clock<T: WasiView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<T, NoWait>(linker, |t| NoWaitClock(t.clocks()))?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::TryRng;

    #[test]
    fn the_stream_restarts_at_each_batch_and_differs_between_batches() {
        let context = Arc::new(BatchContext::default());
        let mut rng = BatchRng::new(context.clone(), 0);
        context.enter_batch(7, 1, 0);
        let first: Vec<u64> = (0..200).map(|_| rng.try_next_u64().unwrap()).collect();
        // No short cycle.
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), first.len());
        context.enter_batch(7, 2, 0);
        let second: Vec<u64> = (0..200).map(|_| rng.try_next_u64().unwrap()).collect();
        assert_ne!(first, second);
        // Replaying batch 1, even on a fresh stream, gives the same numbers.
        let mut fresh = BatchRng::new(context.clone(), 0);
        context.enter_batch(7, 1, 0);
        let replay: Vec<u64> = (0..200).map(|_| fresh.try_next_u64().unwrap()).collect();
        assert_eq!(first, replay);
    }
}
