//! Dead-letter files: records a stage could not process, one JSON-lines
//! file per batch, each record with the reason. Written atomically, like the
//! directory sink's files, so a reader never sees half a file.

use std::path::PathBuf;
use std::sync::Arc;

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
        let mut out = Vec::new();
        for &(index, reason) in reasons {
            format::jsonl(&mut out, records.get(index), Some(reason));
        }
        let name = format!("batch-{batch_time_ms}-{batch_id:06}.jsonl");
        if let Some(budget) = &self.budget {
            budget
                .add(out.len() as u64)
                .map_err(std::io::Error::other)?;
        }
        write_atomically(&self.dir, &name, &out)
    }
}
