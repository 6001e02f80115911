//! The log lines of a pipeline's batches: one per batch when the interval
//! is a second or more, otherwise a summary every second (and every batch
//! at `debug` level). The `BatchDone` event calls it; the metrics are
//! counted beside it there.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::figures::BatchMetrics;
use super::ms;
use super::series::Labels;

/// Writes batch figures to the log: every batch when the interval is a
/// second or more, otherwise a summary every second (and every batch at
/// `debug` level).
pub struct Reporter {
    labels: Arc<Labels>,
    per_batch: bool,
    window: Window,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    first_id: u64,
    batches: u64,
    records_in: usize,
    records_out: usize,
    failed: usize,
    processing_sum: Duration,
    processing_max: Duration,
    scheduling_max: Duration,
    total_max: Duration,
    latency_max: Duration,
}

/// Summary period for short intervals.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

impl Reporter {
    /// A reporter for one pipeline.
    pub fn new(labels: Arc<Labels>, interval: Duration) -> Self {
        Reporter {
            labels,
            per_batch: interval >= Duration::from_secs(1),
            window: Window::default(),
        }
    }

    /// Reports one batch.
    pub fn batch(&mut self, m: &BatchMetrics) {
        if self.per_batch {
            if m.records_in > 0 || m.records_out > 0 {
                tracing::info!(tenant = self.labels.tenant.as_deref(), pipeline = %self.labels.pipeline, "{}", describe(m));
            } else {
                tracing::debug!(tenant = self.labels.tenant.as_deref(), pipeline = %self.labels.pipeline, "{}", describe(m));
            }
            return;
        }
        tracing::debug!(tenant = self.labels.tenant.as_deref(), pipeline = %self.labels.pipeline, "{}", describe(m));
        let w = &mut self.window;
        let now = Instant::now();
        if w.started.is_none() {
            *w = Window {
                started: Some(now),
                first_id: m.id,
                ..Window::default()
            };
        }
        w.batches += 1;
        w.records_in += m.records_in;
        w.records_out += m.records_out;
        w.failed += m.failed();
        w.processing_sum += m.processing_time;
        w.processing_max = w.processing_max.max(m.processing_time);
        w.scheduling_max = w.scheduling_max.max(m.scheduling_delay);
        w.total_max = w.total_max.max(m.total_delay);
        w.latency_max = w.latency_max.max(m.latency.unwrap_or_default());
        if now.duration_since(w.started.unwrap()) >= SUMMARY_EVERY {
            self.flush(m.id);
        }
    }

    /// Logs what is left of the current summary window.
    pub fn flush(&mut self, last_id: u64) {
        let w = std::mem::take(&mut self.window);
        let Some(started) = w.started else { return };
        if w.records_in == 0 && w.records_out == 0 {
            return;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let mut line = format!(
            "batches {}-{} ({} in {:.1}s): {} records in, {} out, input rate {:.0}/s, processing avg {} max {}, \
             scheduling delay max {}, total delay max {}, latency max {}",
            w.first_id,
            last_id,
            w.batches,
            secs,
            w.records_in,
            w.records_out,
            w.records_in as f64 / secs,
            ms(w.processing_sum / w.batches.max(1) as u32),
            ms(w.processing_max),
            ms(w.scheduling_max),
            ms(w.total_max),
            ms(w.latency_max),
        );
        if w.failed > 0 {
            let _ = write!(line, ", {} dead-lettered", w.failed);
        }
        tracing::info!(tenant = self.labels.tenant.as_deref(), pipeline = %self.labels.pipeline, "{line}");
    }
}

/// One batch as a log line.
pub fn describe(m: &BatchMetrics) -> String {
    let mut line = format!(
        "batch {}: {} records in, {} out, input rate {:.0}/s, processing {}, scheduling delay {}, total delay {}",
        m.id,
        m.records_in,
        m.records_out,
        m.input_rate,
        ms(m.processing_time),
        ms(m.scheduling_delay),
        ms(m.total_delay),
    );
    if let Some(latency) = m.latency {
        let _ = write!(line, ", latency {}", ms(latency));
    }
    if !m.stages.is_empty() {
        line.push_str(" [");
        for (i, s) in m.stages.iter().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            let _ = write!(
                line,
                "{} {}→{} {}",
                s.name,
                s.records_in,
                s.records_out,
                ms(s.busy)
            );
            if s.failed > 0 {
                let _ = write!(line, " ({} dead-lettered)", s.failed);
            }
        }
        line.push(']');
    }
    line
}
