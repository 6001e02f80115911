//! Per-batch figures in Spark Streaming's terms — input rate, processing
//! time, scheduling delay, total delay — plus records in and out per stage.
//! [`PipelineMetrics`] is the one place they are kept (recent batches and
//! running totals) for the log, and later for Prometheus and the dashboard;
//! [`Reporter`] turns them into log lines, one per batch or one per second
//! when batches are tiny.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use tokio::time::Instant;

/// How many recent batches are kept.
const RECENT: usize = 1024;

/// One stage's share of a batch.
#[derive(Debug, Clone)]
pub struct StageMetrics {
    /// Stage name.
    pub name: String,
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
    /// Per stage, in order.
    pub stages: Vec<StageMetrics>,
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

/// A pipeline's figures, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    recent: Mutex<VecDeque<BatchMetrics>>,
    totals: Mutex<Totals>,
    delays: Mutex<Delays>,
}

/// Distributions of the delays of non-empty batches, in microseconds.
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
    /// `p50 … p95 … p99 …` of one distribution, in milliseconds.
    pub fn summary(h: &Histogram<u64>) -> String {
        let q = |q: f64| ms(Duration::from_micros(h.value_at_quantile(q)));
        format!(
            "p50 {} p95 {} p99 {} max {}",
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0)
        )
    }
}

impl PipelineMetrics {
    /// Records a batch's figures.
    pub fn record(&self, batch: &BatchMetrics) {
        {
            let mut t = self.totals.lock().unwrap();
            t.batches += 1;
            t.busy_batches += u64::from(batch.records_in > 0);
            t.records_in += batch.records_in as u64;
            t.records_out += batch.records_out as u64;
            t.failed += batch.stages.iter().map(|s| s.failed as u64).sum::<u64>();
        }
        if batch.records_in > 0 {
            {
                let mut d = self.delays.lock().unwrap();
                let us = |d: Duration| (d.as_micros() as u64).clamp(1, 3_600_000_000);
                d.scheduling.saturating_record(us(batch.scheduling_delay));
                d.total.saturating_record(us(batch.total_delay));
                if let Some(latency) = batch.latency {
                    d.latency.saturating_record(us(latency));
                }
            }
            let mut recent = self.recent.lock().unwrap();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(batch.clone());
        }
    }

    /// A line describing the delay distributions so far, or `None` before
    /// the first non-empty batch.
    pub fn delay_summary(&self) -> Option<String> {
        let d = self.delays.lock().unwrap();
        if d.total.is_empty() {
            return None;
        }
        Some(format!(
            "delays over {} batches: scheduling {}; total {}; latency {}",
            d.total.len(),
            Delays::summary(&d.scheduling),
            Delays::summary(&d.total),
            Delays::summary(&d.latency)
        ))
    }

    /// The `q` quantile (0.5, 0.99…) of the scheduling delay, total delay
    /// and latency of non-empty batches so far, or `None` before the first.
    pub fn delay_quantile(&self, q: f64) -> Option<[Duration; 3]> {
        let d = self.delays.lock().unwrap();
        if d.total.is_empty() {
            return None;
        }
        let at = |h: &Histogram<u64>| Duration::from_micros(h.value_at_quantile(q));
        Some([at(&d.scheduling), at(&d.total), at(&d.latency)])
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals.lock().unwrap().clone()
    }

    /// The most recent non-empty batches, oldest first.
    pub fn recent(&self) -> Vec<BatchMetrics> {
        self.recent.lock().unwrap().iter().cloned().collect()
    }
}

/// Writes batch figures to the log: every batch when the interval is a
/// second or more, otherwise a summary every second (and every batch at
/// `debug` level).
pub struct Reporter {
    pipeline: String,
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
    pub fn new(pipeline: &str, interval: Duration) -> Self {
        Reporter {
            pipeline: pipeline.to_string(),
            per_batch: interval >= Duration::from_secs(1),
            window: Window::default(),
        }
    }

    /// Reports one batch.
    pub fn batch(&mut self, m: &BatchMetrics) {
        if self.per_batch {
            if m.records_in > 0 || m.records_out > 0 {
                tracing::info!(pipeline = %self.pipeline, "{}", describe(m));
            } else {
                tracing::debug!(pipeline = %self.pipeline, "{}", describe(m));
            }
            return;
        }
        tracing::debug!(pipeline = %self.pipeline, "{}", describe(m));
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
        w.failed += m.stages.iter().map(|s| s.failed).sum::<usize>();
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
        tracing::info!(pipeline = %self.pipeline, "{line}");
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
