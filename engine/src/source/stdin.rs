//! `type = "stdin"`: lines from standard input, until it ends.

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::lines::chunk_for_read;
use super::{CHUNK_BYTES, Emitter, LineSplitter, Source, SourceError, SourceTask};

/// Reads standard input line by line; the source ends at end of input, so
/// `cat file | sluice run p.toml` runs as a batch job.
///
/// ```toml
/// [[sources]]
/// type = "stdin"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Log every chunk read to a write-ahead log (synced) before it counts
    /// as received, so a crash loses nothing read: the next run replays
    /// what the last checkpoint did not cover. Kept in
    /// `<state_dir>/<pipeline>.wal/`. Default false.
    #[serde(default)]
    pub wal: bool,
}

impl StdinConfig {
    /// The running source.
    pub fn build(&self) -> StdinSource {
        StdinSource
    }
}

/// The running stdin source.
pub struct StdinSource;

impl Source for StdinSource {
    fn describe(&self) -> String {
        "stdin".into()
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let mut input = tokio::io::stdin();
            let mut splitter = LineSplitter::default();
            let mut buf = vec![0u8; CHUNK_BYTES];
            let mut lines: u64 = 0;
            loop {
                let read = tokio::select! {
                    read = input.read(&mut buf) => read,
                    _ = emitter.stopped() => break,
                };
                let n = read.map_err(|e| SourceError {
                    source_name: "stdin".into(),
                    message: format!("cannot read: {e}"),
                })?;
                let mut records = chunk_for_read(n);
                if n == 0 {
                    splitter.finish(&mut records);
                } else {
                    splitter.feed(&buf[..n], &mut records);
                }
                lines += records.len() as u64;
                if emitter
                    .emit(records, Some(format!("line {lines}")))
                    .await
                    .is_err()
                    || n == 0
                {
                    break;
                }
            }
            Ok(())
        })
    }
}
