//! Running a pipeline: the batcher cuts batches on the calling thread, each
//! stage runs on its own thread, and a last thread writes to the sinks and
//! records the figures. Batches flow through bounded links (one heavy batch
//! waiting per link, see [`super::link`]), so stage `k` works on
//! batch `n` while stage `k + 1` works on batch `n - 1`: every batch still
//! goes through the stages in order, one at a time per stage, and memory
//! stays bounded.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::link::{LIGHT_BYTES, Receiver, Sender, Weighed, link};
use super::{Cancel, Pipeline, RunError, RunSummary};
use crate::batch::{Batch, Batcher, Cut};
use crate::delivery::Delivery;
use crate::source::{Emitter, SourceError};
use crate::stage::Stage;
use crate::state::{StageState, Writes};
use crate::telemetry::events::{self, BatchDone, Finished};
use crate::telemetry::{BatchMetrics, PipelineMetrics, Reporter, StageMetrics};

/// A batch on its way through the stages.
pub(super) struct InFlight {
    pub(super) batch: Batch,
    /// When the first stage took it (or the sinks, without stages).
    started: Option<Instant>,
    /// Records the batch came in with.
    records_in: usize,
    /// Each stage's share so far.
    stages: Vec<StageMetrics>,
    /// Each stage's writes to its state, to checkpoint with the batch.
    writes: Vec<(Arc<StageState>, Writes)>,
}

impl InFlight {
    /// A batch fresh from the batcher.
    pub(super) fn new(batch: Batch) -> Self {
        InFlight {
            records_in: batch.records.len(),
            batch,
            started: None,
            stages: Vec::new(),
            writes: Vec::new(),
        }
    }
}

impl Weighed for InFlight {
    fn is_heavy(&self) -> bool {
        if !self.batch.records.is_empty() {
            return true;
        }
        let mut bytes = 0;
        for (_, writes) in &self.writes {
            for (key, value) in writes {
                bytes += key.len() + value.as_ref().map_or(0, Vec::len);
                if bytes > LIGHT_BYTES {
                    return true;
                }
            }
        }
        false
    }
}

/// A pipeline's sources, started.
pub(super) struct Started {
    /// Where their chunks come, for the batcher.
    pub(super) queue: mpsc::Receiver<crate::batch::Chunk>,
    /// Stops them (set when the shutdown signal comes too).
    pub(super) stop: Arc<watch::Sender<bool>>,
    /// Per source, where its acknowledged positions go.
    pub(super) acks: Vec<watch::Sender<Option<String>>>,
    /// Their tasks, each ending with the source's outcome.
    pub(super) tasks: Vec<tokio::task::JoinHandle<Result<(), SourceError>>>,
}

impl Pipeline {
    /// Starts the sources on `runtime`, each with its emitter into one
    /// bounded queue; `shutdown` turning true asks them to stop.
    pub(super) fn start_sources(
        &mut self,
        runtime: &Handle,
        shutdown: watch::Receiver<bool>,
    ) -> Started {
        let (tx, queue) = mpsc::channel(self.queue_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let stop = Arc::new(stop);
        let forward = stop.clone();
        let mut global = shutdown;
        runtime.spawn(async move {
            if global.wait_for(|s| *s).await.is_ok() {
                let _ = forward.send(true);
            }
        });
        // Each source hears which of its positions the sinks acknowledged.
        let mut acks = Vec::new();
        let (source_figures, _) = self.delivery.figures();
        let tasks = std::mem::take(&mut self.sources)
            .into_iter()
            .enumerate()
            .map(|(i, source)| {
                let (ack_tx, ack_rx) = watch::channel(None);
                acks.push(ack_tx);
                let emitter = Emitter::new(i, tx.clone(), stop_rx.clone(), ack_rx);
                let emitter = match source_figures {
                    true => emitter.observed(self.metrics.sources[i].clone()),
                    false => emitter,
                };
                runtime.spawn(source.run(emitter))
            })
            .collect();
        Started {
            queue,
            stop,
            acks,
            tasks,
        }
    }

    /// Runs until every source has ended (then the last batch is processed
    /// and the sinks flushed) or `shutdown` turns true (then the sources stop
    /// reading, and what they had read is processed). Blocks the calling
    /// thread, which must not be one of `runtime`'s.
    pub fn run(
        mut self,
        runtime: &Handle,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, RunError> {
        self.log_start();
        let Started {
            queue: rx,
            stop: stop_tx,
            acks,
            tasks,
        } = self.start_sources(runtime, shutdown);

        // The sink thread at the end of the chain, then the stages backwards.
        let (sink_tx, sink_rx) = link::<InFlight>();
        let mut delivery = self.delivery;
        delivery.acknowledge_to(acks);
        let sink_thread = spawn_sinks(
            self.interval,
            self.metrics.clone(),
            delivery,
            sink_rx,
            self.cancel.clone(),
        );
        let mut next = sink_tx;
        let mut stage_threads = Vec::new();
        for stage in std::mem::take(&mut self.stages).into_iter().rev() {
            let (tx, rx) = link::<InFlight>();
            stage_threads.push(spawn_stage(stage, rx, next, self.cancel.clone()));
            next = tx;
        }
        stage_threads.reverse();

        let mut batcher = Batcher::new(
            rx,
            self.interval,
            self.max_batch_records,
            self.max_batch_bytes,
        );
        loop {
            match runtime.block_on(batcher.next()) {
                Cut::Finished => break,
                Cut::Batch(batch) if self.cancel.drops(&batch) => {}
                Cut::Batch(batch) => {
                    self.metrics.queue_depth.set(batcher.queued() as i64);
                    let flight = InFlight::new(batch);
                    // A closed channel means a stage or a sink failed.
                    if next.send(flight).is_err() {
                        break;
                    }
                }
            }
        }
        drop(next);
        // Stop the sources; dropping the batcher unblocks any waiting to send.
        let _ = stop_tx.send(true);
        drop(batcher);
        // Every thread is joined (the sinks flush what reached them), then
        // the first failure along the chain is the one reported; a thread
        // that panicked is reported as a failure, never propagated.
        let mut first_error = None;
        let threads = stage_threads
            .into_iter()
            .chain(std::iter::once(sink_thread));
        for thread in threads {
            let name = thread.thread().name().unwrap_or("sluice").to_string();
            let outcome = thread.join().unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown");
                Err(RunError::Panic {
                    pipeline: self.name.clone(),
                    thread: name,
                    message: what.to_string(),
                })
            });
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for task in tasks {
            let outcome = runtime.block_on(task).unwrap_or_else(|join| {
                Err(SourceError {
                    source_name: "task".into(),
                    message: format!("panicked: {join}"),
                })
            });
            outcome.map_err(|source| RunError::Source {
                pipeline: self.name.clone(),
                source,
            })?;
        }
        Ok(summary(self.name, &self.metrics))
    }

    /// The log line a run starts with.
    pub(super) fn log_start(&self) {
        let sources: Vec<String> = self.sources.iter().map(|s| s.describe()).collect();
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{} ({})", s.name(), s.plugin().label()))
            .collect();
        events::Started {
            labels: &self.metrics.labels,
            interval: self.interval,
            sources: &sources,
            stages: &stages,
            sinks: self.delivery.sinks(),
            exactly_once: self.exactly_once,
        }
        .emit();
    }
}

/// The figures of a finished run, logged.
pub(super) fn summary(name: String, metrics: &PipelineMetrics) -> RunSummary {
    let totals = Finished { metrics }.emit();
    RunSummary {
        pipeline: name,
        totals,
    }
}

/// A stage's thread: takes batches in order, processes them, passes them on
/// (once the run is cancelled, drops them).
fn spawn_stage(
    mut stage: Stage,
    rx: Receiver<InFlight>,
    tx: Sender<InFlight>,
    cancel: Cancel,
) -> JoinHandle<Result<(), RunError>> {
    std::thread::Builder::new()
        .name(format!("sluice-stage-{}", stage.name()))
        .spawn(move || {
            for mut flight in rx {
                if cancel.drops(&flight.batch) {
                    continue;
                }
                run_stage(&mut stage, &mut flight)?;
                let handing = Instant::now();
                if tx.send(flight).is_err() {
                    // Further down failed; it reports.
                    break;
                }
                stage.settings().telemetry.blocked(handing.elapsed());
            }
            Ok(())
        })
        .expect("spawning a stage thread")
}

/// One batch through one stage (a windowed stage takes empty batches too:
/// time moves its window); its share of the figures and its state writes
/// join the batch.
pub(super) fn run_stage(stage: &mut Stage, flight: &mut InFlight) -> Result<(), RunError> {
    flight.started.get_or_insert_with(Instant::now);
    let batch = &mut flight.batch;
    if batch.records.is_empty() && !stage.is_windowed() {
        return Ok(());
    }
    let count_in = batch.records.len();
    let records = std::mem::take(&mut batch.records);
    let out = stage.process_batch(batch.id, batch.time_ms, batch.ends_interval, records)?;
    let telemetry = &stage.settings().telemetry;
    flight.stages.push(StageMetrics {
        index: telemetry.index,
        name: telemetry.name.clone(),
        version: out.version.clone().unwrap_or_else(|| telemetry.version()),
        records_in: count_in,
        records_out: out.records.len(),
        failed: out.failed,
        busy: out.busy,
    });
    flight.batch.records = out.records;
    if let Some(state) = &stage.settings().state {
        if !out.writes.is_empty() {
            flight.writes.push((state.clone(), out.writes));
        }
    }
    if let Some(window) = out.window_writes {
        flight.writes.push(window);
    }
    Ok(())
}

/// The sinks' thread: delivers each batch (see [`crate::delivery`]) and
/// records its figures.
fn spawn_sinks(
    interval: std::time::Duration,
    metrics: Arc<PipelineMetrics>,
    mut delivery: Delivery,
    rx: Receiver<InFlight>,
    cancel: Cancel,
) -> JoinHandle<Result<(), RunError>> {
    std::thread::Builder::new()
        .name("sluice-sinks".into())
        .spawn(move || {
            let mut reporter = Reporter::new(metrics.labels.clone(), interval);
            let mut last_id = 0;
            let failed = |source| RunError::Delivery {
                pipeline: metrics.labels.pipeline.clone(),
                source,
            };
            for mut flight in rx {
                if cancel.drops(&flight.batch) {
                    continue;
                }
                last_id = flight.batch.id;
                deliver(
                    &mut delivery,
                    &mut flight,
                    interval,
                    &metrics,
                    &mut reporter,
                )
                .map_err(failed)?;
            }
            reporter.flush(last_id);
            delivery.finish().map_err(failed)
        })
        .expect("spawning the sink thread")
}

/// Delivers one batch and records its figures.
pub(super) fn deliver(
    delivery: &mut Delivery,
    flight: &mut InFlight,
    interval: std::time::Duration,
    metrics: &PipelineMetrics,
    reporter: &mut Reporter,
) -> Result<(), crate::delivery::DeliveryError> {
    let started = flight.started.unwrap_or_else(Instant::now);
    let delivering = Instant::now();
    delivery.deliver(&flight.batch, &mut flight.writes)?;
    let batch = &flight.batch;
    if !batch.positions.is_empty() && flight.records_in > 0 {
        let labels = &metrics.labels;
        tracing::debug!(
            tenant = labels.tenant.as_deref(), pipeline = %labels.pipeline, batch = batch.id,
            "positions: {:?}", batch.positions
        );
    }
    let finished = Instant::now();
    let scheduling_delay = started.saturating_duration_since(batch.ready_at);
    let processing_time = finished.duration_since(started);
    let (pipeline_input, pipeline_output) = delivery.figures();
    let figures = BatchMetrics {
        id: batch.id,
        time_ms: batch.time_ms,
        records_in: flight.records_in,
        records_out: batch.records.len(),
        input_rate: flight.records_in as f64 / interval.as_secs_f64(),
        scheduling_delay,
        processing_time,
        total_delay: scheduling_delay + processing_time,
        latency: batch.oldest_received.map(|r| finished.duration_since(r)),
        delivery: finished.duration_since(delivering),
        stages: std::mem::take(&mut flight.stages),
        pipeline_input,
        pipeline_output,
    };
    BatchDone {
        metrics,
        reporter,
        batch: &figures,
    }
    .emit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    fn flight(records: usize, write_bytes: usize) -> InFlight {
        let mut batch = Batch {
            id: 0,
            time_ms: 0,
            ready_at: Instant::now(),
            oldest_received: None,
            records: Default::default(),
            positions: Vec::new(),
            ends_interval: true,
        };
        for _ in 0..records {
            batch.records.push_value(b"r", 0);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        let mut writes = Writes::new();
        writes.insert(b"k".to_vec(), Some(vec![0; write_bytes]));
        InFlight {
            batch,
            started: None,
            records_in: records,
            stages: Vec::new(),
            writes: vec![(StageState::new(store, "window"), writes)],
        }
    }

    #[test]
    fn a_batch_is_heavy_with_records_or_with_large_writes() {
        assert!(
            !flight(0, 100).is_heavy(),
            "an empty batch with a small write"
        );
        assert!(flight(1, 0).is_heavy(), "a batch with a record");
        // A window holding a batch carries it as a write, with no records.
        assert!(flight(0, LIGHT_BYTES + 1).is_heavy(), "a large write");
    }
}
