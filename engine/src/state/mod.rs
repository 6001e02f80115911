//! Host-owned state for stages (the WIT `state` interface) and the
//! checkpoint that makes it durable.
//!
//! Store: one [redb](https://docs.rs/redb) file per pipeline,
//! `<state_dir>/<pipeline>.redb`, with a table per stage and a `checkpoint`
//! table. redb is embedded, pure Rust (nothing to install, quick to build),
//! crash-safe (copy-on-write B-trees, a commit is atomic and durable) and
//! lets readers run beside the one writer, which is the shape here: stage
//! threads read while the sink thread commits.
//!
//! Three layers answer a read, newest first:
//! 1. the batch's own writes (in the instance, dropped if the call fails);
//! 2. the stage's writes of batches that succeeded but are not yet
//!    checkpointed ([`StageState`]'s `pending`, since stages run ahead of
//!    the sinks);
//! 3. the last checkpoint, in the file.
//!
//! The sink thread, once every sink has a batch, writes that batch's writes
//! of every stage and its source positions in one transaction: the
//! checkpoint. Pending entries the checkpoint covers are then dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use redb::{Database, ReadableDatabase, TableDefinition};

/// The writes of one batch to one stage's state: `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

const CHECKPOINT: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoint");

/// Each changelogged table's position in its changelog: the offset after
/// the last record the file holds (see [`Changelog`]).
const CHANGELOG: TableDefinition<&str, i64> = TableDefinition::new("changelog");

/// Where a store's checkpointed writes also go, table by table: a Kafka
/// changelog topic per stateful stage, for a task's state to move with its
/// partition (`tasks`). A checkpoint sends its writes and waits for them to
/// be acknowledged before the file commits, so the changelog is never
/// behind the file; the file records how far into each changelog it is.
pub trait Changelog: Send + Sync {
    /// Whether `table` has a changelog.
    fn logs(&self, table: &str) -> bool;
    /// Sends `writes` of `table` (a `None` value is a deletion).
    fn send(&self, table: &str, writes: &Writes) -> Result<(), String>;
    /// Waits until everything sent is acknowledged; returns, for each table
    /// sent to so far, the offset after its last record.
    fn flush(&self) -> Result<Vec<(String, i64)>, String>;
}

/// A state store that could not be opened, read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state file {}: {message}", path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// A pipeline's state file.
pub struct StateStore {
    db: Database,
    path: PathBuf,
    changelog: OnceLock<Arc<dyn Changelog>>,
}

impl StateStore {
    /// Where the state file of pipeline (or task) `pipeline` in `dir` is.
    pub fn file(dir: &Path, pipeline: &str) -> PathBuf {
        dir.join(format!("{pipeline}.redb"))
    }

    /// Opens (or creates) the state file of pipeline `pipeline` in `dir`.
    /// A file that is not a valid store is an error naming it, never
    /// silently replaced.
    pub fn open(dir: &Path, pipeline: &str) -> Result<Arc<StateStore>, StateError> {
        let path = StateStore::file(dir, pipeline);
        let fail = |message: String| StateError {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create its folder: {e}")))?;
        let damaged = |e: String| {
            fail(format!(
                "cannot open it ({e}); if it is damaged, restore it from a backup \
                 or move it away to start from empty state"
            ))
        };
        // Every page's checksum, once at start: damage is found here, not
        // as wrong totals later. redb panics on some kinds of damage; that
        // is reported the same way.
        let opened = std::panic::catch_unwind(|| {
            let mut db = Database::create(&path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Err(()),
                other => Ok(other.to_string()),
            })?;
            let intact = db.check_integrity().map_err(|e| Ok(e.to_string()))?;
            Ok::<_, Result<String, ()>>((db, intact))
        });
        let (db, intact) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(Err(()))) => {
                let who = holder(&path).unwrap_or_else(|| "another process".into());
                return Err(fail(format!(
                    "it is in use by {who}: is another sluice running this pipeline? Stop \
                     that one, or give this one a `state_dir` of its own"
                )));
            }
            Ok(Err(Ok(e))) => return Err(damaged(e)),
            Err(_) => return Err(damaged("its pages do not check out".into())),
        };
        if !intact {
            // redb rebuilds its allocator state after an unclean shutdown;
            // committed data is untouched.
            tracing::info!(
                "state file {}: recovered after an unclean shutdown",
                path.display()
            );
        }
        Ok(Arc::new(StateStore {
            db,
            path,
            changelog: OnceLock::new(),
        }))
    }

    /// Sends every later checkpoint's writes to `changelog` too (once; a
    /// second call is ignored).
    pub fn set_changelog(&self, changelog: Arc<dyn Changelog>) {
        let _ = self.changelog.set(changelog);
    }

    /// How far into its changelog `table` is: the offset after the last
    /// record the file holds (`None`: never restored nor logged).
    pub fn changelog_position(&self, table: &str) -> Result<Option<i64>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error("reading", e))?;
        let positions = match read.open_table(CHANGELOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error("reading the changelog positions", e)),
        };
        let at = positions
            .get(table)
            .map_err(|e| self.error("reading the changelog positions", e))?;
        Ok(at.map(|v| v.value()))
    }

    /// Applies records read from `table`'s changelog (a `None` value is a
    /// deletion) and records that the file is now at `next` in it, in one
    /// transaction.
    pub fn restore(
        &self,
        table: &str,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
        next: i64,
    ) -> Result<(), StateError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.error("restoring", e))?;
        {
            let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
            let mut rows = txn
                .open_table(definition)
                .map_err(|e| self.error("restoring", e))?;
            for (key, value) in entries {
                match value {
                    Some(value) => rows.insert(key.as_slice(), value.as_slice()).map(drop),
                    None => rows.remove(key.as_slice()).map(drop),
                }
                .map_err(|e| self.error("restoring", e))?;
            }
            let mut positions = txn
                .open_table(CHANGELOG)
                .map_err(|e| self.error("restoring", e))?;
            positions
                .insert(table, next)
                .map_err(|e| self.error("restoring", e))?;
        }
        txn.commit()
            .map_err(|e| self.error("committing a restore", e))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> StateError {
        StateError {
            path: self.path.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// The committed value of `key` in `table`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error("reading", e))?;
        let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        let table = match read.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error("reading", e)),
        };
        let value = table.get(key).map_err(|e| self.error("reading", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every committed entry of `table`, in key order.
    fn scan(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        use redb::ReadableTable;
        let read = self.db.begin_read().map_err(|e| self.error("reading", e))?;
        let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        let table = match read.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.error("reading", e)),
        };
        let mut entries = Vec::new();
        for entry in table.iter().map_err(|e| self.error("reading", e))? {
            let (key, value) = entry.map_err(|e| self.error("reading", e))?;
            entries.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(entries)
    }

    /// The last checkpoint's batch number and source positions.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error("reading", e))?;
        let table = match read.open_table(CHECKPOINT) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error("reading the checkpoint", e)),
        };
        let Some(text) = table
            .get("checkpoint")
            .map_err(|e| self.error("reading the checkpoint", e))?
        else {
            return Ok(None);
        };
        Checkpoint::decode(text.value())
            .map(Some)
            .ok_or_else(|| self.error("reading the checkpoint", "it is malformed"))
    }

    /// Writes one batch's checkpoint: every stage's writes and the sources'
    /// positions, in one transaction.
    pub fn commit(
        &self,
        writes: &[(Arc<StageState>, Writes)],
        checkpoint: &Checkpoint,
    ) -> Result<(), StateError> {
        // The changelog first: a crash between the two leaves the changelog
        // ahead of the file (restored again), never behind it.
        let mut logged = Vec::new();
        if let Some(changelog) = self.changelog.get() {
            let mut sent = false;
            for (stage, writes) in writes {
                if !writes.is_empty() && changelog.logs(&stage.table) {
                    changelog
                        .send(&stage.table, writes)
                        .map_err(|e| self.error("writing the changelog", e))?;
                    sent = true;
                }
            }
            if sent {
                logged = changelog
                    .flush()
                    .map_err(|e| self.error("writing the changelog", e))?;
            }
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.error("writing", e))?;
        if !logged.is_empty() {
            let mut positions = txn
                .open_table(CHANGELOG)
                .map_err(|e| self.error("writing the changelog positions", e))?;
            for (table, next) in &logged {
                positions
                    .insert(table.as_str(), *next)
                    .map_err(|e| self.error("writing the changelog positions", e))?;
            }
        }
        for (stage, writes) in writes {
            let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&stage.table);
            let mut table = txn
                .open_table(definition)
                .map_err(|e| self.error("writing", e))?;
            for (key, value) in writes {
                match value {
                    Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                    None => table.remove(key.as_slice()).map(drop),
                }
                .map_err(|e| self.error("writing", e))?;
            }
        }
        {
            let mut table = txn
                .open_table(CHECKPOINT)
                .map_err(|e| self.error("writing the checkpoint", e))?;
            table
                .insert("checkpoint", checkpoint.encode().as_slice())
                .map_err(|e| self.error("writing the checkpoint", e))?;
        }
        txn.commit().map_err(|e| self.error("committing", e))?;
        for (stage, _) in writes {
            stage.checkpointed(checkpoint.batch);
        }
        Ok(())
    }
}

/// Which other process has `file` open, as `process 1234 (sluice run
/// p.toml)`, if one does and it can be told: the open files of every
/// process this user may see (`/proc/PID/fd`, Linux), since the lock redb
/// takes does not record its owner.
pub fn holder(file: &Path) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let real = file.canonicalize().ok()?;
        let me = std::process::id().to_string();
        let processes = std::fs::read_dir("/proc").ok()?;
        for process in processes.flatten() {
            let pid = process.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == real));
            if !holds {
                continue;
            }
            let command = std::fs::read(process.path().join("cmdline"))
                .ok()
                .map(|raw| {
                    raw.split(|b| *b == 0)
                        .filter(|part| !part.is_empty())
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|c| !c.is_empty());
            return Some(match command {
                Some(command) => format!("process {pid} ({command})"),
                None => format!("process {pid}"),
            });
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// What a checkpoint records besides the state itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The batch it was taken after (its id in the run that took it).
    pub batch: u64,
    /// Checkpoints taken so far, over every run of the pipeline: this one's
    /// number (0 before the first).
    pub number: u64,
    /// The newest acknowledged position of each source, by source index.
    pub positions: BTreeMap<usize, String>,
}

impl Checkpoint {
    /// As stored: `batch N` then `source I POSITION` lines, positions with
    /// their bytes escaped so that any text survives.
    fn encode(&self) -> Vec<u8> {
        let mut text = format!("batch {}\nnumber {}\n", self.batch, self.number);
        for (source, position) in &self.positions {
            text.push_str(&format!("source {source} {}\n", position.escape_default()));
        }
        text.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut checkpoint = Checkpoint::default();
        for line in text.lines() {
            if let Some(batch) = line.strip_prefix("batch ") {
                checkpoint.batch = batch.parse().ok()?;
            } else if let Some(number) = line.strip_prefix("number ") {
                checkpoint.number = number.parse().ok()?;
            } else if let Some(rest) = line.strip_prefix("source ") {
                let (index, position) = rest.split_once(' ').unwrap_or((rest, ""));
                checkpoint
                    .positions
                    .insert(index.parse().ok()?, unescape(position)?);
            } else {
                return None;
            }
        }
        Some(checkpoint)
    }
}

/// The inverse of `str::escape_default`.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'u' => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

impl std::fmt::Debug for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StageState({} in {})",
            self.table,
            self.store.path.display()
        )
    }
}

/// One stage's view of the store, shared by its instances and the sink
/// thread.
pub struct StageState {
    store: Arc<StateStore>,
    /// Its table in the store: `stage:<name>`, `window:<name>` or
    /// `sink:<index>`.
    pub table: String,
    /// Writes of batches that succeeded in this stage but are not yet
    /// checkpointed: key → (batch, value).
    pending: Mutex<HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>>,
}

impl StageState {
    /// The state of stage `stage`.
    pub fn new(store: Arc<StateStore>, stage: &str) -> Arc<StageState> {
        Self::table(store, format!("stage:{stage}"))
    }

    /// The contents of stage `stage`'s window, which the engine keeps
    /// (plugins never see this table).
    pub fn window(store: Arc<StateStore>, stage: &str) -> Arc<StageState> {
        Self::table(store, format!("window:{stage}"))
    }

    /// What sink `index` keeps with the checkpoint (exactly-once output
    /// to publish again after a crash).
    pub fn sink(store: Arc<StateStore>, index: usize) -> Arc<StageState> {
        Self::table(store, format!("sink:{index}"))
    }

    fn table(store: Arc<StateStore>, table: String) -> Arc<StageState> {
        Arc::new(StageState {
            store,
            table,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Every checkpointed entry, in key order (pending writes are not
    /// included: this is for restoring at start).
    pub fn checkpointed_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.store.scan(&self.table)
    }

    /// The value under `key` as of the last successful batch.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some((_, value)) = lock(&self.pending).get(key) {
            return Ok(value.clone());
        }
        self.store.get(&self.table, key)
    }

    /// Records a successful batch's writes until its checkpoint.
    pub fn absorb(&self, batch: u64, writes: &Writes) {
        let mut pending = lock(&self.pending);
        for (key, value) in writes {
            pending.insert(key.clone(), (batch, value.clone()));
        }
    }

    /// Batch `batch` is checkpointed: what it (or an earlier batch) wrote
    /// is in the file now.
    fn checkpointed(&self, batch: u64) {
        lock(&self.pending).retain(|_, (written, _)| *written > batch);
    }

    /// The store it lives in.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Entries waiting for a checkpoint (for tests and metrics).
    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(entries: &[(&str, Option<&str>)]) -> Writes {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    /// A changelog in memory: what was sent, and whether sending fails.
    #[derive(Default)]
    struct Log {
        sent: Mutex<Vec<(String, Vec<u8>, Option<Vec<u8>>)>>,
        broken: std::sync::atomic::AtomicBool,
    }

    impl Changelog for Log {
        fn logs(&self, table: &str) -> bool {
            table.starts_with("stage:")
        }
        fn send(&self, table: &str, writes: &Writes) -> Result<(), String> {
            if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("broker gone".into());
            }
            let mut sent = self.sent.lock().unwrap();
            for (k, v) in writes {
                sent.push((table.to_string(), k.clone(), v.clone()));
            }
            Ok(())
        }
        fn flush(&self) -> Result<Vec<(String, i64)>, String> {
            let n = self.sent.lock().unwrap().len() as i64;
            Ok(vec![("stage:count".to_string(), n)])
        }
    }

    #[test]
    fn a_checkpoint_reaches_the_changelog_before_the_file_and_a_restore_applies_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        let log = Arc::new(Log::default());
        store.set_changelog(log.clone());
        let count = StageState::new(store.clone(), "count");
        let window = StageState::window(store.clone(), "count");
        let checkpoint = Checkpoint::default();
        store
            .commit(
                &[
                    (count.clone(), writes(&[("a", Some("1")), ("b", None)])),
                    (window.clone(), writes(&[("w", Some("x"))])),
                ],
                &checkpoint,
            )
            .unwrap();
        // Only the changelogged table was sent, deletions as tombstones.
        assert_eq!(
            *log.sent.lock().unwrap(),
            vec![
                ("stage:count".into(), b"a".to_vec(), Some(b"1".to_vec())),
                ("stage:count".into(), b"b".to_vec(), None),
            ]
        );
        assert_eq!(store.changelog_position("stage:count").unwrap(), Some(2));
        assert_eq!(store.changelog_position("window:count").unwrap(), None);

        // The changelog failing fails the checkpoint: the file keeps the
        // last one, so nothing is acknowledged that the changelog lacks.
        log.broken.store(true, std::sync::atomic::Ordering::Relaxed);
        let later = Checkpoint {
            batch: 1,
            ..Checkpoint::default()
        };
        let err = store
            .commit(&[(count.clone(), writes(&[("a", Some("2"))]))], &later)
            .unwrap_err();
        assert!(err.message.contains("broker gone"), "{err:?}");
        assert_eq!(store.checkpoint().unwrap(), Some(checkpoint));
        assert_eq!(count.get(b"a").unwrap(), Some(b"1".to_vec()));

        // A restore into a new machine's file applies the records in order.
        let other = tempfile::tempdir().unwrap();
        let fresh = StateStore::open(other.path(), "p").unwrap();
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), Some(b"5".to_vec())),
            (b"b".to_vec(), None),
        ];
        fresh.restore("stage:count", &records, 3).unwrap();
        let restored = StageState::new(fresh.clone(), "count");
        assert_eq!(restored.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(restored.get(b"b").unwrap(), None);
        assert_eq!(fresh.changelog_position("stage:count").unwrap(), Some(3));
    }

    #[test]
    fn reads_see_pending_writes_then_the_checkpoint_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        let stage = StageState::new(store.clone(), "count");
        assert_eq!(stage.get(b"a").unwrap(), None);

        stage.absorb(0, &writes(&[("a", Some("1")), ("b", Some("1"))]));
        stage.absorb(1, &writes(&[("a", Some("2")), ("b", None)]));
        assert_eq!(stage.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(stage.get(b"b").unwrap(), None);

        // Batch 0's checkpoint: batch 1's writes stay pending and win.
        let mut checkpoint = Checkpoint {
            batch: 0,
            number: 1,
            positions: BTreeMap::from([(0, "f.txt:10".to_string())]),
        };
        store
            .commit(
                &[(stage.clone(), writes(&[("a", Some("1")), ("b", Some("1"))]))],
                &checkpoint,
            )
            .unwrap();
        assert_eq!(stage.pending_len(), 2);
        assert_eq!(stage.get(b"a").unwrap(), Some(b"2".to_vec()));
        checkpoint.batch = 1;
        store
            .commit(
                &[(stage.clone(), writes(&[("a", Some("2")), ("b", None)]))],
                &checkpoint,
            )
            .unwrap();
        assert_eq!(stage.pending_len(), 0);
        assert_eq!(stage.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(stage.get(b"b").unwrap(), None);
        drop((stage, store));

        let store = StateStore::open(dir.path(), "p").unwrap();
        let stage = StageState::new(store.clone(), "count");
        assert_eq!(stage.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.checkpoint().unwrap(), Some(checkpoint));
        // Another stage's table is its own.
        let other = StageState::new(store, "other");
        assert_eq!(other.get(b"a").unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.redb"), vec![0x5a; 8192]).unwrap();
        let err = StateStore::open(dir.path(), "p")
            .err()
            .expect("a damaged file must not open");
        let text = err.to_string();
        assert!(text.contains("p.redb"), "{text}");
        assert!(text.contains("cannot open it"), "{text}");
    }

    #[test]
    fn damaged_pages_are_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path(), "p").unwrap();
            let stage = StageState::new(store.clone(), "s");
            let batch: Writes = (0..200u32)
                .map(|i| (i.to_be_bytes().to_vec(), Some(vec![7u8; 100])))
                .collect();
            store
                .commit(&[(stage, batch)], &Checkpoint::default())
                .unwrap();
        }
        let path = dir.path().join("p.redb");
        let mut bytes = std::fs::read(&path).unwrap();
        // Everything past the header page.
        for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
            *b ^= 0xa5 ^ (i as u8);
        }
        std::fs::write(&path, bytes).unwrap();
        let err = StateStore::open(dir.path(), "p")
            .err()
            .expect("damage must be found");
        assert!(err.to_string().contains("p.redb"), "{err}");
    }

    #[test]
    fn checkpoints_round_trip() {
        let checkpoint = Checkpoint {
            batch: 42,
            number: 7,
            positions: BTreeMap::from([
                (0, "lines:0@5 lines:1@7".into()),
                (1, "d:a b.txt/p12:naïve\nname \\ \"x\"".into()),
                (2, String::new()),
            ]),
        };
        assert_eq!(Checkpoint::decode(&checkpoint.encode()), Some(checkpoint));
        assert_eq!(Checkpoint::decode(b"nonsense"), None);
    }
}
