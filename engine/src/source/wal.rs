//! A write-ahead log for sources that cannot read again what they read
//! (`socket`, `stdin`), like Spark's receiver WAL: with `wal = true`, every
//! chunk a source reads is appended to a log on disk and synced before it
//! counts as received (goes to the batcher). Its position is its sequence
//! number in the log. After a crash, the engine restarts from the last
//! checkpoint's sequence number and replays the log's later chunks before
//! reading anything new, so nothing received is lost; chunks the checkpoint
//! covers are deleted from the log as checkpoints come in.
//!
//! Layout: `<state_dir>/<pipeline>.wal/source-<index>/`, segment files
//! named by their first sequence number (`00000000000000000001.wal`). Each
//! entry is `seq` (u64), `length` (u32), a checksum (u64, FNV-1a of the
//! payload), then the payload: the chunk's records
//! ([`Records::to_bytes`]). A torn entry at the end of the last segment (a
//! crash mid-append, never synced, so never counted as received) is cut off
//! when the log is opened.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::{Emitter, Source, SourceError, SourceTask};
use crate::batch::{Chunk, Records};

/// A segment is closed, and a new one begun, past this size.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Bytes before an entry's payload.
const HEADER: usize = 8 + 4 + 8;
/// Prefix of a WAL position: `wal:<seq>`.
const POSITION_PREFIX: &str = "wal:";

fn checksum(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One source's log on disk.
pub struct Wal {
    dir: PathBuf,
    /// (first sequence number, path) of every segment, oldest first.
    segments: Vec<(u64, PathBuf)>,
    /// The segment being appended to, with its size.
    current: Option<(File, u64)>,
    /// The sequence number of the last entry written.
    last: u64,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, cutting off a torn last entry.
    pub fn open(dir: &Path) -> Result<Wal, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut segments = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = name
                .strip_suffix(".wal")
                .and_then(|n| n.parse::<u64>().ok())
            {
                segments.push((first, entry.path()));
            }
        }
        segments.sort();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments,
            current: None,
            last: 0,
        };
        // The last entry's number, and the torn tail cut off.
        if let Some((first, path)) = wal.segments.last().cloned() {
            let (entries, good_len) = read_segment(&path)?;
            wal.last = entries
                .last()
                .map_or(first.saturating_sub(1), |(seq, _)| *seq);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            if file.metadata().map(|m| m.len()).unwrap_or(0) > good_len {
                tracing::warn!(
                    "write-ahead log {}: cutting off an entry a crash left half-written",
                    path.display()
                );
                file.set_len(good_len)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("cannot repair {}: {e}", path.display()))?;
            }
            wal.current = Some((file, good_len));
        }
        Ok(wal)
    }

    /// Appends `records` and syncs; returns their sequence number.
    pub fn append(&mut self, records: &Records) -> Result<u64, String> {
        let seq = self.last + 1;
        let full = self
            .current
            .as_ref()
            .is_none_or(|(_, size)| *size >= SEGMENT_BYTES);
        if full {
            let path = self.dir.join(format!("{seq:020}.wal"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("cannot sync {}: {e}", self.dir.display()))?;
            self.segments.push((seq, path));
            self.current = Some((file, 0));
        }
        let payload = records.to_bytes();
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.extend_from_slice(&checksum(&payload).to_le_bytes());
        entry.extend_from_slice(&payload);
        let (file, size) = self.current.as_mut().expect("a segment is open");
        file.write_all(&entry)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write to {}: {e}", self.dir.display()))?;
        *size += entry.len() as u64;
        self.last = seq;
        Ok(seq)
    }

    /// Every entry after `after`, oldest first.
    pub fn entries_after(&self, after: u64) -> Result<Vec<(u64, Records)>, String> {
        let mut out = Vec::new();
        for (i, (_, path)) in self.segments.iter().enumerate() {
            // Skip segments that end at or before `after`.
            if let Some((next_first, _)) = self.segments.get(i + 1) {
                if *next_first <= after + 1 {
                    continue;
                }
            }
            let (entries, _) = read_segment(path)?;
            out.extend(entries.into_iter().filter(|(seq, _)| *seq > after));
        }
        Ok(out)
    }

    /// Deletes the segments whose every entry is at or before `through`
    /// (the checkpoint covers them). The segment being written stays.
    pub fn forget_through(&mut self, through: u64) {
        while self.segments.len() > 1 && self.segments[1].0 <= through + 1 {
            let (_, path) = self.segments.remove(0);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("write-ahead log: cannot delete {}: {e}", path.display());
            }
        }
    }
}

/// A segment's whole entries, and the length they fill (anything after is
/// a torn entry). An entry that is whole but fails its checksum is damage
/// the log cannot explain: an error.
fn read_segment(path: &Path) -> Result<(Vec<(u64, Records)>, u64), String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let seq = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(bytes[at + 12..at + 20].try_into().unwrap());
        let start = at + HEADER;
        if bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        let is_last = start + len == bytes.len();
        let records = (checksum(payload) == sum)
            .then(|| Records::from_bytes(payload))
            .flatten();
        match records {
            Some(records) => entries.push((seq, records)),
            // The very last entry may be torn in a way that still fills its
            // length (the length was written, the payload not synced).
            None if is_last => break,
            None => {
                return Err(format!(
                    "{}: entry {seq} is damaged (checksum mismatch); the log cannot be trusted",
                    path.display()
                ));
            }
        }
        at = start + len;
    }
    Ok((entries, at as u64))
}

/// A source whose chunks go through a [`Wal`] before they count.
pub struct WalSource {
    inner: Box<dyn Source>,
    dir: PathBuf,
    /// The checkpoint's sequence number: later entries are replayed.
    resume_after: u64,
}

impl WalSource {
    /// Wraps `inner` with the log in `dir`.
    pub fn new(inner: Box<dyn Source>, dir: PathBuf) -> Self {
        WalSource {
            inner,
            dir,
            resume_after: 0,
        }
    }
}

fn parse_position(position: &str) -> Option<u64> {
    position.strip_prefix(POSITION_PREFIX)?.parse().ok()
}

impl Source for WalSource {
    fn describe(&self) -> String {
        format!("{} (write-ahead log)", self.inner.describe())
    }

    fn resume(&mut self, position: &str) -> Result<bool, String> {
        match parse_position(position) {
            Some(seq) => self.resume_after = seq,
            // Checkpointed before `wal` was turned on: nothing to replay
            // from the log yet.
            None => tracing::warn!(
                "{}: the checkpoint's position `{position}` is from before the write-ahead \
                 log was turned on; what that run read but did not checkpoint is lost",
                self.describe()
            ),
        }
        Ok(true)
    }

    fn run(self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let name = self.describe();
            let fail = |message: String| SourceError {
                source_name: name.clone(),
                message,
            };
            let dir = self.dir.clone();
            let opened = tokio::task::spawn_blocking(move || Wal::open(&dir))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(&fail)?;
            let wal = Arc::new(Mutex::new(opened));
            // Received before the crash, not checkpointed: first, again.
            let replay = lock(&wal).entries_after(self.resume_after).map_err(&fail)?;
            if !replay.is_empty() {
                let records: usize = replay.iter().map(|(_, r)| r.len()).sum();
                tracing::info!(
                    "{name}: replaying {records} record(s) received before the last run ended \
                     but not checkpointed"
                );
            }
            for (seq, records) in replay {
                if emitter
                    .emit(records, Some(format!("{POSITION_PREFIX}{seq}")))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            // The wrapped source emits into this channel; its chunks are
            // logged, then passed on.
            let (tx, mut rx) = mpsc::channel::<Chunk>(2);
            let (_no_acks, acks) = watch::channel(None);
            let inner = Emitter::new(emitter.source, tx, emitter.stop.clone(), acks);
            let task = tokio::spawn(self.inner.run(inner));
            let mut acked = emitter.acked();
            let mut acks_open = true;
            loop {
                tokio::select! {
                    chunk = rx.recv() => {
                        let Some(chunk) = chunk else { break };
                        let log = wal.clone();
                        let records = chunk.records;
                        let (seq, records) = tokio::task::spawn_blocking(move || {
                            lock(&log).append(&records).map(|seq| (seq, records))
                        })
                        .await
                        .map_err(|e| fail(e.to_string()))?
                        .map_err(&fail)?;
                        if emitter
                            .emit(records, Some(format!("{POSITION_PREFIX}{seq}")))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    changed = acked.changed(), if acks_open => {
                        if changed.is_err() {
                            acks_open = false;
                            continue;
                        }
                        let through = acked.borrow().as_deref().and_then(parse_position);
                        if let Some(through) = through {
                            lock(&wal).forget_through(through);
                        }
                    }
                }
            }
            drop(rx);
            task.await.map_err(|e| fail(format!("panicked: {e}")))?
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(values: &[&str]) -> Records {
        let mut r = Records::default();
        for v in values {
            r.push_value(v.as_bytes(), 1);
        }
        r
    }

    fn values(entries: &[(u64, Records)]) -> Vec<(u64, Vec<String>)> {
        entries
            .iter()
            .map(|(seq, r)| {
                let v = r
                    .iter()
                    .map(|x| String::from_utf8(x.value().to_vec()).unwrap())
                    .collect();
                (*seq, v)
            })
            .collect()
    }

    #[test]
    fn entries_survive_reopening_a_torn_tail_is_cut_and_old_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.append(&records(&["a", "b"])).unwrap(), 1);
        assert_eq!(wal.append(&records(&["c"])).unwrap(), 2);
        drop(wal);
        // A crash mid-append: half an entry at the end.
        let segment = dir.path().join(format!("{:020}.wal", 1));
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&3u64.to_le_bytes()).unwrap();
        file.write_all(&[200, 0]).unwrap();
        drop(file);

        let mut wal = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.last, 2);
        assert_eq!(
            values(&wal.entries_after(1).unwrap()),
            [(2, vec!["c".to_string()])]
        );
        assert_eq!(wal.append(&records(&["d"])).unwrap(), 3);
        assert_eq!(values(&wal.entries_after(0).unwrap()).len(), 3);

        // Force a second segment, then forget everything the first held.
        wal.current.as_mut().unwrap().1 = SEGMENT_BYTES;
        assert_eq!(wal.append(&records(&["e"])).unwrap(), 4);
        wal.forget_through(2);
        assert_eq!(wal.segments.len(), 2, "entry 3 is still needed");
        wal.forget_through(3);
        assert_eq!(wal.segments.len(), 1);
        assert!(!segment.exists());
        assert_eq!(
            values(&Wal::open(dir.path()).unwrap().entries_after(3).unwrap()),
            [(4, vec!["e".to_string()])]
        );
    }

    #[test]
    fn a_damaged_entry_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.append(&records(&["a"])).unwrap();
        wal.append(&records(&["b"])).unwrap();
        let segment = dir.path().join(format!("{:020}.wal", 1));
        let mut bytes = std::fs::read(&segment).unwrap();
        let last = HEADER + 10;
        bytes[last] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
        let err = Wal::open(dir.path())
            .and_then(|w| w.entries_after(0))
            .err()
            .expect("damage must be found");
        assert!(err.contains("damaged"), "{err}");
    }
}
