//! Compiled components kept on disk, so a restart does not pay for
//! compiling every plugin again (Cranelift takes tens of milliseconds per
//! plugin; loading a compiled one takes well under one).
//!
//! An entry is keyed by the SHA-256 of the component and by wasmtime's
//! compatibility hash of this engine's configuration, so a different plugin,
//! engine version or setting never loads a stale entry. Entries are native
//! code the engine will run: the folder must be writable only by the user
//! running sluice, and entries in a folder (or files) that group or others
//! may write to are ignored. It is `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`,
//! else `~/.cache/sluice`; `SLUICE_CACHE_DIR=off` turns the cache off. A
//! missing, unreadable or incompatible entry is simply compiled again.
//!
//! The cache stays bounded: each use of an entry touches it, and each new
//! entry first removes entries unused for [`MAX_AGE`], then the least
//! recently used ones until the folder is under its limit
//! (`$SLUICE_CACHE_LIMIT`, a size such as `256MiB`; [`DEFAULT_LIMIT`] by
//! default). A process deploying a new version every minute therefore
//! never fills the disk.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The compiled-component cache of one engine.
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
    limit: u64,
}

/// Largest the cache folder grows to unless `$SLUICE_CACHE_LIMIT` says.
pub const DEFAULT_LIMIT: u64 = 512 << 20;

/// Entries unused for this long are removed.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl CompileCache {
    /// The cache for `engine`, in the folder the environment names.
    pub fn new(engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let limit = match std::env::var("SLUICE_CACHE_LIMIT") {
            Ok(text) => match crate::units::ByteSize::parse(&text) {
                Ok(size) => size.0,
                Err(e) => {
                    tracing::warn!("SLUICE_CACHE_LIMIT: {e}; using {}MiB", DEFAULT_LIMIT >> 20);
                    DEFAULT_LIMIT
                }
            },
            Err(_) => DEFAULT_LIMIT,
        };
        CompileCache {
            dir: cache_dir(),
            engine_key: format!("{:016x}", hasher.finish()),
            limit,
        }
    }

    /// A component from the cache, or compiled (and then cached).
    /// `sha256` is the component's SHA-256 in hex, as the caller already
    /// computed it to identify the version.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if path.exists() && private(dir) && private(&path) {
            // SAFETY: entries are written only by this cache, under a name
            // that binds them to these exact bytes and this engine's
            // configuration, in a folder private to the user (see the
            // module docs); wasmtime also checks compatibility itself.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    touch(&path);
                    return Ok(component);
                }
                Err(e) => tracing::warn!(
                    "compiled plugin cache entry {} unusable ({e}); compiling again",
                    path.display()
                ),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        evict(
            dir,
            self.limit.saturating_sub(compiled.len() as u64),
            MAX_AGE,
        );
        if let Err(e) = store(dir, &path, &compiled) {
            tracing::debug!("cannot cache the compiled plugin in {}: {e}", dir.display());
        }
        // SAFETY: these bytes were produced by this engine a moment ago.
        unsafe { Component::deserialize(engine, &compiled) }
    }
}

/// Marks an entry as used now, so eviction keeps it longest.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes entries unused for `max_age`, then the least recently used
/// until the entries take at most `limit` bytes.
fn evict(dir: &Path, limit: u64, max_age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let used = meta.modified().unwrap_or(now);
        if now.duration_since(used).unwrap_or_default() > max_age {
            remove(&path);
        } else {
            kept.push((used, meta.len(), path));
        }
    }
    let mut total: u64 = kept.iter().map(|e| e.1).sum();
    kept.sort();
    for (_, size, path) in kept {
        if total <= limit {
            break;
        }
        remove(&path);
        total -= size;
    }
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!("compiled plugin cache: removed {}", path.display()),
        Err(e) => tracing::debug!(
            "compiled plugin cache: cannot remove {}: {e}",
            path.display()
        ),
    }
}

/// Whether only its owner may write `path` (not group- or world-writable):
/// entries in a folder others can write to are never loaded.
fn private(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode() & 0o022 == 0,
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_CACHE_DIR") {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sluice"))
}

/// Writes an entry atomically: a reader never sees half of one.
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // A name of its own per write: two threads (or processes) caching the
    // same plugin never write through one file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn entry(dir: &Path, name: &str, size: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn eviction_drops_old_entries_then_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ancient = entry(d, "a.cwasm", 10, Duration::from_secs(40 * 24 * 3600));
        let old = entry(d, "b.cwasm", 100, Duration::from_secs(3600));
        let recent = entry(d, "c.cwasm", 100, Duration::from_secs(60));
        let other = entry(d, "notes.txt", 1000, Duration::from_secs(50 * 24 * 3600));
        evict(d, 150, MAX_AGE);
        assert!(!ancient.exists(), "unused for over 30 days");
        assert!(!old.exists(), "least recently used, over the limit");
        assert!(recent.exists());
        assert!(other.exists(), "not an entry");
        // Touching makes an entry the most recently used.
        let b = entry(d, "b.cwasm", 100, Duration::from_secs(3600));
        touch(&b);
        let c_age = Duration::from_secs(60);
        entry(d, "c.cwasm", 100, c_age);
        evict(d, 150, MAX_AGE);
        assert!(b.exists());
        assert!(!recent.exists());
    }
}
