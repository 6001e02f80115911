//! What `sluice check` can know about a resolved pipeline before running it,
//! beyond its text: every folder it will write to can be written (and is a
//! folder, not a file or a device), and no folder it writes to is, contains
//! or is inside a folder a `directory` source reads (that would feed its own
//! output back in). `sluice run` makes the same checks before it starts, so
//! a pipeline `check` passes does not fail on these at its first batch.

use std::path::{Path, PathBuf};

use super::file::ConfigError;
use super::spec::{Location, PipelineSpec};
use crate::confine;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

/// The folders `spec`'s directory sources read.
fn reads(spec: &PipelineSpec) -> Vec<(&Path, Location)> {
    spec.sources
        .iter()
        .filter_map(|s| match &s.value {
            SourceConfig::Directory(d) => Some((d.path.as_path(), s.at)),
            _ => None,
        })
        .collect()
}

/// Every folder `spec` writes to, with what it is for.
fn writes(spec: &PipelineSpec, uses_state: bool) -> Vec<(PathBuf, String, Location)> {
    let mut writes: Vec<(PathBuf, String, Location)> = Vec::new();
    for sink in &spec.sinks {
        if let SinkConfig::Directory(d) = &sink.value {
            writes.push((d.path.clone(), "directory sink".into(), sink.at));
        }
        if let Some(dir) = sink.value.dead_letter_dir() {
            writes.push((
                dir.to_path_buf(),
                "sink's dead-letter folder".into(),
                sink.at,
            ));
        }
    }
    for stage in &spec.stages {
        writes.push((
            stage.spec.dead_letter.clone(),
            format!("dead-letter folder of stage `{}`", stage.spec.name),
            stage.at,
        ));
    }
    if uses_state || spec.needs_state_file() {
        writes.push((
            spec.state_dir.clone(),
            "state folder".into(),
            Location { line: 1, column: 1 },
        ));
    }
    writes
}

/// Checks that no pipeline of several run together writes into a folder
/// another one's directory source reads.
pub fn check_across(specs: &[PipelineSpec]) -> Result<(), ConfigError> {
    for (i, spec) in specs.iter().enumerate() {
        for (j, other) in specs.iter().enumerate() {
            if i == j {
                continue;
            }
            for (dir, what, at) in writes(spec, false) {
                for (source, _) in reads(other) {
                    if confine::overlap(&dir, source) {
                        return Err(spec.error_at(
                            at,
                            format!(
                                "{what} {} overlaps the folder of a directory source of pipeline \
                                 `{}` ({}): that pipeline would read this one's output",
                                dir.display(),
                                other.name,
                                source.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks the folders of `spec`. `uses_state`: whether a stage's plugin
/// uses the state interface (known once the plugins are loaded), so that
/// the state folder is checked when it will be made.
pub fn check_folders(spec: &PipelineSpec, uses_state: bool) -> Result<(), ConfigError> {
    let reads = reads(spec);
    for (dir, at) in &reads {
        if !dir.is_dir() {
            return Err(spec.error_at(
                *at,
                format!(
                    "source directory {}: the folder does not exist (create it, or fix `path`)",
                    dir.display()
                ),
            ));
        }
    }
    let writes = writes(spec, uses_state);
    for (dir, what, at) in &writes {
        writable_folder(dir).map_err(|m| spec.error_at(*at, format!("{what}: {m}")))?;
        for (source, _) in &reads {
            if confine::overlap(dir, source) {
                return Err(spec.error_at(
                    *at,
                    format!(
                        "{what} {} overlaps the folder of a directory source ({}): the pipeline \
                         would read its own output again; use folders apart from each other",
                        dir.display(),
                        source.display()
                    ),
                ));
            }
        }
    }
    let sink_dirs: Vec<&(PathBuf, String, Location)> = writes
        .iter()
        .filter(|(_, what, _)| what == "directory sink")
        .collect();
    for (i, (a, _, at)) in sink_dirs.iter().enumerate() {
        for (b, _, _) in &sink_dirs[..i] {
            if confine::best_real_path(a) == confine::best_real_path(b) {
                return Err(spec.error_at(
                    *at,
                    format!(
                        "two directory sinks write to {}: their files would overwrite each other",
                        a.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `dir` is a folder this process can create files in, or can be
/// made as one: its nearest existing ancestor must be a folder in which a
/// file can be created (tried for real, with a hidden name removed at
/// once, since permissions alone do not tell for a read-only file system
/// or for root).
pub fn writable_folder(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) if existing == dir => {
                return Err(format!("{} exists and is not a folder", dir.display()));
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be made: {} is not a folder",
                    dir.display(),
                    existing.display()
                ));
            }
            Err(_) => match existing.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            },
        }
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe = existing.join(format!(
        ".sluice-check-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if existing == dir => Err(format!("cannot write in {}: {e}", dir.display())),
        Err(e) => Err(format!(
            "{} cannot be made: cannot write in {}: {e}",
            dir.display(),
            existing.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_that_cannot_be_written_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(writable_folder(dir.path()).is_ok());
        assert!(writable_folder(&dir.path().join("new/deeper")).is_ok());
        let err = writable_folder(&file).unwrap_err();
        assert!(err.contains("is not a folder"), "{err}");
        let err = writable_folder(&file.join("under")).unwrap_err();
        assert!(err.contains("is not a folder"), "{err}");
        let err = writable_folder(Path::new("/dev/full")).unwrap_err();
        assert!(err.contains("is not a folder"), "{err}");
        let err = writable_folder(Path::new("/proc/sluice-out")).unwrap_err();
        assert!(err.contains("cannot write in /proc"), "{err}");
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
