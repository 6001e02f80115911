//! Keeping file access inside the folders a pipeline was given.
//!
//! A `directory` source reads only regular files whose real path lies inside
//! its folder (a hard link is a regular file inside the folder: it is read,
//! so whoever may write the folder decides what it holds) (a link in the folder to `/etc/passwd` or `/proc/self/environ`
//! is skipped, not read), a hosted tenant's paths stay inside its files root,
//! and `sluice check` refuses folders that overlap where they must not (a
//! sink writing into a source's folder feeds its own output back in). This
//! module owns those rules; which folders a pipeline has belongs to `config`.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a file in a confined folder was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// It is not a regular file (a folder, a FIFO, a device, a socket).
    #[error("not a regular file")]
    NotRegular,
    /// Its real path (after following links) is outside the folder.
    #[error("it links to {}, outside the folder", .0.display())]
    Outside(PathBuf),
    /// It could not be opened or examined.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Opens `dir/name` for reading if it is a regular file whose real path is
/// inside `dir` (which must be canonical), or anywhere when `follow_links`.
///
/// The checks are made on the opened file, not on the path before opening,
/// so a link swapped in between cannot slip through; the file is opened
/// non-blocking, so a FIFO put in the folder cannot hang the reader.
pub fn open_inside(dir: &Path, name: &OsStr, follow_links: bool) -> Result<File, Refusal> {
    let path = dir.join(name);
    let file = open_nonblocking(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    if !follow_links {
        let real = real_path(&file, &path)?;
        if !real.starts_with(dir) {
            return Err(Refusal::Outside(real));
        }
    }
    Ok(file)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Where an opened file really is: on Linux, what the kernel says of the
/// descriptor; elsewhere, the path canonicalised.
fn real_path(file: &File, path: &Path) -> io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(real);
        }
    }
    let _ = file;
    path.canonicalize()
}

/// `path` made absolute and free of links as far as it exists, with the
/// part that does not exist yet appended as written (`.` dropped, `..`
/// taken lexically). For comparing folders that may not exist yet.
pub fn best_real_path(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return lexical(&absolute),
        }
    }
}

/// `path` with `.` and `..` taken lexically.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether two folders are the same, or one lies inside the other, after
/// following links (see [`best_real_path`]).
pub fn overlap(a: &Path, b: &Path) -> bool {
    let (a, b) = (best_real_path(a), best_real_path(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// Resolves `written`, a path from a hosted tenant's pipeline, against the
/// tenant's files root `root` (canonical): it must be relative, must not
/// leave the root with `..`, and what of it exists must not link out of the
/// root. Returns the path inside the root.
pub fn resolve_inside(root: &Path, written: &Path) -> Result<PathBuf, String> {
    if written.is_absolute() {
        return Err(format!(
            "`{}` is an absolute path: paths are relative to your files root",
            written.display()
        ));
    }
    let mut depth = 0usize;
    for part in written.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => {
                return Err(format!("`{}` leaves your files root", written.display()));
            }
        }
    }
    let joined = root.join(written);
    let real = best_real_path(&joined);
    if !real.starts_with(root) {
        return Err(format!(
            "`{}` links out of your files root",
            written.display()
        ));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_inside_open_and_links_out_do_not() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("in")).unwrap();
        let dir = root.path().join("in").canonicalize().unwrap();
        std::fs::write(dir.join("a.txt"), "a\n").unwrap();
        std::fs::write(root.path().join("secret"), "s\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("out")).unwrap();
        std::os::unix::fs::symlink(dir.join("a.txt"), dir.join("in-link")).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();

        assert!(open_inside(&dir, OsStr::new("a.txt"), false).is_ok());
        assert!(open_inside(&dir, OsStr::new("in-link"), false).is_ok());
        assert!(matches!(
            open_inside(&dir, OsStr::new("out"), false),
            Err(Refusal::Outside(_))
        ));
        assert!(open_inside(&dir, OsStr::new("out"), true).is_ok());
        assert!(matches!(
            open_inside(&dir, OsStr::new("sub"), false),
            Err(Refusal::NotRegular)
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            open_inside(&dir, OsStr::new("pipe"), false),
            Err(Refusal::NotRegular)
        ));
    }

    #[test]
    fn overlapping_folders_are_found_through_links_and_missing_parts() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        std::fs::create_dir(&a).unwrap();
        std::os::unix::fs::symlink(&a, root.path().join("link")).unwrap();
        assert!(overlap(&a, &root.path().join("link")));
        assert!(overlap(&a, &root.path().join("link/not/yet")));
        assert!(overlap(&root.path().join("a/./x/../"), &a));
        assert!(!overlap(&a, &root.path().join("b")));
        assert!(!overlap(&a, &root.path().join("ab")));
    }

    #[test]
    fn tenant_paths_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("in")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert_eq!(
            resolve_inside(&root, Path::new("in")).unwrap(),
            root.join("in")
        );
        assert_eq!(
            resolve_inside(&root, Path::new("new/out")).unwrap(),
            root.join("new/out")
        );
        assert!(resolve_inside(&root, Path::new("in/../in")).is_ok());
        assert!(resolve_inside(&root, Path::new("/etc")).is_err());
        assert!(resolve_inside(&root, Path::new("../x")).is_err());
        assert!(resolve_inside(&root, Path::new("in/../../x")).is_err());
        assert!(resolve_inside(&root, Path::new("etc")).is_err());
        assert!(resolve_inside(&root, Path::new("etc/passwd")).is_err());
    }
}
