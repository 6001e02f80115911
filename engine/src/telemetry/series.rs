//! The series a pipeline exposes — counters, gauges and histograms kept in
//! atomics — and the per-stage, per-source and per-sink sets of them. They
//! are written once per batch (or per chunk a source hands over), never per
//! record, by the events in [`super::events`], and read by the Prometheus
//! exposition ([`super::expose`]) and the dashboard. Nothing here logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::Journal;

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the histogram buckets, in seconds: from a millisecond
/// (a 10 ms batch's share) to a minute (a pipeline far behind).
pub const BOUNDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const BOUNDS_NS: [u64; 14] = {
    let mut ns = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        ns[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// A distribution of durations in fixed buckets ([`BOUNDS`] and one past
/// the last), with their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket (not cumulative); the last is past [`BOUNDS`].
    pub counts: [u64; BOUNDS.len() + 1],
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The counts and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for (to, from) in s.counts.iter_mut().zip(&self.counts) {
            *to = from.load(Relaxed);
        }
        s.sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        s
    }
}

/// Whom a pipeline's series belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The tenant, under `sluice serve`.
    pub tenant: Option<String>,
    /// The pipeline's name.
    pub pipeline: String,
}

/// How a call into a plugin ended, as `sluice_plugin_calls_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It returned an output the engine took.
    Ok,
    /// It trapped.
    Trap,
    /// It ran past its time limit.
    Timeout,
    /// It went past its memory limit.
    OutOfMemory,
    /// It returned an error, or an output that breaks the batch layout.
    Failed,
}

impl CallOutcome {
    /// Every outcome, in the order they are exposed.
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Ok,
        CallOutcome::Trap,
        CallOutcome::Timeout,
        CallOutcome::OutOfMemory,
        CallOutcome::Failed,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Trap => "trap",
            CallOutcome::Timeout => "timeout",
            CallOutcome::OutOfMemory => "out_of_memory",
            CallOutcome::Failed => "failed",
        }
    }
}

/// How a new plugin version fared, as `sluice_plugin_reloads_total` counts
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// It went live.
    Live,
    /// It failed to load or to `init`; the running version carried on.
    Rejected,
    /// It failed on probation and the previous version came back.
    RolledBack,
}

impl ReloadOutcome {
    /// Every outcome, in the order they are exposed.
    pub const ALL: [ReloadOutcome; 3] = [
        ReloadOutcome::Live,
        ReloadOutcome::Rejected,
        ReloadOutcome::RolledBack,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Live => "live",
            ReloadOutcome::Rejected => "rejected",
            ReloadOutcome::RolledBack => "rolled_back",
        }
    }
}

/// One stage's series.
#[derive(Debug)]
pub struct StageSeries {
    /// The pipeline's labels.
    pub labels: Arc<Labels>,
    /// The stage's name.
    pub name: Arc<str>,
    /// Its place in the pipeline, from 0.
    pub index: usize,
    /// Records into the stage.
    pub records_in: Counter,
    /// Records out of the stage.
    pub records_out: Counter,
    /// Records the stage dead-lettered.
    pub dead_letters: Counter,
    /// Calls into the plugin, by [`CallOutcome`].
    pub calls: [Counter; 5],
    /// New versions, by [`ReloadOutcome`].
    pub reloads: [Counter; 3],
    /// Linear memory of the live instance (0 without one).
    pub memory: Gauge,
    /// Time spent in the plugin, ns.
    pub busy_ns: Counter,
    /// Time a processed batch waited for the next stage (or the sinks) to
    /// take it, ns: backpressure from downstream.
    pub blocked_ns: Counter,
    version: Mutex<Arc<str>>,
    pub(super) journal: Arc<Journal>,
}

/// What a stage reports through.
pub type StageTelemetry = Arc<StageSeries>;

impl StageSeries {
    pub(super) fn new(
        labels: Arc<Labels>,
        index: usize,
        name: &str,
        journal: Arc<Journal>,
    ) -> Self {
        StageSeries {
            labels,
            name: name.into(),
            index,
            records_in: Counter::default(),
            records_out: Counter::default(),
            dead_letters: Counter::default(),
            calls: Default::default(),
            reloads: Default::default(),
            memory: Gauge::default(),
            busy_ns: Counter::default(),
            blocked_ns: Counter::default(),
            version: Mutex::new("".into()),
            journal,
        }
    }

    /// Series for a stage that belongs to no registered pipeline (`sluice
    /// check`, benchmarks): counted, but shown nowhere.
    pub fn detached(pipeline: &str, stage: &str) -> StageTelemetry {
        let labels = Arc::new(Labels {
            tenant: None,
            pipeline: pipeline.to_string(),
        });
        Arc::new(StageSeries::new(labels, 0, stage, Arc::default()))
    }

    /// The live plugin version's label.
    pub fn version(&self) -> Arc<str> {
        self.version.lock().unwrap().clone()
    }

    /// Sets the live plugin version's label.
    pub fn set_version(&self, label: Arc<str>) {
        *self.version.lock().unwrap() = label;
    }

    /// Counts time a processed batch waited for downstream.
    pub fn blocked(&self, d: Duration) {
        self.blocked_ns.add(d.as_nanos() as u64);
    }
}

/// One source's series.
#[derive(Debug, Default)]
pub struct SourceSeries {
    /// `type-index`, e.g. `kafka-0`.
    pub name: String,
    /// Records the source handed to the pipeline.
    pub records: Counter,
    /// Kafka: messages behind the partition's end, by (topic, partition),
    /// as of the consumer's last statistics.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

/// What a source reports through.
pub type SourceTelemetry = Arc<SourceSeries>;

impl SourceSeries {
    /// Series named `name`.
    pub fn new(name: String) -> Self {
        SourceSeries {
            name,
            ..SourceSeries::default()
        }
    }

    /// Replaces the consumer lag of every partition the source reads.
    pub fn set_lag(&self, lag: BTreeMap<(String, i32), i64>) {
        *self.lag.lock().unwrap() = lag;
    }

    /// The consumer lag by (topic, partition).
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().unwrap().clone()
    }
}

/// One sink's series.
#[derive(Debug, Default)]
pub struct SinkSeries {
    /// `type-index`, e.g. `directory-0`.
    pub name: String,
    /// Records the sink took.
    pub records: Counter,
}

/// `type-index` for a source's or sink's config: the serde variant's name
/// (the first word of its `Debug` form, e.g. `Kafka(…)`), in kebab case,
/// and its place in the file. Taken from `Debug` so that a new source or
/// sink type is named without a list here to keep in step.
pub fn kind_name(config: &impl std::fmt::Debug, index: usize) -> String {
    let debug = format!("{config:?}");
    let variant = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    let mut name = String::with_capacity(variant.len() + 4);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    if name.is_empty() {
        name.push_str("source");
    }
    format!("{name}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_duration_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500)); // ≤ 1 ms
        h.observe(Duration::from_millis(1)); // ≤ 1 ms (bounds are inclusive)
        h.observe(Duration::from_millis(7)); // ≤ 10 ms
        h.observe(Duration::from_secs(120)); // past the last bound
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[2], 1);
        assert_eq!(s.counts[BOUNDS.len()], 1);
        assert_eq!(s.count(), 4);
        assert!((s.sum - 120.0085).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn kinds_are_named_from_the_config_variant() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Config {
            Kafka { brokers: String },
            HttpPoll(u8),
            Null,
        }
        let kafka = Config::Kafka {
            brokers: "b".into(),
        };
        assert_eq!(kind_name(&kafka, 0), "kafka-0");
        assert_eq!(kind_name(&Config::HttpPoll(1), 2), "http-poll-2");
        assert_eq!(kind_name(&Config::Null, 1), "null-1");
    }
}
