//! The figures of one batch in Spark Streaming's terms — input rate,
//! scheduling delay, processing time, total delay — with each stage's
//! share, and the totals of a run. Plain values: the pipeline fills them
//! in as a batch goes through, and the `BatchDone` event hands them to the
//! log, the metrics and the dashboard.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

/// One stage's share of a batch.
#[derive(Debug, Clone)]
pub struct StageMetrics {
    /// The stage's place in the pipeline, from 0.
    pub index: usize,
    /// Stage name.
    pub name: Arc<str>,
    /// The plugin version that processed the batch (`file.wasm@hash`).
    pub version: Arc<str>,
    /// Records into the stage.
    pub records_in: usize,
    /// Records out of the stage.
    pub records_out: usize,
    /// Records dead-lettered.
    pub failed: usize,
    /// Time spent in the plugin.
    pub busy: Duration,
}

/// The figures of one batch.
#[derive(Debug, Clone)]
pub struct BatchMetrics {
    /// Batch id.
    pub id: u64,
    /// Batch time, ms since the epoch.
    pub time_ms: u64,
    /// Records received in the batch's interval.
    pub records_in: usize,
    /// Records written to the sinks.
    pub records_out: usize,
    /// Records received per second over the interval.
    pub input_rate: f64,
    /// From the end of the interval to the start of processing.
    pub scheduling_delay: Duration,
    /// From the start of processing until every sink took the output.
    pub processing_time: Duration,
    /// Scheduling delay plus processing time.
    pub total_delay: Duration,
    /// From the receipt of the batch's oldest record to the end of processing.
    pub latency: Option<Duration>,
    /// Time the sinks and the checkpoint took (part of processing time).
    pub delivery: Duration,
    /// Per stage, in order (a stage that had nothing to do is missing).
    pub stages: Vec<StageMetrics>,
    /// Whether its input is the pipeline's and its output the pipeline's
    /// (not, with `partition_by`, a repartition topic the engine writes and
    /// reads itself): the pipeline's totals count only those.
    pub pipeline_input: bool,
    pub pipeline_output: bool,
}

impl BatchMetrics {
    /// Records dead-lettered by every stage.
    pub fn failed(&self) -> usize {
        self.stages.iter().map(|s| s.failed).sum()
    }
}

/// Totals since the pipeline started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Batches processed.
    pub batches: u64,
    /// Non-empty batches processed.
    pub busy_batches: u64,
    /// Records received.
    pub records_in: u64,
    /// Records written to sinks.
    pub records_out: u64,
    /// Records dead-lettered, all stages.
    pub failed: u64,
}

impl Totals {
    pub(super) fn add(&mut self, batch: &BatchMetrics) {
        self.batches += 1;
        self.busy_batches += u64::from(batch.records_in > 0);
        if batch.pipeline_input {
            self.records_in += batch.records_in as u64;
        }
        if batch.pipeline_output {
            self.records_out += batch.records_out as u64;
        }
        self.failed += batch.failed() as u64;
    }
}

/// Distributions of the delays of non-empty batches, in microseconds, for
/// the summary a run ends with. Two significant digits (1 % resolution)
/// keep each at a few tens of KiB, made at the first batch with records.
#[derive(Debug)]
pub struct Delays {
    /// Scheduling delay.
    pub scheduling: Histogram<u64>,
    /// Total delay (scheduling delay + processing time).
    pub total: Histogram<u64>,
    /// From the receipt of a batch's oldest record to the end of processing.
    pub latency: Histogram<u64>,
}

impl Default for Delays {
    fn default() -> Self {
        // 1 µs to 1 hour, 2 significant digits (1 %): about 25 KB each,
        // against about 190 KB with 3 digits, which a service hosting a
        // thousand pipelines would pay three times over for each.
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
        Delays {
            scheduling: h(),
            total: h(),
            latency: h(),
        }
    }
}

impl Delays {
    pub(super) fn record(&mut self, batch: &BatchMetrics) {
        let us = |d: Duration| (d.as_micros() as u64).clamp(1, 3_600_000_000);
        self.scheduling
            .saturating_record(us(batch.scheduling_delay));
        self.total.saturating_record(us(batch.total_delay));
        if let Some(latency) = batch.latency {
            self.latency.saturating_record(us(latency));
        }
    }

    /// `p50 … p95 … p99 …` of one distribution, in milliseconds.
    pub fn summary(h: &Histogram<u64>) -> String {
        let q = |q: f64| super::ms(Duration::from_micros(h.value_at_quantile(q)));
        format!(
            "p50 {} p95 {} p99 {} max {}",
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0)
        )
    }

    /// The line a run's log ends with.
    pub fn describe(&self) -> String {
        format!(
            "delays over {} batches: scheduling {}; total {}; latency {}",
            self.total.len(),
            Delays::summary(&self.scheduling),
            Delays::summary(&self.total),
            Delays::summary(&self.latency)
        )
    }
}
