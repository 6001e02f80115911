//! A pipeline's recent past in time buckets, for the dashboard's
//! timelines: per bucket the batches, records and the delays' average and
//! maximum, and each stage's busy and backpressured time. A bucket is a
//! second, or one batch interval when that is longer, so a pipeline with
//! 10 ms batches draws 180 points, not 18,000: what a person cannot see is
//! added up here, on the server, as batches finish. Buckets are reused as
//! they fall off the end, so the batch path allocates nothing here once the
//! ring is full.

use std::collections::VecDeque;
use std::time::Duration;

use super::figures::BatchMetrics;

/// Buckets kept: three minutes of one-second buckets.
pub const BUCKETS: usize = 180;

/// One time bucket.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Start, ms since the epoch.
    pub start_ms: u64,
    /// The latest batch time in it, ms since the epoch.
    pub last_ms: u64,
    /// Batches finished whose batch time falls in the bucket.
    pub batches: u64,
    /// Records they took in.
    pub records_in: u64,
    /// Records they wrote.
    pub records_out: u64,
    /// Records they dead-lettered.
    pub dead_letters: u64,
    /// Batches with records among them (the delays are theirs).
    pub busy_batches: u64,
    /// Sum and maximum of the scheduling delay, µs.
    pub scheduling: (u64, u64),
    /// Sum and maximum of the processing time, µs.
    pub processing: (u64, u64),
    /// Sum and maximum of the total delay, µs.
    pub total: (u64, u64),
    /// Per stage, time in the plugin, µs.
    pub busy: Vec<u64>,
    /// Per stage, time a processed batch waited for downstream, µs.
    pub blocked: Vec<u64>,
    /// Time the sinks and checkpoints took, µs.
    pub delivery: u64,
}

impl Bucket {
    fn reset(&mut self, start_ms: u64, stages: usize) {
        let (mut busy, mut blocked) = (
            std::mem::take(&mut self.busy),
            std::mem::take(&mut self.blocked),
        );
        busy.clear();
        busy.resize(stages, 0);
        blocked.clear();
        blocked.resize(stages, 0);
        *self = Bucket {
            start_ms,
            busy,
            blocked,
            ..Bucket::default()
        };
    }
}

/// The ring of buckets.
#[derive(Debug)]
pub struct Timeline {
    width_ms: u64,
    interval_ms: u64,
    stages: usize,
    buckets: VecDeque<Bucket>,
    /// Each stage's blocked time as last seen, ns, to take differences.
    last_blocked_ns: Vec<u64>,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Timeline {
    /// A timeline for a pipeline with `stages` stages and batches every
    /// `interval`.
    pub fn new(interval: Duration, stages: usize) -> Self {
        Timeline {
            width_ms: (interval.as_millis() as u64).max(1000),
            interval_ms: (interval.as_millis() as u64).max(1),
            stages,
            buckets: VecDeque::new(),
            last_blocked_ns: vec![0; stages],
        }
    }

    /// The width of a bucket, ms.
    pub fn width_ms(&self) -> u64 {
        self.width_ms
    }

    /// The time a bucket's batches cover, ms: its width, or less for the
    /// newest bucket while its time is still running (rates divide by
    /// this, so the last point does not dip).
    pub fn covered_ms(&self, b: &Bucket) -> u64 {
        (b.last_ms + self.interval_ms)
            .saturating_sub(b.start_ms)
            .clamp(1, self.width_ms)
    }

    /// Adds a finished batch; `blocked_ns` is each stage's blocked time so
    /// far (a counter), whose growth since the last batch goes to this
    /// batch's bucket.
    pub fn add(&mut self, batch: &BatchMetrics, blocked_ns: impl Iterator<Item = u64>) {
        let start = batch.time_ms - batch.time_ms % self.width_ms;
        let fresh = match self.buckets.back() {
            Some(last) => start > last.start_ms,
            None => true,
        };
        if fresh {
            let mut bucket = if self.buckets.len() == BUCKETS {
                self.buckets.pop_front().unwrap_or_default()
            } else {
                Bucket::default()
            };
            bucket.reset(start, self.stages);
            self.buckets.push_back(bucket);
        }
        // A batch older than the newest bucket (cut early and finished
        // late) goes to the newest: it finished now.
        let b = self.buckets.back_mut().expect("a bucket was just made");
        b.last_ms = b.last_ms.max(batch.time_ms);
        b.batches += 1;
        b.records_in += batch.records_in as u64;
        b.records_out += batch.records_out as u64;
        b.dead_letters += batch.failed() as u64;
        if batch.records_in > 0 {
            b.busy_batches += 1;
            for (slot, d) in [
                (&mut b.scheduling, batch.scheduling_delay),
                (&mut b.processing, batch.processing_time),
                (&mut b.total, batch.total_delay),
            ] {
                slot.0 += us(d);
                slot.1 = slot.1.max(us(d));
            }
        }
        b.delivery += us(batch.delivery);
        for s in &batch.stages {
            if let Some(busy) = b.busy.get_mut(s.index) {
                *busy += us(s.busy);
            }
        }
        for (i, now) in blocked_ns.enumerate().take(self.stages) {
            let grown = now.saturating_sub(self.last_blocked_ns[i]);
            self.last_blocked_ns[i] = now;
            b.blocked[i] += grown / 1000;
        }
    }

    /// The buckets, oldest first.
    pub fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.buckets.iter()
    }

    /// Per stage, the share of the last `window_ms` spent busy and blocked
    /// (0 to 1), and the share of it spent delivering.
    pub fn load(&self, now_ms: u64, window_ms: u64) -> (Vec<(f64, f64)>, f64) {
        let since = now_ms.saturating_sub(window_ms);
        let mut busy = vec![0u64; self.stages];
        let mut blocked = vec![0u64; self.stages];
        let mut delivery = 0;
        for b in self.buckets.iter().rev() {
            if b.start_ms + self.width_ms <= since {
                break;
            }
            for i in 0..self.stages {
                busy[i] += b.busy[i];
                blocked[i] += b.blocked[i];
            }
            delivery += b.delivery;
        }
        let span = (window_ms * 1000) as f64;
        let share = |v: u64| (v as f64 / span).min(1.0);
        (
            busy.iter()
                .zip(&blocked)
                .map(|(&b, &k)| (share(b), share(k)))
                .collect(),
            share(delivery),
        )
    }
}
