//! Cutting the ingest queue into batches, one per interval.
//!
//! Sources stamp each chunk with the instant it was received and push it
//! into a bounded queue. Batch `k` holds every chunk received in
//! `[start + k·interval, start + (k+1)·interval)`, capped at
//! `max_records` records and `max_bytes` bytes of keys and values; an
//! interval with more than that is cut into several batches with the same
//! batch time, as soon as each is full. While a batch's interval is open the batcher drains the
//! queue into it, so sources are only held back when a batch is full or the
//! stages fall behind (then the queue fills, and a full queue makes sources
//! wait: backpressure with bounded memory).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::{Batch, Records, SourcePosition};

/// Records that one source received at one instant.
#[derive(Debug)]
pub struct Chunk {
    /// Index of the source in the pipeline.
    pub source: usize,
    /// When the records were received.
    pub received: Instant,
    /// The records.
    pub records: Records,
    /// The source's position after these records, if it tracks one.
    pub position: Option<String>,
}

/// What [`Batcher::next`] produced.
#[derive(Debug)]
pub enum Cut {
    /// The next batch (possibly empty).
    Batch(Batch),
    /// Every source has ended and every record has been batched.
    Finished,
}

/// Cuts the ingest queue into one [`Batch`] per interval.
pub struct Batcher {
    rx: mpsc::Receiver<Chunk>,
    interval: Duration,
    max_records: usize,
    max_bytes: usize,
    /// Instant the current interval ends.
    end: Instant,
    /// Wall-clock start of the current interval, ms since the epoch.
    time_ms: u64,
    next_id: u64,
    /// A chunk received after the current interval, held for the next one.
    pending: Option<Chunk>,
    closed: bool,
    /// Records and value bytes of the last batch of more than one chunk:
    /// the next such batch reserves that much when its second chunk
    /// arrives, instead of growing (and copying) itself chunk by chunk.
    last_size: (usize, usize),
}

impl Batcher {
    /// A batcher whose first interval starts now.
    pub fn new(
        rx: mpsc::Receiver<Chunk>,
        interval: Duration,
        max_records: usize,
        max_bytes: usize,
    ) -> Self {
        Batcher {
            rx,
            interval,
            max_records,
            max_bytes,
            end: Instant::now() + interval,
            time_ms: super::now_ms(),
            next_id: 0,
            pending: None,
            closed: false,
            last_size: (0, 0),
        }
    }

    /// Chunks waiting in the ingest queue now.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Waits for the current interval to end and returns its batch.
    ///
    /// Returns [`Cut::Finished`] once every source has ended and the queue
    /// is empty; the last batch before that holds whatever was left, without
    /// waiting for its interval to end.
    pub async fn next(&mut self) -> Cut {
        if self.closed && self.pending.is_none() {
            return Cut::Finished;
        }
        let end = self.end;
        let mut records = Records::default();
        let mut positions: Vec<SourcePosition> = Vec::new();
        let mut oldest: Option<Instant> = None;
        let mut full = false;
        // A second chunk came (the first is moved in), and room was made.
        let mut grown = false;
        loop {
            if records.len() >= self.max_records
                || records.values.data.len() + records.keys.data.len() >= self.max_bytes
            {
                full = true;
                break;
            }
            let chunk = match self.pending.take() {
                Some(chunk) => chunk,
                None if self.closed => break,
                None => tokio::select! {
                    biased;
                    chunk = self.rx.recv() => match chunk {
                        Some(chunk) => chunk,
                        None => {
                            self.closed = true;
                            break;
                        }
                    },
                    _ = sleep_until(end) => break,
                },
            };
            if chunk.received >= end {
                self.pending = Some(chunk);
                break;
            }
            // The caps are hard: a chunk that would push a non-empty batch
            // past one waits for the next batch. (A single chunk larger than
            // a cap is never split: it goes alone.)
            let bytes = records.values.data.len() + records.keys.data.len();
            let chunk_bytes = chunk.records.values.data.len() + chunk.records.keys.data.len();
            if !records.is_empty()
                && (records.len() + chunk.records.len() > self.max_records
                    || bytes + chunk_bytes > self.max_bytes)
            {
                self.pending = Some(chunk);
                full = true;
                break;
            }
            oldest = Some(oldest.map_or(chunk.received, |o| o.min(chunk.received)));
            if let Some(position) = chunk.position {
                match positions.iter_mut().find(|p| p.source == chunk.source) {
                    Some(p) => p.position = position,
                    None => positions.push(SourcePosition {
                        source: chunk.source,
                        position,
                    }),
                }
            }
            if !records.is_empty() && !grown {
                let (n, bytes) = self.last_size;
                records.reserve_values(n, bytes);
                grown = true;
            }
            records.append(chunk.records);
        }
        if grown {
            self.last_size = (records.len(), records.values.data.len());
        }
        records.trim();
        // A full batch goes at once, and the rest of its interval follows in
        // the next batch (same batch time), so the caps bound memory without
        // capping throughput. Otherwise the batch waits for its interval to
        // end, unless the sources are done.
        let interval_over = !full;
        if interval_over && (!self.closed || self.pending.is_some()) {
            sleep_until(end).await;
        }
        if self.closed && self.pending.is_none() && records.is_empty() {
            return Cut::Finished;
        }
        let batch = Batch {
            id: self.next_id,
            time_ms: self.time_ms,
            ready_at: end.min(Instant::now()),
            oldest_received: oldest,
            records,
            positions,
            ends_interval: interval_over,
        };
        self.next_id += 1;
        if interval_over {
            self.end += self.interval;
            self.time_ms += self.interval.as_millis() as u64;
        }
        Cut::Batch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(source: usize, values: &[&str], received: Instant) -> Chunk {
        let mut records = Records::default();
        for v in values {
            records.push_value(v.as_bytes(), 0);
        }
        Chunk {
            source,
            received,
            records,
            position: Some(format!("{}", values.len())),
        }
    }

    fn values(batch: &Batch) -> Vec<String> {
        batch
            .records
            .iter()
            .map(|r| String::from_utf8(r.value().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn every_record_lands_in_exactly_one_batch_in_order() {
        let (tx, rx) = mpsc::channel(4);
        let mut batcher = Batcher::new(rx, Duration::from_millis(100), 1000, 1 << 20);
        let producer = tokio::spawn(async move {
            for i in 0..30 {
                let at = Instant::now();
                tx.send(chunk(0, &[&format!("r{i}")], at)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(17)).await;
            }
        });
        let mut seen = Vec::new();
        let mut ids = Vec::new();
        loop {
            match batcher.next().await {
                Cut::Batch(b) => {
                    ids.push(b.id);
                    seen.extend(values(&b));
                }
                Cut::Finished => break,
            }
        }
        producer.await.unwrap();
        let expected: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
        assert_eq!(seen, expected);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        // 30 records 17 ms apart span ~5 intervals of 100 ms.
        assert!(ids.len() >= 5, "{ids:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn max_records_defers_the_rest() {
        let (tx, rx) = mpsc::channel(8);
        let mut batcher = Batcher::new(rx, Duration::from_millis(100), 2, 1 << 20);
        let now = Instant::now();
        for i in 0..5 {
            tx.send(chunk(1, &[&format!("{i}")], now)).await.unwrap();
        }
        drop(tx);
        let mut sizes = Vec::new();
        while let Cut::Batch(b) = batcher.next().await {
            sizes.push(b.records.len());
            assert_eq!(b.positions.len(), 1);
        }
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn max_bytes_defers_the_rest() {
        let (tx, rx) = mpsc::channel(8);
        // Each chunk carries 10 bytes; at most 25 bytes per batch: two chunks.
        let mut batcher = Batcher::new(rx, Duration::from_millis(100), 1000, 25);
        let now = Instant::now();
        for i in 0..5 {
            tx.send(chunk(0, &[&format!("{i}{i}{i}{i}{i}{i}{i}{i}{i}{i}")], now))
                .await
                .unwrap();
        }
        drop(tx);
        let mut sizes = Vec::new();
        while let Cut::Batch(b) = batcher.next().await {
            sizes.push(b.records.len());
        }
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
