//! Hot reload: noticing new versions of a stage's plugin and preparing them
//! off the batch path. A version comes from the plugin file changing on disk
//! (watched, debounced: a file still being written is not loaded) or from a
//! deploy through the control endpoint. It is compiled, checked against the
//! world, instantiated and `init`-ed with the stage's config; only then is
//! it offered to the stage, which puts it live at the next batch boundary.
//! A version that fails any of these steps is rejected with its reason and
//! the running one carries on. Swapping and probation belong to `stage`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::plugin::PluginHost;
use crate::stage::{StageHandle, StageSettings, Update, prepare};
use crate::telemetry::events::{VersionReady, VersionRejected};

/// Quiet time after the last change to a plugin file before it is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// One stage that can take new versions.
#[derive(Clone)]
pub struct StageEntry {
    /// Its settings (config, limits) for preparing new versions.
    pub settings: StageSettings,
    /// Its shared version state.
    pub handle: Arc<StageHandle>,
}

/// Compiles, checks and initialises `bytes` as the next version of a
/// stage, and offers it. Returns the version's label, or why it was
/// rejected (the running version carries on either way).
pub fn deploy(
    host: &PluginHost,
    entry: &StageEntry,
    origin: &Path,
    bytes: &[u8],
    cause: &str,
) -> Result<String, String> {
    let s = &entry.settings;
    let outcome = host
        .load_bytes(origin, bytes)
        .map_err(|e| e.to_string())
        .and_then(|plugin| match prepare(s, &plugin) {
            Ok(instance) => Ok((plugin, instance)),
            Err(e) => Err(format!("plugin {} {e}", plugin.label())),
        });
    match outcome {
        Ok((plugin, instance)) => {
            let label = plugin.label();
            VersionReady {
                stage: &s.telemetry,
                label: &label,
                cause,
            }
            .emit();
            entry.handle.offer(Update {
                plugin,
                instance,
                cause: cause.to_string(),
            });
            Ok(label)
        }
        Err(reason) => {
            VersionRejected {
                stage: &s.telemetry,
                cause,
                reason: &reason,
            }
            .emit();
            entry.handle.event(format!("rejected ({cause}): {reason}"));
            Err(reason)
        }
    }
}

/// Prepares the version before the live one again and offers it.
pub fn rollback(entry: &StageEntry) -> Result<String, String> {
    let Some(plugin) = entry.handle.previous() else {
        return Err(format!(
            "stage `{}` has no earlier version",
            entry.settings.name
        ));
    };
    let instance =
        prepare(&entry.settings, &plugin).map_err(|e| format!("plugin {} {e}", plugin.label()))?;
    let label = plugin.label();
    entry.handle.offer(Update {
        plugin,
        instance,
        cause: "rollback".into(),
    });
    Ok(label)
}

/// Keeps the plugin files watched; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches every stage's plugin file and deploys each new, complete version.
pub fn watch_files(host: Arc<PluginHost>, stages: Vec<StageEntry>) -> notify::Result<FileWatch> {
    let (tx, rx) = mpsc::channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })?;
    // Watch the folders, not the files: replacing a file by rename gives
    // it a new inode, which a watch on the file itself would not follow.
    let mut folders: Vec<PathBuf> = stages
        .iter()
        .map(|e| folder_of(&e.settings.plugin_path))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in &folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || debounce_and_load(&host, &stages, &rx))
        .expect("spawning the reload thread");
    Ok(FileWatch { _watcher: watcher })
}

fn folder_of(path: &Path) -> PathBuf {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    folder.canonicalize().unwrap_or(folder)
}

/// Where a path points, as the watcher reports it.
fn key_of(path: &Path) -> Option<PathBuf> {
    Some(folder_of(path).join(path.file_name()?))
}

fn debounce_and_load(
    host: &PluginHost,
    stages: &[StageEntry],
    events: &mpsc::Receiver<notify::Event>,
) {
    let watched: HashMap<PathBuf, Vec<usize>> = stages
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((key_of(&e.settings.plugin_path)?, i)))
        .fold(HashMap::new(), |mut map, (key, i)| {
            map.entry(key).or_insert_with(Vec::new).push(i);
            map
        });
    let mut due: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            // Reads (of this or any other file in the folder) change nothing.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            Ok(event) => {
                for path in &event.paths {
                    if let Some(key) = key_of(path).filter(|k| watched.contains_key(k)) {
                        due.insert(key, Instant::now() + DEBOUNCE);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let ready: Vec<PathBuf> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in ready {
            due.remove(&path);
            let bytes = match crate::plugin::read_plugin(&path) {
                Ok(bytes) => bytes,
                // Gone (mid-rename, or deleted): a later event brings it back.
                Err(crate::plugin::LoadError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => {
                    for &i in &watched[&path] {
                        VersionRejected {
                            stage: &stages[i].settings.telemetry,
                            cause: "file change",
                            reason: &e.to_string(),
                        }
                        .emit();
                        stages[i]
                            .handle
                            .event(format!("rejected (file change): {e}"));
                    }
                    continue;
                }
            };
            for &i in &watched[&path] {
                let entry = &stages[i];
                if crate::plugin::content_hash(&bytes) == entry.handle.current().hash {
                    continue;
                }
                let _ = deploy(host, entry, &path, &bytes, "file change");
            }
        }
    }
}
