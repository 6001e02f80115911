//! Telemetry: what a pipeline did, said once. Each thing that happens — a
//! batch done, a plugin call, a new version live, rejected or rolled back,
//! records dead-lettered, a checkpoint — is an event type in [`events`]
//! that writes its log line and updates its metrics together, labelled
//! with the tenant (hosted pipelines), pipeline, stage, source or sink.
//!
//! - [`figures`]: a batch's figures in Spark Streaming's terms (input
//!   rate, scheduling delay, processing time, total delay) and the run's
//!   totals;
//! - [`series`]: the counters, gauges and histograms, in atomics, written
//!   once per batch (never per record);
//! - [`pipeline`]: [`PipelineMetrics`], one pipeline's series with its
//!   recent batches, [`timeline`] and [`journal`] for the dashboard;
//! - [`report`]: the batch log lines; [`logging`]: text or JSON logs;
//! - [`expose`]: the Prometheus text format; [`process`]: the process's
//!   CPU and memory.
//!
//! Serving `/metrics` and the dashboard is `dashboard`'s business.

pub mod events;
pub mod expose;
pub mod figures;
pub mod journal;
pub mod logging;
pub mod pipeline;
pub mod process;
pub mod report;
pub mod series;
pub mod timeline;

use std::time::Duration;

pub use figures::{BatchMetrics, StageMetrics, Totals};
pub use pipeline::{PipelineMetrics, Shape};
pub use report::{Reporter, describe};
pub use series::{Labels, SourceTelemetry, StageSeries, StageTelemetry};

/// A duration in milliseconds with sensible precision.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 1.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// `HH:MM:SS.mmm` of a Unix time in milliseconds (UTC).
pub fn clock_time(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_time_is_utc_time_of_day() {
        // 2023-11-14T22:13:20.123Z
        assert_eq!(super::clock_time(1_700_000_000_123), "22:13:20.123");
    }
}
