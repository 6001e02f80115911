//! `type = "directory"`: every new file in a folder, one record per line,
//! like Spark's `textFileStream`.
//!
//! A file is read once it is complete: when it was moved into the folder
//! (a rename), when its writer closed it, or when its size and modification
//! time have not changed for `settle`. Hidden files (`.name`) and common
//! temporary names (`*.tmp`, `*.part`, `*~`) are ignored, so writers that
//! write under such a name and rename are picked up at the rename. Each file
//! is read once; files are treated as immutable once read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, LineSplitter, Source, SourceError, SourceTask};
use crate::batch::Records;
use crate::config::{HumanDuration, PipelineFile};

/// Watches a folder and reads each new file's lines.
///
/// ```toml
/// [[sources]]
/// type = "directory"
/// path = "input"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The folder, relative to the pipeline file. It must exist.
    pub path: PathBuf,
    /// Read the files already in the folder at start. Default true.
    #[serde(default = "yes")]
    pub existing: bool,
    /// Keep watching for new files. With `false`, the source reads the files
    /// present at start and ends, so the pipeline runs as a batch job.
    /// Default true.
    #[serde(default = "yes")]
    pub watch: bool,
    /// How long a file's size and modification time must stay unchanged
    /// before it is read, when no close or rename event says it is
    /// complete. Default `1s`.
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
}

fn yes() -> bool {
    true
}

fn default_settle() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl DirectoryConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("invalid directory source: `path` is empty".into());
        }
        Ok(())
    }

    /// The running source; the folder must exist.
    pub fn build(&self, file: &PipelineFile) -> Result<DirectorySource, SourceError> {
        let dir = file.resolve(&self.path);
        if !dir.is_dir() {
            return Err(SourceError {
                source_name: format!("directory {}", dir.display()),
                message: "the folder does not exist (create it, or fix `path`)".into(),
            });
        }
        Ok(DirectorySource {
            dir,
            existing: self.existing,
            watch: self.watch,
            settle: self.settle.0,
            resume: Progress::default(),
        })
    }
}

/// The running directory source.
pub struct DirectorySource {
    dir: PathBuf,
    existing: bool,
    watch: bool,
    settle: Duration,
    /// Where a checkpoint says the last run got to.
    resume: Progress,
}

/// How far the source has read: the files read to the end, and the lines
/// read of files begun but not finished (the one being read, and any a
/// crashed run left part-way, until they are read again). As a position:
/// entries separated by `/` (which no file name holds), `d:NAME` for a
/// finished file, `pLINES:NAME` for a begun one.
///
/// Every chunk carries its position, so the finished files are kept
/// already encoded: a chunk copies one string instead of formatting an
/// entry per file read so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Progress {
    /// The `d:NAME` entries, `/`-separated.
    done: String,
    partial: BTreeMap<String, u64>,
}

impl Progress {
    /// `name` has been read to the end.
    fn finish(&mut self, name: &str) {
        self.partial.remove(name);
        if !self.done.is_empty() {
            self.done.push('/');
        }
        self.done.push_str("d:");
        self.done.push_str(name);
    }

    /// The files read to the end.
    fn done_names(&self) -> impl Iterator<Item = &str> {
        self.done.split('/').filter_map(|e| e.strip_prefix("d:"))
    }

    #[cfg(test)]
    fn encode(&self) -> String {
        self.encode_reading(None)
    }

    /// The position while `reading` = (file, lines read) is under way.
    fn encode_reading(&self, reading: Option<(&str, u64)>) -> String {
        let mut text = self.done.clone();
        let mut entry = |name: &str, lines: u64| {
            if !text.is_empty() {
                text.push('/');
            }
            text.push_str(&format!("p{lines}:{name}"));
        };
        for (name, lines) in &self.partial {
            match reading {
                Some((current, _)) if current == name => {}
                _ => entry(name, *lines),
            }
        }
        if let Some((name, lines)) = reading {
            entry(name, lines);
        }
        text
    }

    fn decode(position: &str) -> Option<Progress> {
        let mut progress = Progress::default();
        for entry in position.split('/').filter(|e| !e.is_empty()) {
            let (head, name) = entry.split_once(':')?;
            if head == "d" {
                progress.finish(name);
            } else {
                let lines = head.strip_prefix('p')?.parse().ok()?;
                progress.partial.insert(name.to_string(), lines);
            }
        }
        Some(progress)
    }
}

/// How often the folder is listed even without events.
const RESCAN: Duration = Duration::from_millis(250);

/// What is known of a file not read yet.
struct Candidate {
    len: u64,
    modified: Option<SystemTime>,
    /// When `len` / `modified` were first seen with these values.
    stable_since: Instant,
    /// A close-after-write or rename-into-folder event said it is complete.
    complete: bool,
}

impl Source for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn resume(&mut self, position: &str) -> Result<bool, String> {
        self.resume = Progress::decode(position)
            .ok_or_else(|| format!("malformed directory position `{position}`"))?;
        Ok(true)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            let (events_tx, mut events) = mpsc::unbounded_channel::<notify::Event>();
            // Keep the watcher alive for as long as the source runs.
            let _watcher = if self.watch {
                match start_watcher(&self.dir, events_tx) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(source = %name, "cannot watch the folder ({e}); listing it every {}ms instead", RESCAN.as_millis());
                        None
                    }
                }
            } else {
                None
            };
            let mut read: HashSet<OsString> = HashSet::new();
            let mut candidates: HashMap<OsString, Candidate> = HashMap::new();
            // Files the last checkpoint covers are not read again; the one
            // it was part-way through is read from the line after.
            let mut progress = self.resume.clone();
            read.extend(self.resume.done_names().map(OsString::from));
            if !self.existing {
                for entry in list(&self.dir) {
                    read.insert(entry);
                }
            }
            let mut first_pass = true;
            loop {
                if emitter.stopping() {
                    return Ok(());
                }
                while let Ok(event) = events.try_recv() {
                    note_event(&event, &mut candidates);
                }
                let now = Instant::now();
                let mut ready: Vec<OsString> = Vec::new();
                for file in list(&self.dir) {
                    if read.contains(&file) {
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(self.dir.join(&file)) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    let (len, modified) = (meta.len(), meta.modified().ok());
                    let c = candidates.entry(file.clone()).or_insert(Candidate {
                        len,
                        modified,
                        stable_since: now,
                        // Files present at start, when not watching, are complete.
                        complete: first_pass && !self.watch,
                    });
                    if c.len != len || c.modified != modified {
                        c.len = len;
                        c.modified = modified;
                        c.stable_since = now;
                        c.complete = false;
                    }
                    if c.complete || now.duration_since(c.stable_since) >= self.settle {
                        ready.push(file);
                    }
                }
                ready.sort();
                for file in ready {
                    if emitter.stopping() {
                        return Ok(());
                    }
                    candidates.remove(&file);
                    read.insert(file.clone());
                    let path = self.dir.join(&file);
                    let file_name = file.to_string_lossy().into_owned();
                    let skip_lines = progress.partial.get(&file_name).copied().unwrap_or(0);
                    match read_file(&path, &emitter, &progress, skip_lines).await {
                        Ok((lines, true)) => {
                            progress.finish(&file_name);
                            tracing::info!(source = %name, "read {} ({lines} lines)", file.to_string_lossy())
                        }
                        Ok((lines, false)) => {
                            tracing::warn!(source = %name, "stopped reading {} after {lines} lines", file.to_string_lossy());
                            return Ok(());
                        }
                        Err(ReadError::Closed) => return Ok(()),
                        Err(ReadError::Io(e)) => {
                            tracing::error!(source = %name, "cannot read {}: {e}; skipped", path.display())
                        }
                    }
                }
                if !self.watch
                    && (candidates.is_empty()
                        || first_pass && candidates.values().all(|c| c.complete))
                {
                    return Ok(());
                }
                first_pass = false;
                tokio::select! {
                    _ = tokio::time::sleep(RESCAN) => {}
                    Some(event) = events.recv() => note_event(&event, &mut candidates),
                    _ = emitter.stopped() => return Ok(()),
                }
            }
        })
    }
}

fn start_watcher(
    dir: &Path,
    tx: mpsc::UnboundedSender<notify::Event>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Marks files that an event says are complete.
fn note_event(event: &notify::Event, candidates: &mut HashMap<OsString, Candidate>) {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    let complete = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
        _ => false,
    };
    let target = match event.kind {
        // For a rename pair the destination is the last path.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.last(),
        _ => event.paths.first(),
    };
    let Some(name) = target.and_then(|p| p.file_name()) else {
        return;
    };
    if !wanted(name) {
        return;
    }
    match candidates.get_mut(name) {
        Some(c) if complete => c.complete = true,
        Some(c) => c.complete = false,
        None if complete => {
            if let Ok(meta) = std::fs::metadata(target.unwrap()) {
                candidates.insert(
                    name.to_os_string(),
                    Candidate {
                        len: meta.len(),
                        modified: meta.modified().ok(),
                        stable_since: Instant::now(),
                        complete: true,
                    },
                );
            }
        }
        None => {}
    }
}

/// File names in the folder that are not hidden or temporary.
fn list(dir: &Path) -> Vec<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| wanted(n))
        .collect()
}

fn wanted(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    !(name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with('~'))
}

enum ReadError {
    Io(std::io::Error),
    Closed,
}

/// Reads a file in blocks, handing its lines over in chunks, so a large
/// file never sits in memory whole; the first `skip` lines (read before a
/// restart) are dropped. Returns the lines read and whether the whole file
/// was read (false when asked to stop part-way).
async fn read_file(
    path: &Path,
    emitter: &Emitter,
    progress: &Progress,
    skip: u64,
) -> Result<(u64, bool), ReadError> {
    let mut file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut lines: u64 = 0;
    let mut records = Records::with_capacity(CHUNK_RECORDS, CHUNK_BYTES);
    loop {
        // A local file read is short; block_in_place keeps the runtime's
        // other tasks moving meanwhile.
        let n = tokio::task::block_in_place(|| file.read(&mut buf)).map_err(ReadError::Io)?;
        if n == 0 {
            splitter.finish(&mut records);
        } else {
            splitter.feed(&buf[..n], &mut records);
        }
        if n == 0 || records.len() >= CHUNK_RECORDS || records.values.data.len() >= CHUNK_BYTES {
            let next = match n {
                0 => Records::default(), // the end of the file: no next chunk
                _ => Records::with_capacity(CHUNK_RECORDS, CHUNK_BYTES),
            };
            let mut chunk = std::mem::replace(&mut records, next);
            let before = lines;
            lines += chunk.len() as u64;
            if before < skip {
                // Lines the last checkpoint already covers.
                let keep_from = (skip - before).min(chunk.len() as u64) as usize;
                let mut rest = Records::default();
                for i in keep_from..chunk.len() {
                    rest.push_record(chunk.get(i));
                }
                chunk = rest;
            }
            let position = progress.encode_reading(Some((&name, lines.max(skip))));
            emitter
                .emit(chunk, Some(position))
                .await
                .map_err(|_| ReadError::Closed)?;
        }
        if n == 0 {
            return Ok((lines, true));
        }
        if emitter.stopping() && records.is_empty() {
            return Ok((lines, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_position() {
        let mut progress = Progress::default();
        progress.finish("a.txt");
        progress.finish("b:with colon.txt");
        progress.partial = BTreeMap::from([("c.txt".into(), 40), ("d d.txt".into(), 7)]);
        let position = progress.encode();
        assert_eq!(position, "d:a.txt/d:b:with colon.txt/p40:c.txt/p7:d d.txt");
        assert_eq!(Progress::decode(&position), Some(progress.clone()));
        assert_eq!(Progress::decode(""), Some(Progress::default()));
        assert_eq!(Progress::decode("x:y"), None);
        assert_eq!(Progress::decode("pq:y"), None);
        assert_eq!(
            progress.done_names().collect::<Vec<_>>(),
            ["a.txt", "b:with colon.txt"]
        );
        // While a begun file is read again, its entry moves on.
        assert_eq!(
            progress.encode_reading(Some(("c.txt", 55))),
            "d:a.txt/d:b:with colon.txt/p7:d d.txt/p55:c.txt"
        );
    }
}
