//! [`PipelineMetrics`]: everything one pipeline's telemetry keeps, shared
//! by the parts that report into it (stages, sources, delivery) and the
//! readers (the Prometheus exposition, the dashboard, the supervisor's
//! status). Counters and histograms are atomics; the recent batches, the
//! timeline and the run's totals sit behind one lock taken once per batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::figures::{BatchMetrics, Delays, Totals};
use super::journal::Journal;
use super::series::{
    Counter, Gauge, Histogram, Labels, SinkSeries, SourceSeries, SourceTelemetry, StageSeries,
    StageTelemetry,
};
use super::timeline::Timeline;

/// Recent batches with records kept for the dashboard (its table, its
/// histograms and a batch's detail): five minutes of 1 s batches.
pub const RECENT: usize = 300;

/// What a pipeline is made of, as its series name it.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Tenant and pipeline name.
    pub labels: Labels,
    /// Batch interval.
    pub interval: Duration,
    /// Stage names, in order.
    pub stages: Vec<String>,
    /// Source names (`type-index`).
    pub sources: Vec<String>,
    /// Sink names (`type-index`).
    pub sinks: Vec<String>,
    /// Ingest queue capacity, in chunks.
    pub queue_capacity: usize,
}

/// The last checkpoint taken.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CheckpointInfo {
    /// Its number (counting across runs).
    pub number: u64,
    /// The batch it covers.
    pub batch: u64,
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// How long writing it took, µs.
    pub took_us: u64,
}

/// The batch-by-batch part, under one lock.
#[derive(Debug)]
pub struct View {
    /// The run's totals.
    pub totals: Totals,
    /// Recent batches with records, oldest first.
    pub recent: VecDeque<BatchMetrics>,
    /// Time buckets.
    pub timeline: Timeline,
    /// The newest batch, with records or not.
    pub last: Option<BatchMetrics>,
    delays: Option<Box<Delays>>,
}

/// A pipeline's telemetry.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Tenant and pipeline.
    pub labels: Arc<Labels>,
    /// Batch interval.
    pub interval: Duration,
    /// Per stage, in order.
    pub stages: Vec<StageTelemetry>,
    /// Per source, in order.
    pub sources: Vec<SourceTelemetry>,
    /// Per sink, in order.
    pub sinks: Vec<SinkSeries>,
    /// Batches processed, with records or not.
    pub batches: Counter,
    /// Processing time of batches with records.
    pub processing: Histogram,
    /// Scheduling delay of batches with records.
    pub scheduling: Histogram,
    /// Total delay of batches with records.
    pub total_delay: Histogram,
    /// Per batch with records, from the receipt of its oldest record to the
    /// end of its processing.
    pub latency: Histogram,
    /// Checkpoints written.
    pub checkpoints: Counter,
    /// Chunks waiting in the ingest queue, as of the last batch cut.
    pub queue_depth: Gauge,
    /// The ingest queue's capacity, in chunks.
    pub queue_capacity: u64,
    /// The state file, when the pipeline keeps one.
    pub state_file: OnceLock<PathBuf>,
    /// When the pipeline was built, ms since the epoch.
    pub started_ms: u64,
    /// Versions and problems, for the dashboard.
    pub journal: Arc<Journal>,
    /// With `tasks = "per-partition"`: this process's tasks.
    pub tasks: OnceLock<Arc<crate::tasks::TaskBoard>>,
    last_checkpoint: Mutex<Option<CheckpointInfo>>,
    view: Mutex<View>,
}

impl PipelineMetrics {
    /// Empty series for a pipeline of `shape`.
    pub fn new(shape: Shape) -> Arc<Self> {
        let labels = Arc::new(shape.labels);
        let journal = Arc::new(Journal::default());
        let stages = shape
            .stages
            .iter()
            .enumerate()
            .map(|(i, name)| Arc::new(StageSeries::new(labels.clone(), i, name, journal.clone())))
            .collect();
        Arc::new(PipelineMetrics {
            stages,
            sources: shape
                .sources
                .into_iter()
                .map(|name| Arc::new(SourceSeries::new(name)))
                .collect(),
            sinks: shape
                .sinks
                .into_iter()
                .map(|name| SinkSeries {
                    name,
                    ..SinkSeries::default()
                })
                .collect(),
            batches: Counter::default(),
            processing: Histogram::default(),
            scheduling: Histogram::default(),
            total_delay: Histogram::default(),
            latency: Histogram::default(),
            checkpoints: Counter::default(),
            queue_depth: Gauge::default(),
            queue_capacity: shape.queue_capacity as u64,
            state_file: OnceLock::new(),
            started_ms: crate::batch::now_ms(),
            journal,
            tasks: OnceLock::new(),
            last_checkpoint: Mutex::new(None),
            view: Mutex::new(View {
                totals: Totals::default(),
                recent: VecDeque::new(),
                timeline: Timeline::new(shape.interval, shape.stages.len()),
                last: None,
                delays: None,
            }),
            labels,
            interval: shape.interval,
        })
    }

    /// Counts a finished batch (the `BatchDone` event's half that is not
    /// the log line).
    pub(super) fn record(&self, batch: &BatchMetrics) {
        self.batches.add(1);
        for s in &batch.stages {
            if let Some(series) = self.stages.get(s.index) {
                series.records_in.add(s.records_in as u64);
                series.records_out.add(s.records_out as u64);
                series.busy_ns.add(s.busy.as_nanos() as u64);
            }
        }
        let busy = batch.records_in > 0;
        if busy {
            self.processing.observe(batch.processing_time);
            self.scheduling.observe(batch.scheduling_delay);
            self.total_delay.observe(batch.total_delay);
            if let Some(latency) = batch.latency {
                self.latency.observe(latency);
            }
        }
        let mut view = self.view.lock().unwrap();
        view.totals.add(batch);
        view.timeline
            .add(batch, self.stages.iter().map(|s| s.blocked_ns.get()));
        if busy {
            view.delays.get_or_insert_with(Box::default).record(batch);
            if view.recent.len() == RECENT {
                view.recent.pop_front();
            }
            view.recent.push_back(batch.clone());
        }
        match &mut view.last {
            // Reuse the last one's room for its stages.
            Some(last) => last.clone_from(batch),
            None => view.last = Some(batch.clone()),
        }
    }

    /// Notes a checkpoint written.
    pub(super) fn checkpointed(&self, info: CheckpointInfo) {
        self.checkpoints.add(1);
        *self.last_checkpoint.lock().unwrap() = Some(info);
    }

    /// The last checkpoint written in this run.
    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        *self.last_checkpoint.lock().unwrap()
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.view.lock().unwrap().totals.clone()
    }

    /// The most recent non-empty batches, oldest first.
    pub fn recent(&self) -> Vec<BatchMetrics> {
        self.view.lock().unwrap().recent.iter().cloned().collect()
    }

    /// The batch-by-batch part, locked (keep it short: the pipeline waits).
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap()
    }

    /// A line describing the delay distributions so far, or `None` before
    /// the first non-empty batch.
    pub fn delay_summary(&self) -> Option<String> {
        let view = self.view.lock().unwrap();
        view.delays.as_ref().map(|d| d.describe())
    }

    /// The `q` quantile (0.5, 0.99…) of the scheduling delay, total delay
    /// and latency of non-empty batches so far, or `None` before the first.
    pub fn delay_quantile(&self, q: f64) -> Option<[Duration; 3]> {
        let view = self.view.lock().unwrap();
        let d = view.delays.as_ref()?;
        if d.total.is_empty() {
            return None;
        }
        let at = |h: &hdrhistogram::Histogram<u64>| Duration::from_micros(h.value_at_quantile(q));
        Some([at(&d.scheduling), at(&d.total), at(&d.latency)])
    }

    /// The state file's size now, if the pipeline keeps one.
    pub fn state_bytes(&self) -> Option<u64> {
        let path = self.state_file.get()?;
        std::fs::metadata(path).ok().map(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::telemetry::StageMetrics;

    fn metrics() -> Arc<PipelineMetrics> {
        PipelineMetrics::new(Shape {
            labels: Labels {
                tenant: None,
                pipeline: "p".into(),
            },
            interval: Duration::from_millis(10),
            stages: vec!["split".into(), "count".into()],
            sources: vec!["generator-0".into()],
            sinks: vec!["null-0".into()],
            queue_capacity: 8,
        })
    }

    fn batch(
        id: u64,
        time_ms: u64,
        records: usize,
        stages: &[(usize, usize, usize)],
    ) -> BatchMetrics {
        BatchMetrics {
            id,
            time_ms,
            records_in: records,
            records_out: stages.last().map_or(records, |s| s.2),
            input_rate: records as f64 * 100.0,
            scheduling_delay: Duration::from_millis(2),
            processing_time: Duration::from_millis(id + 1),
            total_delay: Duration::from_millis(id + 3),
            latency: Some(Duration::from_millis(12)),
            delivery: Duration::from_micros(100),
            stages: stages
                .iter()
                .map(|&(index, records_in, records_out)| StageMetrics {
                    index,
                    name: ["split", "count"][index].into(),
                    version: "v".into(),
                    records_in,
                    records_out,
                    failed: 0,
                    busy: Duration::from_micros(300),
                })
                .collect(),
            pipeline_input: true,
            pipeline_output: true,
        }
    }

    #[test]
    fn batches_count_by_stage_index_and_fill_one_second_buckets() {
        let m = metrics();
        // 10 ms batches: 100 of them in the first second, 5 in the next.
        for id in 0..105u64 {
            let records = if id % 2 == 0 { 4 } else { 0 };
            // A batch whose first stage emitted nothing skips the second:
            // its figures have the first stage only.
            let stages: &[(usize, usize, usize)] = match (records, id % 4) {
                (0, _) => &[],
                (_, 0) => &[(0, 4, 0)],
                _ => &[(0, 4, 8), (1, 8, 2)],
            };
            m.record(&batch(id, 1_000_000 + id * 10, records, stages));
        }
        assert_eq!(m.batches.get(), 105);
        let busy = 53; // even ids among 0..105
        assert_eq!(m.processing.snapshot().count(), busy);
        assert_eq!(m.stages[0].records_in.get(), 4 * busy);
        // The second stage ran only in batches 2, 6, 10, …: ids ≡ 2 mod 4.
        let second = (0..105u64).filter(|id| id % 4 == 2).count() as u64;
        assert_eq!(m.stages[1].records_in.get(), 8 * second);
        assert_eq!(m.stages[1].records_out.get(), 2 * second);
        let view = m.view();
        assert_eq!(view.totals.batches, 105);
        assert_eq!(view.totals.busy_batches, busy);
        assert_eq!(view.recent.len(), busy as usize);
        assert_eq!(view.last.as_ref().map(|b| b.id), Some(104));
        let buckets: Vec<_> = view.timeline.buckets().collect();
        assert_eq!(buckets.len(), 2, "a bucket is a second wide");
        assert_eq!((buckets[0].batches, buckets[1].batches), (100, 5));
        assert_eq!(buckets[0].records_in, 4 * 50);
        // Busy time lands on the right stage.
        assert_eq!(
            buckets[0].busy[1],
            300 * (0..100u64).filter(|id| id % 4 == 2).count() as u64
        );
    }

    #[test]
    fn recent_batches_and_buckets_stay_bounded() {
        let m = metrics();
        for id in 0..(RECENT as u64 + 50) {
            m.record(&batch(id, id * 1000, 1, &[(0, 1, 1), (1, 1, 1)]));
        }
        let view = m.view();
        assert_eq!(view.recent.len(), RECENT);
        assert_eq!(view.recent.front().map(|b| b.id), Some(50));
        assert_eq!(
            view.timeline.buckets().count(),
            crate::telemetry::timeline::BUCKETS
        );
    }
}
