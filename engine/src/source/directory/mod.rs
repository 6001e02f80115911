//! `type = "directory"`: every new file in a folder, one record per line,
//! like Spark's `textFileStream`.
//!
//! A file is read once it is complete: when it was moved into the folder
//! (a rename), when its writer closed it, or when its size and modification
//! time have not changed for `settle`. Hidden files (`.name`) and common
//! temporary names (`*.tmp`, `*.part`, `*~`) are ignored, so writers that
//! write under such a name and rename are picked up at the rename. Each file
//! is read once; files are treated as immutable once read.
//!
//! Only regular files whose real path is inside the folder are read: a link
//! that points out of it is skipped with a warning unless `follow_links`
//! allows it (see [`crate::confine`]).
//!
//! Idle costs nothing: the folder is watched (inotify on Linux) and listed
//! again only when an event says something changed in it, when a file
//! waiting to settle is due, or every [`SAFETY_RESCAN`] in case an event was
//! missed. Reads of the folder and its files raise events too; those are
//! ignored, or each listing would wake the next.

mod progress;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, LineSplitter, Source, SourceError, SourceTask};
use crate::batch::Records;
use crate::confine::{Refusal, open_inside};
use crate::units::HumanDuration;
use progress::Progress;

/// Watches a folder and reads each new file's lines.
///
/// ```toml
/// [[sources]]
/// type = "directory"
/// path = "input"
/// ```
#[derive(Debug, Clone, Deserialize)]
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
    /// Read files that links in the folder point to outside it. Default
    /// false: only files whose real path is inside the folder are read, and
    /// a link out of it is skipped with a warning.
    #[serde(default)]
    pub follow_links: bool,
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

    /// The running source over `dir` (the `path` already resolved), which
    /// must exist.
    pub fn build(&self, dir: &Path) -> Result<DirectorySource, SourceError> {
        let missing = || SourceError {
            source_name: format!("directory {}", dir.display()),
            message: "the folder does not exist (create it, or fix `path`)".into(),
        };
        if !dir.is_dir() {
            return Err(missing());
        }
        let real = dir.canonicalize().map_err(|_| missing())?;
        Ok(DirectorySource {
            shown: dir.to_path_buf(),
            dir: real,
            existing: self.existing,
            watch: self.watch,
            settle: self.settle.0,
            follow_links: self.follow_links,
            resume: Progress::default(),
            resumed: false,
        })
    }
}

/// The running directory source.
pub struct DirectorySource {
    /// The folder as the pipeline names it, for messages.
    shown: PathBuf,
    /// The folder's real path: files must be inside it.
    dir: PathBuf,
    existing: bool,
    watch: bool,
    settle: Duration,
    follow_links: bool,
    /// Where a checkpoint says the last run got to.
    resume: Progress,
    /// Whether there was a checkpoint to resume from.
    resumed: bool,
}

/// How often the folder is listed when it cannot be watched.
const POLL: Duration = Duration::from_millis(250);

/// How often a watched folder is listed anyway, in case an event was lost.
pub const SAFETY_RESCAN: Duration = Duration::from_secs(5);

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
        format!("directory {}", self.shown.display())
    }

    fn resume(&mut self, position: &str) -> Result<bool, String> {
        self.resume = Progress::decode(position)
            .ok_or_else(|| format!("malformed directory position `{position}`"))?;
        self.resumed = true;
        Ok(true)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move { self.read_folder(emitter).await })
    }
}

impl DirectorySource {
    async fn read_folder(self, emitter: Emitter) -> Result<(), SourceError> {
        let name = self.describe();
        let (events_tx, mut events) = mpsc::unbounded_channel::<notify::Event>();
        // Keep the watcher alive for as long as the source runs.
        let watcher = if self.watch {
            match start_watcher(&self.dir, events_tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(source = %name, "cannot watch the folder ({e}); listing it every {}ms instead", POLL.as_millis());
                    None
                }
            }
        } else {
            None
        };
        // Files the last checkpoint covers are not read again; the one it
        // was part-way through is read from the line after.
        let mut progress = self.resume.clone();
        let mut read: HashSet<OsString> = progress.done_names().cloned().collect();
        // `existing = false` skips what was there before the first run;
        // a restart goes by its checkpoint instead, so nothing the crashed
        // run had not checkpointed is skipped.
        // The files skipped count as done in the position, so a restart
        // skips them too.
        if !self.existing && !self.resumed {
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                for name in entries.filter_map(|e| e.ok()).map(|e| e.file_name()) {
                    if wanted(&name) {
                        progress.finish(&name);
                    }
                    read.insert(name);
                }
            }
        }
        let mut candidates: HashMap<OsString, Candidate> = HashMap::new();
        let mut first_pass = true;
        loop {
            if emitter.stopping() {
                return Ok(());
            }
            while let Ok(event) = events.try_recv() {
                note_event(&event, &mut candidates, &read);
            }
            let now = Instant::now();
            let mut ready: Vec<OsString> = Vec::new();
            let listed = match std::fs::read_dir(&self.dir) {
                Ok(entries) => {
                    let listed: Vec<OsString> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name())
                        .filter(|n| wanted(n))
                        .collect();
                    // Files read before and since deleted are forgotten, so
                    // the position stays the size of the folder, not of its
                    // history.
                    let present: HashSet<&OsStr> = listed.iter().map(OsString::as_os_str).collect();
                    progress.forget_missing(&present);
                    read.retain(|n| present.contains(n.as_os_str()));
                    candidates.retain(|n, _| present.contains(n.as_os_str()));
                    listed
                }
                Err(e) => {
                    // Nothing is forgotten on a failed listing: the next
                    // one decides.
                    tracing::warn!(source = %name, "cannot list the folder: {e}");
                    Vec::new()
                }
            };
            for file in &listed {
                if read.contains(file) {
                    continue;
                }
                // A link's metadata is its target's; `open_inside` judges
                // where it points.
                let Ok(meta) = std::fs::metadata(self.dir.join(file)) else {
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
                    ready.push(file.clone());
                }
            }
            ready.sort();
            for file in ready {
                if emitter.stopping() {
                    return Ok(());
                }
                candidates.remove(&file);
                read.insert(file.clone());
                let shown = shown_name(&file);
                let skip_lines = progress.partial_lines(&file);
                let opened = match open_inside(&self.dir, &file, self.follow_links) {
                    Ok(opened) => opened,
                    Err(Refusal::Outside(target)) => {
                        tracing::warn!(source = %name, "skipped {shown}: it links to {}, outside the folder (set `follow_links = true` to read such links)", target.display());
                        continue;
                    }
                    Err(Refusal::NotRegular) => {
                        tracing::warn!(source = %name, "skipped {shown}: not a regular file");
                        continue;
                    }
                    Err(Refusal::Io(e)) => {
                        tracing::error!(source = %name, "cannot read {shown}: {e}; skipped");
                        continue;
                    }
                };
                match read_file(opened, &file, &emitter, &mut progress, skip_lines).await {
                    Ok((lines, true)) if skip_lines > 0 => {
                        tracing::info!(source = %name, "read {shown} ({} lines; {skip_lines} more before the restart)", lines.saturating_sub(skip_lines))
                    }
                    Ok((lines, true)) => {
                        tracing::info!(source = %name, "read {shown} ({lines} lines)")
                    }
                    Ok((lines, false)) => {
                        tracing::warn!(source = %name, "stopped reading {shown} after {lines} lines");
                        return Ok(());
                    }
                    Err(ReadError::Closed) => return Ok(()),
                    Err(ReadError::Io(e, lines)) => {
                        // What was handed on stays counted, so a restart
                        // neither repeats it nor skips the rest.
                        progress.note_partial(&file, lines.max(skip_lines));
                        tracing::error!(source = %name, "cannot read {shown} after {lines} lines: {e}; the rest is skipped until a restart")
                    }
                }
            }
            if !self.watch
                && (candidates.is_empty() || first_pass && candidates.values().all(|c| c.complete))
            {
                return Ok(());
            }
            first_pass = false;
            // Sleep until something may have changed: an event about a
            // file, the next candidate settling, or the safety rescan.
            let mut wake = Instant::now()
                + match watcher {
                    Some(_) => SAFETY_RESCAN,
                    None => POLL,
                };
            candidates.retain(|n, _| !read.contains(n));
            for c in candidates.values() {
                wake = wake.min(c.stable_since + self.settle);
            }
            // Never a busy loop, whatever a candidate says.
            wake = wake.max(Instant::now() + std::time::Duration::from_millis(10));
            let deadline = tokio::time::sleep_until(wake);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    Some(event) = events.recv() => {
                        if note_event(&event, &mut candidates, &read) {
                            break;
                        }
                    }
                    _ = emitter.stopped() => return Ok(()),
                }
            }
        }
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

/// Marks files that an event says are complete. Returns whether the event
/// may have changed what the folder holds, so that it is worth listing it
/// again: reads (of the folder itself, or of a file) change nothing.
fn note_event(
    event: &notify::Event,
    candidates: &mut HashMap<OsString, Candidate>,
    read: &HashSet<OsString>,
) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    if event.need_rescan() {
        return true;
    }
    let complete = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => return false,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
        _ => false,
    };
    let target = match event.kind {
        // For a rename pair the destination is the last path.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.last(),
        _ => event.paths.first(),
    };
    let Some(name) = target.and_then(|p| p.file_name()) else {
        return true;
    };
    if !wanted(name) || read.contains(name) {
        // A writer's temporary file changing, or a file read already
        // (files are read once): nothing to read.
        return false;
    }
    match candidates.get_mut(name) {
        Some(c) if complete => c.complete = true,
        Some(c) => c.complete = false,
        None if complete => {
            if let Some(meta) = std::fs::metadata(target.unwrap())
                .ok()
                .filter(|m| m.is_file())
            {
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
    true
}

/// A file name for messages: as it is when it is UTF-8, with `\xNN` for
/// each byte that is not (a lossy `�` would make two names look one).
fn shown_name(name: &OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

fn wanted(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    !(name.starts_with(b".")
        || name.ends_with(b".tmp")
        || name.ends_with(b".part")
        || name.ends_with(b"~"))
}

enum ReadError {
    /// A read failed after this many lines were handed on.
    Io(std::io::Error, u64),
    Closed,
}

/// Reads a file in blocks, handing its lines over in chunks, so a large
/// file never sits in memory whole; the first `skip` lines (read before a
/// restart) are dropped. Returns the lines read and whether the whole file
/// was read (false when asked to stop part-way); a whole file is marked
/// finished in `progress`, and its last chunk's position says so.
async fn read_file(
    mut file: std::fs::File,
    name: &OsStr,
    emitter: &Emitter,
    progress: &mut Progress,
    skip: u64,
) -> Result<(u64, bool), ReadError> {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut lines: u64 = 0;
    let mut records = Records::with_capacity(CHUNK_RECORDS, CHUNK_BYTES);
    loop {
        // A local file read is short; block_in_place keeps the runtime's
        // other tasks moving meanwhile.
        let n = tokio::task::block_in_place(|| file.read(&mut buf))
            .map_err(|e| ReadError::Io(e, lines))?;
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
            let position = if n == 0 {
                progress.finish(name);
                progress.encode_reading(None)
            } else {
                progress.encode_reading(Some((name, lines.max(skip))))
            };
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
