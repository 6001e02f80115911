//! The secret a `sluice run` control endpoint asks for, and where the local
//! commands find it.
//!
//! Each run makes a new random token and writes it to a file only its user
//! can read, named after the endpoint's address, in a folder only that user
//! can enter: `$SLUICE_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/sluice`, else
//! `~/.local/state/sluice`. `sluice deploy`, `status` and `rollback` read it
//! from there by the address they are given (or take `--token` /
//! `SLUICE_TOKEN`). Any other local user, and any web page a local browser
//! opens, lacks it. The folder is per user rather than beside a pipeline's
//! state because the commands know only the address, not the pipeline file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh random token: 32 bytes, in hex.
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The per-user folder of control tokens.
pub fn runtime_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/sluice"))
}

/// The token file of the endpoint at `address` (`host:port`).
pub fn path_for(address: &str) -> Option<PathBuf> {
    let name: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Some(runtime_dir()?.join(format!("control-{name}.token")))
}

/// The token file of a running endpoint; removed when dropped.
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Writes `token` for the endpoint at `address`, readable by this user
    /// only.
    pub fn write(address: &str, token: &str) -> std::io::Result<TokenFile> {
        let path = path_for(address).ok_or_else(|| {
            std::io::Error::other("no folder for the control token: set HOME or SLUICE_RUNTIME_DIR")
        })?;
        let dir = path.parent().expect("a token file has a folder");
        create_private_dir(dir)?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let mut file = private_file(&tmp)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        Ok(TokenFile { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the token of the endpoint at `address`, if this user has one: the
/// file named as written, or as the address resolves (`localhost:7077`
/// finds the file of `127.0.0.1:7077`).
pub fn read_for(address: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let mut names = vec![address.to_string()];
    if let Ok(resolved) = address.to_socket_addrs() {
        names.extend(resolved.map(|a| a.to_string()));
    }
    names.iter().find_map(|name| {
        let text = std::fs::read_to_string(path_for(name)?).ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| token.to_string())
    })
}

/// Makes `dir` (only this user may enter a folder it makes); an existing
/// one must belong to this user and is left as it is (the token file
/// itself is only this user's to read).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)?;
        // SAFETY: getuid has no preconditions.
        if meta.uid() != unsafe { libc::getuid() } {
            return Err(std::io::Error::other(format!(
                "{} belongs to another user",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme's name
/// in any case, as HTTP has it).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..63]));
    }
}
