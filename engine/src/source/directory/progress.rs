//! How far a directory source has read, and its position text.
//!
//! Files are keyed by their exact names (`OsString`), never by a lossy
//! string: two names that differ only in bytes that are not UTF-8 are two
//! files. As a position, entries are separated by `/` (which no file name
//! holds): `d:NAME` for a file read to the end and `pLINES:NAME` for one
//! begun, or `D:HEX` and `PLINES:HEX` when the name is not UTF-8 (its bytes
//! in hex).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};

/// The files read to the end, and the lines read of files begun but not
/// finished (the one being read, and any a crashed run left part-way, until
/// they are read again).
///
/// Every chunk carries its position, so the finished files are kept
/// already encoded: a chunk copies one string instead of formatting an
/// entry per file read so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    done: BTreeSet<OsString>,
    /// `done`, encoded.
    encoded: String,
    partial: BTreeMap<OsString, u64>,
}

impl Progress {
    /// `name` has been read to the end.
    pub fn finish(&mut self, name: &OsStr) {
        self.partial.remove(name);
        if self.done.insert(name.to_os_string()) {
            push_entry(&mut self.encoded, Entry::Done, name);
        }
    }

    /// The files read to the end.
    pub fn done_names(&self) -> impl Iterator<Item = &OsString> {
        self.done.iter()
    }

    /// Lines already read of `name`, if a run began it.
    pub fn partial_lines(&self, name: &OsStr) -> u64 {
        self.partial.get(name).copied().unwrap_or(0)
    }

    /// `name` was read up to `lines` and no further (a read failed).
    pub fn note_partial(&mut self, name: &OsStr, lines: u64) {
        self.partial.insert(name.to_os_string(), lines);
    }

    /// Forgets files that are no longer in the folder.
    pub fn forget_missing(&mut self, present: &HashSet<&OsStr>) {
        let before = self.done.len();
        self.done.retain(|n| present.contains(n.as_os_str()));
        self.partial.retain(|n, _| present.contains(n.as_os_str()));
        if self.done.len() != before {
            self.encoded.clear();
            for name in &self.done {
                push_entry(&mut self.encoded, Entry::Done, name);
            }
        }
    }

    /// The position while `reading` = (file, lines read) is under way.
    pub fn encode_reading(&self, reading: Option<(&OsStr, u64)>) -> String {
        let mut text = self.encoded.clone();
        for (name, lines) in &self.partial {
            match reading {
                Some((current, _)) if current == name.as_os_str() => {}
                _ => push_entry(&mut text, Entry::Partial(*lines), name),
            }
        }
        if let Some((name, lines)) = reading {
            push_entry(&mut text, Entry::Partial(lines), name);
        }
        text
    }

    /// The position with nothing under way.
    #[cfg(test)]
    pub fn encode(&self) -> String {
        self.encode_reading(None)
    }

    /// Reads a position back; `None` if it is malformed.
    pub fn decode(position: &str) -> Option<Progress> {
        let mut progress = Progress::default();
        for entry in position.split('/').filter(|e| !e.is_empty()) {
            let (head, name) = entry.split_once(':')?;
            let (kind, rest) = head.split_at_checked(1)?;
            let name = match kind {
                "d" | "p" => OsString::from(name),
                "D" | "P" => from_hex(name)?,
                _ => return None,
            };
            match kind {
                "d" | "D" if rest.is_empty() => progress.finish(&name),
                "p" | "P" => {
                    progress.partial.insert(name, rest.parse().ok()?);
                }
                _ => return None,
            }
        }
        Some(progress)
    }
}

enum Entry {
    Done,
    Partial(u64),
}

fn push_entry(text: &mut String, entry: Entry, name: &OsStr) {
    use std::fmt::Write;
    if !text.is_empty() {
        text.push('/');
    }
    match (entry, name.to_str()) {
        (Entry::Done, Some(name)) => {
            let _ = write!(text, "d:{name}");
        }
        (Entry::Partial(lines), Some(name)) => {
            let _ = write!(text, "p{lines}:{name}");
        }
        (Entry::Done, None) => {
            let _ = write!(text, "D:{}", to_hex(name));
        }
        (Entry::Partial(lines), None) => {
            let _ = write!(text, "P{lines}:{}", to_hex(name));
        }
    }
}

fn to_hex(name: &OsStr) -> String {
    name.as_encoded_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn from_hex(text: &str) -> Option<OsString> {
    if text.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(OsString::from_vec(bytes))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes).ok().map(OsString::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn os(bytes: &[u8]) -> &OsStr {
        OsStr::from_bytes(bytes)
    }

    #[test]
    fn progress_round_trips_through_its_position() {
        let mut progress = Progress::default();
        progress.finish(os(b"a.txt"));
        progress.finish(os(b"b:with colon.txt"));
        progress.partial = BTreeMap::from([("c.txt".into(), 40), ("d d.txt".into(), 7)]);
        let position = progress.encode();
        assert_eq!(position, "d:a.txt/d:b:with colon.txt/p40:c.txt/p7:d d.txt");
        assert_eq!(Progress::decode(&position), Some(progress.clone()));
        assert_eq!(Progress::decode(""), Some(Progress::default()));
        assert_eq!(Progress::decode("x:y"), None);
        assert_eq!(Progress::decode("pq:y"), None);
        assert_eq!(Progress::decode("dx:y"), None);
        assert_eq!(Progress::decode("D:6"), None);
        assert_eq!(
            progress.done_names().collect::<Vec<_>>(),
            [os(b"a.txt"), os(b"b:with colon.txt")]
        );
        // While a begun file is read again, its entry moves on.
        assert_eq!(
            progress.encode_reading(Some((os(b"c.txt"), 55))),
            "d:a.txt/d:b:with colon.txt/p7:d d.txt/p55:c.txt"
        );
    }

    #[test]
    fn names_that_are_not_utf8_keep_their_exact_bytes() {
        // `caf\xe9` and `caf\xe8` decode lossily to the same text.
        let mut progress = Progress::default();
        progress.finish(os(b"caf\xe9.txt"));
        progress.partial.insert(os(b"caf\xe8.txt").into(), 3);
        let position = progress.encode();
        assert_eq!(position, "D:636166e92e747874/P3:636166e82e747874");
        let back = Progress::decode(&position).unwrap();
        assert_eq!(back, progress);
        assert_eq!(back.partial_lines(os(b"caf\xe8.txt")), 3);
        assert_eq!(back.partial_lines(os(b"caf\xe9.txt")), 0);
        assert!(back.done_names().any(|n| n == os(b"caf\xe9.txt")));
        assert!(!back.done_names().any(|n| n == os(b"caf\xe8.txt")));
    }

    #[test]
    fn deleted_files_are_forgotten() {
        let mut progress = Progress::default();
        for name in ["a", "b", "c"] {
            progress.finish(OsStr::new(name));
        }
        progress.partial.insert("d".into(), 2);
        let present: HashSet<&OsStr> = [OsStr::new("b")].into();
        progress.forget_missing(&present);
        assert_eq!(progress.encode(), "d:b");
    }
}
