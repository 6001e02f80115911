//! Splitting a byte stream into line records, across reads.

use super::CHUNK_RECORDS;
use crate::batch::{Records, now_ms};

/// Longest line kept as one record; longer ones are cut into pieces of this
/// size (with a warning) so a peer that never sends a newline cannot
/// exhaust memory.
pub const MAX_LINE: usize = 1 << 20;

/// An empty chunk with room for the lines in one read of `n` bytes: at most
/// one record per byte (up to a chunk's worth), and no more bytes than read
/// unless a partial line from before completes.
pub fn chunk_for_read(n: usize) -> Records {
    Records::with_capacity(n.min(CHUNK_RECORDS), n)
}

/// Turns bytes into one record per line (`\n` or `\r\n`, removed), carrying
/// a partial last line over to the next read.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    cut_lines: u64,
}

impl LineSplitter {
    /// Adds every complete line in `bytes` to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Records) {
        let ts = now_ms();
        while let Some(newline) = memchr::memchr(b'\n', bytes) {
            let line = &bytes[..newline];
            if self.partial.is_empty() {
                push_line(out, line, ts);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                push_line(out, &whole, ts);
            }
            bytes = &bytes[newline + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() > MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.partial, rest);
            out.push_value(&piece, ts);
            self.cut_lines += 1;
            if self.cut_lines.is_power_of_two() {
                tracing::warn!(
                    "a line longer than {MAX_LINE} bytes was cut into pieces ({} so far)",
                    self.cut_lines
                );
            }
        }
    }

    /// At end of input: the last line, if it had no newline.
    pub fn finish(&mut self, out: &mut Records) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            push_line(out, &whole, now_ms());
        }
    }
}

fn push_line(out: &mut Records, line: &[u8], ts: u64) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    out.push_value(line, ts);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_reads() {
        let mut s = LineSplitter::default();
        let mut out = Records::default();
        s.feed(b"one\r\ntw", &mut out);
        s.feed(b"o\n\nthr", &mut out);
        s.finish(&mut out);
        let lines: Vec<_> = out.iter().map(|r| r.value().to_vec()).collect();
        assert_eq!(
            lines,
            vec![
                b"one".to_vec(),
                b"two".to_vec(),
                b"".to_vec(),
                b"thr".to_vec()
            ]
        );
    }
}
