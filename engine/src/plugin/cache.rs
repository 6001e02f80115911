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
}

impl CompileCache {
    /// The cache for `engine`, in the folder the environment names.
    pub fn new(engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir: cache_dir(),
            engine_key: format!("{:016x}", hasher.finish()),
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
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    "compiled plugin cache entry {} unusable ({e}); compiling again",
                    path.display()
                ),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = store(dir, &path, &compiled) {
            tracing::debug!("cannot cache the compiled plugin in {}: {e}", dir.display());
        }
        // SAFETY: these bytes were produced by this engine a moment ago.
        unsafe { Component::deserialize(engine, &compiled) }
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
