//! The delivery protocol: what happens to a batch once the stages are done
//! with it, and how a run starts again after a stop or a crash.
//!
//! For each batch, in this order and no other:
//! 1. **write**: every sink takes the batch's output (under exactly-once,
//!    a sink only stages it: a file under a temporary name, an open Kafka
//!    transaction);
//! 2. **checkpoint**: the batch's state writes, the sources' positions and
//!    (for sinks that need it) a copy of the output go into the state file
//!    in one transaction;
//! 3. **commit**: under exactly-once, sinks publish what they staged;
//! 4. **acknowledge**: the sources hear that the batch's positions are safe
//!    (a Kafka source commits its offsets to the group).
//!
//! A crash between any two steps loses nothing: before 2, the batch is read
//! again after the restart (output may repeat under at-least-once, staged
//! output is discarded under exactly-once); between 2 and 3, recovery
//! publishes the staged output (or writes the kept copy again); after 4 the
//! batch is done. [`Delivery::recover`] is the start-up half: it points the
//! sources at the last checkpoint and settles what the sinks staged.
//!
//! This module owns the order; what a sink or source does at each step is
//! theirs, and running the batch through the stages is `pipeline`'s.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::watch;

use crate::batch::{Batch, Records};
use crate::failpoint::{self, Point};
use crate::sink::{BatchMeta, Sink, SinkError};
use crate::source::Source;
use crate::state::{Checkpoint, StageState, StateError, StateStore, Writes};
use crate::telemetry::PipelineMetrics;
use crate::telemetry::events::{Checkpointed, SinkWrote};

/// A batch could not be delivered, or a run could not start again.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A sink did not take, publish or flush a batch.
    #[error("batch {batch}: {source}")]
    Sink {
        /// Batch id.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// The checkpoint could not be written.
    #[error("batch {batch}: checkpoint failed: {source}")]
    Checkpoint {
        /// Batch id.
        batch: u64,
        /// Why.
        source: StateError,
    },
    /// The last checkpoint could not be read back at start.
    #[error(transparent)]
    Resume(StateError),
    /// A sink could not settle what it staged before a crash.
    #[error(transparent)]
    Recover(SinkError),
}

/// Key of a sink's kept output: the checkpoint's number (8 bytes, big
/// endian), then the records.
pub(crate) const KEPT_OUTPUT: &[u8] = b"output";

/// The sinks of a running pipeline and its checkpoints.
pub struct Delivery {
    pipeline: String,
    sinks: Vec<Box<dyn Sink>>,
    /// The state file, when the pipeline keeps one.
    store: Option<Arc<StateStore>>,
    exactly_once: bool,
    /// Per sink, where its output is kept with the checkpoint, for sinks
    /// that keep it (exactly-once Kafka).
    kept_output: Vec<Option<Arc<StageState>>>,
    /// The last checkpoint; positions of sources quiet in this run carry
    /// over from the one the run started from.
    checkpoint: Checkpoint,
    /// The last kept output's commit went through: drop it at the next
    /// checkpoint.
    kept_confirmed: bool,
    /// Per source, where its acknowledged positions go.
    acks: Vec<watch::Sender<Option<String>>>,
    /// Batches with output delivered in this run (for the failpoints).
    output_batches: u64,
    last_id: u64,
    /// Where sink records and checkpoints are counted.
    metrics: Option<Arc<PipelineMetrics>>,
    /// Whether the sinks are the pipeline's (counted as its sinks), not
    /// the engine's own (a task's repartition topic).
    sink_figures: bool,
    /// Whether the sources are the pipeline's, not the engine's own (a
    /// task reading a repartition topic).
    source_figures: bool,
}

impl Delivery {
    /// Starts a run: reads the last checkpoint from `store`, points
    /// `sources` at its positions and has every sink settle what it staged
    /// before a crash (publishing what the checkpoint covers, dropping what
    /// it does not).
    pub fn recover(
        pipeline: &str,
        store: Option<Arc<StateStore>>,
        exactly_once: bool,
        sources: &mut [Box<dyn Source>],
        mut sinks: Vec<Box<dyn Sink>>,
    ) -> Result<Delivery, DeliveryError> {
        let checkpoint = match &store {
            Some(store) => resume(store, sources)?,
            None => Checkpoint::default(),
        };
        let mut kept_output = Vec::with_capacity(sinks.len());
        for (index, sink) in sinks.iter_mut().enumerate() {
            let table = match (&store, exactly_once && sink.keeps_output()) {
                (Some(store), true) => Some(StageState::sink(store.clone(), index)),
                _ => None,
            };
            let output = match &table {
                Some(table) => kept(table, checkpoint.number).map_err(DeliveryError::Resume)?,
                None => None,
            };
            sink.recover(checkpoint.number, output)
                .map_err(DeliveryError::Recover)?;
            kept_output.push(table);
        }
        Ok(Delivery {
            pipeline: pipeline.to_string(),
            sinks,
            store,
            exactly_once,
            kept_output,
            checkpoint,
            kept_confirmed: false,
            acks: Vec::new(),
            output_batches: 0,
            last_id: 0,
            metrics: None,
            sink_figures: true,
            source_figures: true,
        })
    }

    /// Counts what the sinks take and the checkpoints in `metrics`.
    pub fn observed(mut self, metrics: Arc<PipelineMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Leaves the sinks' writes out of the figures: they are the engine's
    /// own (a task writing to a repartition topic), not the pipeline's.
    pub fn without_sink_figures(mut self) -> Self {
        self.sink_figures = false;
        self
    }

    /// Leaves the sources' records out of the pipeline's input figures:
    /// they are the engine's own (a task reading a repartition topic).
    pub fn without_source_figures(mut self) -> Self {
        self.source_figures = false;
        self
    }

    /// Whether the batches' input and output are the pipeline's own (see
    /// [`BatchMetrics::pipeline_input`](crate::telemetry::BatchMetrics)).
    pub fn figures(&self) -> (bool, bool) {
        (self.source_figures, self.sink_figures)
    }

    /// Where each source (by index) hears of its acknowledged positions.
    pub fn acknowledge_to(&mut self, acks: Vec<watch::Sender<Option<String>>>) {
        self.acks = acks;
    }

    /// How many sinks the pipeline has.
    pub fn sinks(&self) -> usize {
        self.sinks.len()
    }

    /// The checkpoint the run started from (or the last one taken).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Delivers one batch: write, checkpoint, commit, acknowledge (see the
    /// module docs). `writes` are the stages' state writes for the batch;
    /// the sinks' kept output joins them.
    pub fn deliver(
        &mut self,
        batch: &Batch,
        writes: &mut Vec<(Arc<StageState>, Writes)>,
    ) -> Result<(), DeliveryError> {
        self.last_id = batch.id;
        let has_output = !batch.records.is_empty();
        let checkpointed = self.store.is_some()
            && (!writes.is_empty()
                || !batch.positions.is_empty()
                || (self.exactly_once && has_output));
        let meta = BatchMeta {
            pipeline: &self.pipeline,
            id: batch.id,
            time_ms: batch.time_ms,
            // Exactly-once: sinks stage the batch under the number of the
            // checkpoint that will cover it.
            checkpoint: (self.exactly_once && checkpointed).then_some(self.checkpoint.number + 1),
            positions: &batch.positions,
        };
        let sink_error = |source| DeliveryError::Sink {
            batch: batch.id,
            source,
        };
        // 1. Write.
        if has_output {
            for (index, sink) in self.sinks.iter_mut().enumerate() {
                sink.write(meta, &batch.records).map_err(sink_error)?;
                let metrics = self.metrics.as_ref().filter(|_| self.sink_figures);
                if let Some(series) = metrics.and_then(|m| m.sinks.get(index)) {
                    SinkWrote {
                        sink: series,
                        records: batch.records.len(),
                    }
                    .emit();
                }
            }
        }
        // Sinks that publish again after a crash keep the output with the
        // checkpoint. Once a kept output's commit is confirmed, the next
        // checkpoint drops it, so after a clean stop nothing is kept and a
        // restart never writes a batch again.
        let kept = meta.checkpoint.filter(|_| has_output).map(|number| {
            let mut value = number.to_be_bytes().to_vec();
            value.extend_from_slice(&batch.records.to_bytes());
            value
        });
        if kept.is_some() || (checkpointed && self.kept_confirmed) {
            for table in self.kept_output.iter().flatten() {
                let entry = [(KEPT_OUTPUT.to_vec(), kept.clone())].into();
                writes.push((table.clone(), entry));
            }
            self.kept_confirmed = false;
        }
        if has_output {
            self.output_batches += 1;
            failpoint::reached(Point::Written);
        }
        // 2. Checkpoint: the state writes and positions together.
        if let (Some(store), true) = (&self.store, checkpointed) {
            self.checkpoint.batch = batch.id;
            self.checkpoint.number += 1;
            for position in &batch.positions {
                self.checkpoint
                    .positions
                    .insert(position.source, position.position.clone());
            }
            let started = std::time::Instant::now();
            store
                .commit(writes, &self.checkpoint)
                .map_err(|source| DeliveryError::Checkpoint {
                    batch: batch.id,
                    source,
                })?;
            if let Some(metrics) = &self.metrics {
                Checkpointed {
                    metrics,
                    number: self.checkpoint.number,
                    batch: batch.id,
                    took: started.elapsed(),
                }
                .emit();
            }
        }
        if has_output {
            failpoint::reached(Point::Checkpointed);
        }
        // 3. Commit: the checkpoint is durable, publish.
        if meta.checkpoint.is_some() {
            for sink in &mut self.sinks {
                if has_output || sink.commits_every_checkpoint() {
                    sink.commit(meta).map_err(sink_error)?;
                }
            }
            if has_output {
                self.kept_confirmed = self.kept_output.iter().any(Option::is_some);
            }
        }
        // 4. Acknowledge: the positions are safe to commit back.
        for position in &batch.positions {
            if let Some(ack) = self.acks.get(position.source) {
                ack.send_replace(Some(position.position.clone()));
            }
        }
        if has_output {
            failpoint::reached(Point::Acknowledged);
        }
        Ok(())
    }

    /// Ends a run: drops a kept output whose commit went through, and
    /// flushes every sink (all of them, reporting the first failure).
    pub fn finish(mut self) -> Result<(), DeliveryError> {
        let last_id = self.last_id;
        if let (Some(store), true) = (&self.store, self.kept_confirmed) {
            let drops: Vec<_> = self
                .kept_output
                .iter()
                .flatten()
                .map(|table| (table.clone(), [(KEPT_OUTPUT.to_vec(), None)].into()))
                .collect();
            store
                .commit(&drops, &self.checkpoint)
                .map_err(|source| DeliveryError::Checkpoint {
                    batch: last_id,
                    source,
                })?;
        }
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(source) = sink.flush() {
                first = first.and(Err(DeliveryError::Sink {
                    batch: last_id,
                    source,
                }));
            }
        }
        first
    }
}

/// Points the sources at the last checkpoint's positions, so the state
/// and the input carry on together. Returns that checkpoint, which the run
/// goes on from (a source that is quiet in this run keeps its position).
fn resume(
    store: &StateStore,
    sources: &mut [Box<dyn Source>],
) -> Result<Checkpoint, DeliveryError> {
    let Some(checkpoint) = store.checkpoint().map_err(DeliveryError::Resume)? else {
        return Ok(Checkpoint::default());
    };
    for (index, source) in sources.iter_mut().enumerate() {
        let Some(position) = checkpoint.positions.get(&index) else {
            continue;
        };
        tracing::debug!("{}: checkpointed position {position:?}", source.describe());
        match source.resume(position) {
            Ok(true) => tracing::info!(
                "{}: resuming from the checkpoint in {}",
                source.describe(),
                store.path().display()
            ),
            Ok(false) => tracing::warn!(
                "{}: cannot replay from the checkpoint in {}; it reads as if new, so state \
                 may count what the last run read but did not checkpoint",
                source.describe(),
                store.path().display()
            ),
            Err(e) => {
                return Err(DeliveryError::Resume(StateError {
                    path: store.path().to_path_buf(),
                    message: format!("checkpoint of source {index}: {e}"),
                }));
            }
        }
    }
    Ok(checkpoint)
}

/// The output kept for checkpoint `number` in a sink's table, if that is
/// the checkpoint it was kept for.
fn kept(table: &StageState, number: u64) -> Result<Option<Records>, StateError> {
    // Read at start, before any write: this is the checkpointed value.
    let Some(value) = table.get(KEPT_OUTPUT)? else {
        return Ok(None);
    };
    let damaged = || StateError {
        path: table.store().path().to_path_buf(),
        message: format!("the output kept for checkpoint {number} is damaged"),
    };
    let kept_for = u64::from_be_bytes(value.get(..8).ok_or_else(damaged)?.try_into().unwrap());
    if kept_for != number {
        return Ok(None);
    }
    Records::from_bytes(&value[8..])
        .map(Some)
        .ok_or_else(damaged)
}
