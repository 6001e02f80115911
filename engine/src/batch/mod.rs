//! Micro-batches: the columnar [`Records`] they carry, the [`Batch`] with its
//! timing and source positions, and the [`Batcher`] that cuts the ingest
//! queue into one batch per interval. Running stages and sinks over a batch
//! belongs to `pipeline`.

mod batcher;
mod records;

pub use batcher::{Batcher, Chunk, Cut};
pub use records::{Column, RecordRef, Records};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where a source has got to, as of the end of a batch. Committed back to
/// the source once every sink has acknowledged the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// Index of the source in the pipeline file.
    pub source: usize,
    /// Source-specific position, e.g. `notes.txt:120` (a file and a line).
    pub position: String,
}

/// All records received in one interval, with when and where they came from.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number in this run, from 0.
    pub id: u64,
    /// Start of the interval, ms since the Unix epoch.
    pub time_ms: u64,
    /// The interval's end: when the batch was ready to process.
    pub ready_at: Instant,
    /// When the oldest record in the batch was received.
    pub oldest_received: Option<Instant>,
    /// The records.
    pub records: Records,
    /// Latest position of each source that contributed to the batch.
    pub positions: Vec<SourcePosition>,
    /// Whether this is the interval's last batch (false for a batch cut
    /// early by `max_batch_records` or `max_batch_bytes`: the rest of its
    /// interval follows with the same batch time).
    pub ends_interval: bool,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
