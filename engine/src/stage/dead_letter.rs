//! Dead-letter files: records a stage could not process, one JSON-lines
//! file per batch, each record with the reason; also what a source could
//! not make a record of, or a sink's server refused (`refused-…` files).
//! Written atomically, like the directory sink's files, so a reader never
//! sees half a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::Records;
use crate::quota::ByteMeter;
use crate::sink::{format, write_atomically};

/// A stage's dead-letter folder.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The folder; created on first use.
    pub dir: PathBuf,
    /// Bytes the dead letters of the stage's tenant may take, shared by
    /// its stages (`sluice serve`); a write past it fails, naming the
    /// quota, so the batch is not dropped.
    pub budget: Option<Arc<ByteMeter>>,
}

impl DeadLetter {
    /// Writes `records` (the ones listed in `which`, or all) with their
    /// reasons. Returns the file written.
    pub fn write(
        &self,
        batch_id: u64,
        batch_time_ms: u64,
        records: &Records,
        reasons: &[(usize, &str)],
    ) -> std::io::Result<PathBuf> {
        let name = format!("batch-{batch_time_ms}-{batch_id:06}.jsonl");
        self.write_named(&name, records, reasons)
    }

    /// Writes records a source or sink refused (listed in `reasons`, each
    /// with why) to a file of their own, `refused-<ms>-<n>.jsonl`, named by
    /// the time and a count kept across the process. Returns the file.
    pub fn write_refused(
        &self,
        records: &Records,
        reasons: &[(usize, &str)],
    ) -> std::io::Result<PathBuf> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "refused-{}-{:06}.jsonl",
            crate::batch::now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.write_named(&name, records, reasons)
    }

    fn write_named(
        &self,
        name: &str,
        records: &Records,
        reasons: &[(usize, &str)],
    ) -> std::io::Result<PathBuf> {
        let mut out = Vec::new();
        for &(index, reason) in reasons {
            format::jsonl(&mut out, records.get(index), Some(reason));
        }
        if let Some(budget) = &self.budget {
            budget
                .add(out.len() as u64)
                .map_err(std::io::Error::other)?;
        }
        write_atomically(&self.dir, name, &out)
    }
}
