//! Reading the input batch: [`Batch`] owns the columns as they crossed the
//! boundary and checks them once; [`RecordRef`] reads one record's fields
//! out of them without copying. Writing is `output.rs`'s job.

use std::fmt;
use std::iter::FusedIterator;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Error, Utf8Error};

/// What the engine tells a plugin about the batch it is processing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The pipeline's `name`.
    pub pipeline: String,
    /// The stage's `name` in the pipeline file.
    pub stage: String,
    /// The batch's sequence number in this run of the pipeline, from 0.
    pub id: u64,
    /// The batch time: the start of the interval whose records the batch
    /// holds, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The pipeline's batch interval, in milliseconds.
    pub interval: u64,
}

impl From<wit::BatchInfo> for BatchInfo {
    fn from(info: wit::BatchInfo) -> Self {
        BatchInfo {
            pipeline: info.pipeline,
            stage: info.stage,
            id: info.id,
            time: info.time,
            interval: info.interval,
        }
    }
}

/// One micro-batch of input records, as the engine handed it to
/// [`Processor::process`](crate::Processor::process).
///
/// Records are read in place: iterate with [`records`](Batch::records) or
/// pick one with [`record`](Batch::record).
pub struct Batch {
    info: BatchInfo,
    raw: wit::Batch,
    len: usize,
    has_keys: bool,
    has_headers: bool,
}

impl Batch {
    /// Checks the columns against the rules of `wit/plugin.wit` once, so that
    /// reading a record afterwards cannot go out of bounds.
    pub(crate) fn from_wit(info: BatchInfo, raw: wit::Batch) -> Result<Batch, Error> {
        let len = raw.timestamps.len();
        check_column("values", &raw.values, Some(len))?;
        let key_entries = check_column("keys", &raw.keys, None)?;
        let has_keys = key_entries != 0;
        if has_keys && key_entries != len {
            return Err(malformed(format!("{key_entries} keys for {len} records")));
        }
        // Bytes past the end of `keys-absent` count as zero (key present).
        if raw.keys_absent.len() > len.div_ceil(8) {
            return Err(malformed(format!(
                "keys-absent has {} bytes for {len} records",
                raw.keys_absent.len()
            )));
        }
        let has_headers = !raw.header_offsets.is_empty();
        if has_headers {
            let names = check_column("header-names", &raw.header_names, None)?;
            let values = check_column("header-values", &raw.header_values, Some(names))?;
            check_offsets("header-offsets", &raw.header_offsets, len, values)?;
        }
        Ok(Batch {
            info,
            raw,
            len,
            has_keys,
            has_headers,
        })
    }

    /// Builds a batch from records, as the engine would send it: for unit
    /// tests of a [`Processor`](crate::Processor) outside Wasm. A record
    /// without a timestamp gets `info.time`.
    pub fn from_records(
        info: BatchInfo,
        records: impl IntoIterator<Item = crate::Record>,
    ) -> Batch {
        let mut out = crate::Output::with_time(info.time);
        for record in records {
            out.push(record);
        }
        let raw = out.into_wit().batch;
        Batch::from_wit(info, raw).expect("the SDK's own encoding follows the WIT rules")
    }

    /// What the engine says about this batch: pipeline, stage, id and time.
    pub fn info(&self) -> &BatchInfo {
        &self.info
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no record (the engine may still call
    /// `process` with an empty batch, for example when a window slides).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records, in order.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            next: 0,
            end: self.len,
        }
    }

    /// Record `index`, or `None` past the end.
    pub fn record(&self, index: usize) -> Option<RecordRef<'_>> {
        (index < self.len).then_some(RecordRef { batch: self, index })
    }

    /// The total size of all values, in bytes (to size output buffers).
    pub(crate) fn value_bytes(&self) -> usize {
        self.raw.values.data.len()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("info", &self.info)
            .field("records", &self.records().collect::<Vec<_>>())
            .finish()
    }
}

/// Iterator over the records of a [`Batch`]; see [`Batch::records`].
#[derive(Clone)]
pub struct Records<'a> {
    batch: &'a Batch,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.next == self.end {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some(RecordRef {
            batch: self.batch,
            index,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Records<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.next == self.end {
            return None;
        }
        self.end -= 1;
        Some(RecordRef {
            batch: self.batch,
            index: self.end,
        })
    }
}

impl ExactSizeIterator for Records<'_> {}
impl FusedIterator for Records<'_> {}

/// One input record, read in place from its [`Batch`].
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    batch: &'a Batch,
    index: usize,
}

impl<'a> RecordRef<'a> {
    /// The record's index in the input batch: what
    /// [`Output::fail`](crate::Output::fail) takes.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index as u32
    }

    /// The value (payload) bytes.
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        entry(&self.batch.raw.values, self.index)
    }

    /// The value as text, or an error like "value is not valid UTF-8 at byte
    /// 3".
    #[inline]
    pub fn value_str(&self) -> Result<&'a str, Utf8Error> {
        std::str::from_utf8(self.value()).map_err(|e| Utf8Error::new("value", e))
    }

    /// The key, if the record has one (which may be empty: `Some(b"")`).
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        if !self.batch.has_keys {
            return None;
        }
        let absent = &self.batch.raw.keys_absent;
        let i = self.index;
        if absent
            .get(i / 8)
            .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
        {
            return None;
        }
        Some(entry(&self.batch.raw.keys, i))
    }

    /// The key as text: `Ok(None)` without a key, an error like "key is not
    /// valid UTF-8 at byte 0" when it is not text.
    pub fn key_str(&self) -> Result<Option<&'a str>, Utf8Error> {
        self.key()
            .map(|key| std::str::from_utf8(key).map_err(|e| Utf8Error::new("key", e)))
            .transpose()
    }

    /// The event time, in milliseconds since the Unix epoch.
    #[inline]
    pub fn timestamp(&self) -> u64 {
        self.batch.raw.timestamps[self.index]
    }

    /// The headers, as (name, value) pairs in the record's order.
    pub fn headers(&self) -> Headers<'a> {
        let raw = &self.batch.raw;
        let (next, end) = if self.batch.has_headers {
            let offsets = &raw.header_offsets;
            (
                offsets[self.index] as usize,
                offsets[self.index + 1] as usize,
            )
        } else {
            (0, 0)
        };
        Headers {
            names: &raw.header_names,
            values: &raw.header_values,
            next,
            end,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self.headers().map(|(n, v)| (Bytes(n), Bytes(v))).collect();
        f.debug_struct("RecordRef")
            .field("index", &self.index)
            .field("timestamp", &self.timestamp())
            .field("key", &self.key().map(Bytes))
            .field("value", &Bytes(self.value()))
            .field("headers", &headers)
            .finish()
    }
}

/// Iterator over a record's headers; see [`RecordRef::headers`].
#[derive(Clone)]
pub struct Headers<'a> {
    names: &'a wit::Column,
    values: &'a wit::Column,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some((entry(self.names, i), entry(self.values, i)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Headers<'_> {}
impl FusedIterator for Headers<'_> {}

/// Entry `i` of a column that [`check_column`] accepted.
#[inline]
fn entry(column: &wit::Column, i: usize) -> &[u8] {
    let start = column.offsets[i] as usize;
    let end = column.offsets[i + 1] as usize;
    &column.data[start..end]
}

/// Checks a column's offsets and returns its number of entries, which must be
/// `expected` when given (a column with no entries may have `[]` or `[0]`).
fn check_column(name: &str, column: &wit::Column, expected: Option<usize>) -> Result<usize, Error> {
    let entries = column.offsets.len().saturating_sub(1);
    if let Some(expected) = expected
        && entries != expected
    {
        return Err(malformed(format!(
            "{name} has {entries} entries, expected {expected}"
        )));
    }
    if entries == 0 {
        if !column.data.is_empty() || column.offsets.first().is_some_and(|&o| o != 0) {
            return Err(malformed(format!("{name} has no entries but holds data")));
        }
        return Ok(0);
    }
    check_offsets(name, &column.offsets, entries, column.data.len())?;
    Ok(entries)
}

/// Checks that `offsets` has `entries + 1` elements, starts at 0, never
/// decreases and ends at `end`.
fn check_offsets(name: &str, offsets: &[u32], entries: usize, end: usize) -> Result<(), Error> {
    if offsets.len() != entries + 1 {
        return Err(malformed(format!(
            "{name} has {} offsets, expected {}",
            offsets.len(),
            entries + 1
        )));
    }
    if offsets[0] != 0 {
        return Err(malformed(format!("{name} starts at {}, not 0", offsets[0])));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(malformed(format!("{name} decreases")));
    }
    let last = offsets[entries] as usize;
    if last != end {
        return Err(malformed(format!("{name} ends at {last}, expected {end}")));
    }
    Ok(())
}

fn malformed(detail: String) -> Error {
    Error::failed(format!("malformed input batch from the engine: {detail}"))
}

/// Shows bytes as text when they are UTF-8, for `Debug`.
struct Bytes<'a>(&'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => fmt::Debug::fmt(text, f),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}
