//! `type = "directory"`: one file per batch, renamed into place complete.

use std::path::PathBuf;

use serde::Deserialize;

use super::{BatchMeta, Format, Sink, SinkContext, SinkError, format, write_then_rename};
use crate::batch::Records;
use crate::failpoint::{self, Point};

/// Writes each non-empty batch to its own file,
/// `<path>/<pipeline>-<batch time ms>-<batch id>.<format>`. Files appear
/// complete: each is written under a dot-prefixed temporary name, synced,
/// then renamed.
///
/// Under `delivery = "exactly-once"` a batch's file is first written as
/// `.staged-<checkpoint>-<name>` and renamed into place only once the
/// checkpoint covering the batch is durable. At start, staged files the
/// last checkpoint covers are renamed into place (the crash came between
/// the checkpoint and the rename) and later ones are deleted (their
/// batches are replayed): each batch's file appears exactly once.
///
/// ```toml
/// [[sinks]]
/// type = "directory"
/// path = "output"
/// format = "jsonl"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The folder, relative to the pipeline file; created if missing. It
    /// may not be, contain or lie inside a directory source's folder.
    pub path: PathBuf,
    /// `"jsonl"` (default) or `"text"`.
    #[serde(default = "default_format")]
    pub format: Format,
}

fn default_format() -> Format {
    Format::Jsonl
}

/// The running directory sink.
pub struct DirectorySink {
    dir: PathBuf,
    format: Format,
    buffer: Vec<u8>,
    /// Exactly-once: files wait under a staged name for their checkpoint.
    staged: bool,
    /// The pipeline's name, which starts its files' names.
    pipeline: String,
}

/// Prefix of the files waiting for their checkpoint.
const STAGED: &str = ".staged-";

impl DirectorySink {
    /// Creates the folder if needed.
    pub fn new(config: &DirectoryConfig, cx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let dir = config.path.clone();
        std::fs::create_dir_all(&dir).map_err(|e| SinkError {
            sink: format!("directory {}", dir.display()),
            message: format!("cannot create the folder: {e}"),
        })?;
        Ok(DirectorySink {
            dir,
            format: config.format,
            buffer: Vec::new(),
            staged: cx.exactly_once,
            pipeline: cx.pipeline.to_string(),
        })
    }

    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: format!("directory {}", self.dir.display()),
            message,
        }
    }

    /// The file name of a batch.
    fn name(&self, batch: &BatchMeta<'_>) -> String {
        let extension = match self.format {
            Format::Jsonl => "jsonl",
            Format::Text => "txt",
        };
        format!(
            "{}-{}-{:06}.{extension}",
            batch.pipeline, batch.time_ms, batch.id
        )
    }

    /// Whether `name` is a batch file of this pipeline, as [`Self::name`]
    /// makes them: `<pipeline>-<time>-<id>.<jsonl|txt>`.
    fn is_ours(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(&self.pipeline)
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        let Some(stem) = rest
            .strip_suffix(".jsonl")
            .or_else(|| rest.strip_suffix(".txt"))
        else {
            return false;
        };
        stem.split_once('-').is_some_and(|(time, id)| {
            !time.is_empty()
                && !id.is_empty()
                && time.bytes().chain(id.bytes()).all(|b| b.is_ascii_digit())
        })
    }

    /// The staged name of a batch's file under checkpoint `checkpoint`.
    fn staged_name(checkpoint: u64, name: &str) -> String {
        format!("{STAGED}{checkpoint:020}-{name}")
    }

    /// Renames a staged file into place, durably.
    fn publish(&self, staged: &str, name: &str) -> Result<(), SinkError> {
        std::fs::rename(self.dir.join(staged), self.dir.join(name))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| self.error(format!("cannot rename {staged} to {name}: {e}")))
    }
}

impl Sink for DirectorySink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        self.buffer.clear();
        for record in records.iter() {
            format::write(&mut self.buffer, self.format, record);
        }
        let mut name = self.name(&batch);
        if self.staged {
            let checkpoint = batch
                .checkpoint
                .expect("exactly-once batches carry their checkpoint");
            name = Self::staged_name(checkpoint, &name);
        }
        write_then_rename(&self.dir, &name, &self.buffer, || {
            failpoint::reached(Point::Renaming)
        })
        .map(|_| ())
        .map_err(|e| self.error(format!("cannot write {name}: {e}")))
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let Some(checkpoint) = batch.checkpoint.filter(|_| self.staged) else {
            return Ok(());
        };
        let name = self.name(&batch);
        let staged = Self::staged_name(checkpoint, &name);
        // A staged file that vanished is output lost: an error, not a skip.
        self.publish(&staged, &name)
    }

    fn recover(&mut self, checkpoint: u64, _: Option<Records>) -> Result<(), SinkError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| self.error(format!("cannot list the folder: {e}")))?;
        let mut staged: Vec<(u64, String, String)> = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            // A file a crash cut short while it was being written (see
            // `write_atomically`): never published, so never needed.
            if let Some(cut) = file.strip_prefix('.').and_then(|f| f.strip_suffix(".tmp")) {
                let cut = cut
                    .strip_prefix(STAGED)
                    .map_or(Some(cut), |rest| rest.split_once('-').map(|(_, name)| name));
                if cut.is_some_and(|name| self.is_ours(name)) {
                    let _ = std::fs::remove_file(self.dir.join(&file));
                }
                continue;
            }
            // Staged files are settled whatever the delivery now is: they
            // belong to checkpoints already taken (or to be replayed).
            let Some(rest) = file.strip_prefix(STAGED) else {
                continue;
            };
            let parsed = rest
                .split_once('-')
                .and_then(|(n, name)| Some((n.parse::<u64>().ok()?, name.to_string())));
            match parsed {
                Some((n, name)) if self.is_ours(&name) => staged.push((n, file, name)),
                // Another pipeline's, sharing the folder: its own start
                // settles it.
                Some(_) => {}
                None => tracing::warn!(
                    "directory sink {}: {file} looks staged but is not named as the engine \
                     names them; left alone",
                    self.dir.display()
                ),
            }
        }
        staged.sort();
        let (mut published, mut dropped) = (0, 0);
        for (n, file, name) in staged {
            if n <= checkpoint {
                self.publish(&file, &name)?;
                published += 1;
            } else {
                std::fs::remove_file(self.dir.join(&file))
                    .map_err(|e| self.error(format!("cannot delete {file}: {e}")))?;
                dropped += 1;
            }
        }
        if published + dropped > 0 {
            tracing::info!(
                "directory sink {}: {published} file(s) of checkpointed batches published, \
                 {dropped} staged after the last checkpoint deleted (their batches are replayed)",
                self.dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &std::path::Path) -> DirectorySink {
        DirectorySink {
            dir: dir.to_path_buf(),
            format: Format::Jsonl,
            buffer: Vec::new(),
            staged: true,
            pipeline: "p".into(),
        }
    }

    fn meta(id: u64, checkpoint: u64) -> BatchMeta<'static> {
        BatchMeta {
            pipeline: "p",
            id,
            time_ms: 1000,
            checkpoint: Some(checkpoint),
            positions: &[],
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn staged_files_appear_at_commit_and_recovery_keeps_only_checkpointed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::default();
        records.push_value(b"x", 1);
        let mut s = sink(dir.path());
        s.write(meta(0, 7), &records).unwrap();
        assert_eq!(
            names(dir.path()),
            [".staged-00000000000000000007-p-1000-000000.jsonl"]
        );
        s.commit(meta(0, 7)).unwrap();
        assert_eq!(names(dir.path()), ["p-1000-000000.jsonl"]);
        // A crash after checkpoint 8 but before its commit, with batch 9
        // staged and not checkpointed.
        s.write(meta(1, 8), &records).unwrap();
        s.write(meta(2, 9), &records).unwrap();
        // Another pipeline's staged file in the same folder stays.
        std::fs::write(
            dir.path()
                .join(".staged-00000000000000000009-p-x-1000-000001.jsonl"),
            "",
        )
        .unwrap();
        // And one cut short while being written.
        std::fs::write(
            dir.path()
                .join("..staged-00000000000000000010-p-1000-000003.jsonl.tmp"),
            "{",
        )
        .unwrap();
        let mut restarted = sink(dir.path());
        restarted.recover(8, None).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                ".staged-00000000000000000009-p-x-1000-000001.jsonl",
                "p-1000-000000.jsonl",
                "p-1000-000001.jsonl"
            ]
        );
    }
}
