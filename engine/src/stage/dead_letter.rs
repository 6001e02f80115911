//! Dead-letter files: records a stage could not process, one JSON-lines
//! file per batch, each record with the reason. Written atomically, like the
//! directory sink's files, so a reader never sees half a file.

use std::path::PathBuf;

use crate::batch::Records;
use crate::sink::{format, write_atomically};

/// A stage's dead-letter folder.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The folder; created on first use.
    pub dir: PathBuf,
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
        let mut out = Vec::new();
        for &(index, reason) in reasons {
            format::jsonl(&mut out, records.get(index), Some(reason));
        }
        let name = format!("batch-{batch_time_ms}-{batch_id:06}.jsonl");
        write_atomically(&self.dir, &name, &out)
    }
}
