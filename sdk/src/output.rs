//! Writing the output batch: [`Output`] appends records straight into the
//! columns that cross the boundary (keys and headers columns appear only
//! once some record has one) and collects per-record failures; [`Record`]
//! is the owned builder for when convenience beats speed.

use std::fmt;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Batch, BatchInfo, RecordRef};

/// An output record built field by field; hand it to [`Output::push`].
///
/// ```
/// # use sluice_sdk::Record;
/// let record = Record::new("hello").with_key("greeting").with_header("lang", "en");
/// assert_eq!(record.value(), b"hello");
/// assert_eq!(record.timestamp(), None); // `Output` uses the batch time
/// ```
///
/// Each field is its own allocation: in a hot loop prefer [`Output::emit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    value: Vec<u8>,
    key: Option<Vec<u8>>,
    timestamp: Option<u64>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Record {
    /// A record with this value (a `&str`, `String`, `&[u8]` or `Vec<u8>`),
    /// no key, no headers and the batch time as timestamp.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the event time, in milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp: u64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds a header (names may repeat; order is kept).
    pub fn with_header(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The key, if set.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The timestamp, if set.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// The headers, in order.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

/// What [`Processor::process`](crate::Processor::process) writes: the output
/// records, in order, and the input records that failed.
///
/// Records are appended straight into the columnar buffers that cross the
/// boundary. [`emit`](Output::emit), [`emit_fmt`](Output::emit_fmt) and
/// [`forward`](Output::forward) copy bytes only once and allocate nothing
/// per record; [`push`](Output::push) takes a [`Record`] for convenience.
pub struct Output {
    time: u64,
    timestamps: Vec<u64>,
    values: ColumnBuf,
    /// Empty `offsets` until some record has a key.
    keys: ColumnBuf,
    keys_absent: Vec<u8>,
    any_key_absent: bool,
    /// Empty until some record has headers; then one more than records.
    header_offsets: Vec<u32>,
    header_names: ColumnBuf,
    header_values: ColumnBuf,
    failures: Vec<wit::RecordFailure>,
}

impl Output {
    /// An empty output for `batch`, sized for as many records and value bytes
    /// as the input has. The SDK makes one per call to `process`; this is for
    /// tests.
    pub fn new(batch: &Batch) -> Output {
        let mut out = Output::with_time(batch.info().time);
        out.timestamps.reserve(batch.len());
        out.values.offsets.reserve(batch.len());
        out.values.data.reserve(batch.value_bytes());
        out
    }

    pub(crate) fn with_time(time: u64) -> Output {
        Output {
            time,
            timestamps: Vec::new(),
            values: ColumnBuf::started(),
            keys: ColumnBuf::unstarted(),
            keys_absent: Vec::new(),
            any_key_absent: false,
            header_offsets: Vec::new(),
            header_names: ColumnBuf::started(),
            header_values: ColumnBuf::started(),
            failures: Vec::new(),
        }
    }

    /// Appends a record: the fast path. The value (a `&str`, `&[u8]`, ...)
    /// and key are copied straight into the output columns.
    ///
    /// ```
    /// # use sluice_sdk::{Batch, BatchInfo, Output, Record};
    /// # let batch = Batch::from_records(BatchInfo::default(), [Record::new("a b")]);
    /// # let mut out = Output::new(&batch);
    /// for rec in batch.records() {
    ///     for word in rec.value_str()?.split_whitespace() {
    ///         out.emit(word, None, rec.timestamp());
    ///     }
    /// }
    /// # assert_eq!(out.len(), 2);
    /// # Ok::<(), sluice_sdk::Error>(())
    /// ```
    #[inline]
    pub fn emit(&mut self, value: impl AsRef<[u8]>, key: Option<&[u8]>, timestamp: u64) {
        self.values.data.extend_from_slice(value.as_ref());
        self.end_record(key, timestamp);
    }

    /// Appends a record whose value is formatted text, written straight into
    /// the output column (no intermediate `String`):
    ///
    /// ```
    /// # use sluice_sdk::{Batch, BatchInfo, Output};
    /// # let mut out = Output::new(&Batch::from_records(BatchInfo::default(), []));
    /// # let (word, count, time) = ("sluice", 3, 0);
    /// out.emit_fmt(format_args!("{count}"), Some(word.as_bytes()), time);
    /// ```
    ///
    /// Panics if a `Display` implementation returns an error, as `format!`
    /// does.
    pub fn emit_fmt(&mut self, value: fmt::Arguments<'_>, key: Option<&[u8]>, timestamp: u64) {
        fmt::write(&mut AppendBytes(&mut self.values.data), value)
            .expect("a formatting trait implementation returned an error");
        self.end_record(key, timestamp);
    }

    /// Appends a copy of an input record, unchanged: value, key, headers and
    /// timestamp.
    pub fn forward(&mut self, record: &RecordRef<'_>) {
        let headers = record.headers();
        if headers.len() != 0 {
            self.start_headers();
            for (name, value) in headers {
                self.header_names.push(name);
                self.header_values.push(value);
            }
        }
        self.emit(record.value(), record.key(), record.timestamp());
    }

    /// Appends a [`Record`]; one without a timestamp gets the batch time.
    pub fn push(&mut self, record: Record) {
        if !record.headers.is_empty() {
            self.start_headers();
            for (name, value) in &record.headers {
                self.header_names.push(name);
                self.header_values.push(value);
            }
        }
        let timestamp = record.timestamp.unwrap_or(self.time);
        self.emit(&record.value, record.key.as_deref(), timestamp);
    }

    /// Reports input record `index` as failed, with a message for a human
    /// (name the field and the value). The engine sends it to the stage's
    /// dead-letter destination; the rest of the batch goes on.
    pub fn fail(&mut self, index: u32, message: impl Into<String>) {
        self.failures.push(wit::RecordFailure {
            index,
            message: message.into(),
        });
    }

    /// The number of records appended so far.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The failures reported so far, as (input index, message).
    pub fn failures(&self) -> impl ExactSizeIterator<Item = (u32, &str)> {
        self.failures.iter().map(|f| (f.index, f.message.as_str()))
    }

    /// The records written so far, as a batch one can read back (its info is
    /// the default one, except `time`): for tests.
    pub fn into_batch(self) -> Batch {
        let info = BatchInfo {
            time: self.time,
            ..BatchInfo::default()
        };
        Batch::from_wit(info, self.into_wit().batch)
            .expect("the SDK's own encoding follows the WIT rules")
    }

    /// Finishes the record whose value bytes were just appended.
    #[inline]
    fn end_record(&mut self, key: Option<&[u8]>, timestamp: u64) {
        let index = self.timestamps.len();
        self.values.end();
        self.timestamps.push(timestamp);
        match key {
            Some(key) => {
                if !self.keys.is_started() {
                    self.start_keys(index);
                }
                self.keys.push(key);
            }
            None if self.keys.is_started() => {
                self.keys.end();
                self.mark_key_absent(index);
            }
            None => {}
        }
        if self.has_headers() {
            self.header_offsets.push(self.header_names.entries() as u32);
        }
    }

    /// Starts the keys column when record `index` is the first with a key:
    /// the records before it get an empty entry, marked absent.
    #[cold]
    fn start_keys(&mut self, index: usize) {
        self.keys.offsets = vec![0; index + 1];
        self.keys
            .offsets
            .reserve(self.timestamps.capacity().saturating_sub(index));
        for i in 0..index {
            self.mark_key_absent(i);
        }
    }

    fn mark_key_absent(&mut self, index: usize) {
        let byte = index / 8;
        if self.keys_absent.len() <= byte {
            self.keys_absent.resize(byte + 1, 0);
        }
        self.keys_absent[byte] |= 1 << (index % 8);
        self.any_key_absent = true;
    }

    fn has_headers(&self) -> bool {
        !self.header_offsets.is_empty()
    }

    /// Starts the header offsets before the first record with headers: every
    /// record before it gets an empty range.
    fn start_headers(&mut self) {
        if !self.has_headers() {
            self.header_offsets = vec![0; self.timestamps.len() + 1];
        }
    }

    /// The WIT `output` for the records and failures written so far.
    pub(crate) fn into_wit(mut self) -> wit::Output {
        let len = self.timestamps.len();
        if self.any_key_absent {
            self.keys_absent.resize(len.div_ceil(8), 0);
        } else {
            self.keys_absent.clear();
        }
        wit::Output {
            batch: wit::Batch {
                timestamps: self.timestamps,
                values: self.values.into_wit(),
                keys: self.keys.into_wit(),
                keys_absent: self.keys_absent,
                header_offsets: self.header_offsets,
                header_names: self.header_names.into_wit(),
                header_values: self.header_values.into_wit(),
            },
            failures: self.failures,
        }
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("records", &self.len())
            .field("failures", &self.failures.len())
            .finish_non_exhaustive()
    }
}

/// A column being written: `offsets` holds the start of every entry so far
/// plus the end of the last, or nothing at all for a column not started.
struct ColumnBuf {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl ColumnBuf {
    fn started() -> Self {
        ColumnBuf {
            data: Vec::new(),
            offsets: vec![0],
        }
    }

    fn unstarted() -> Self {
        ColumnBuf {
            data: Vec::new(),
            offsets: Vec::new(),
        }
    }

    fn is_started(&self) -> bool {
        !self.offsets.is_empty()
    }

    fn entries(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.end();
    }

    /// Ends the entry whose bytes were appended to `data`. Wasm memory is at
    /// most 4 GiB, so a length always fits in `u32`.
    #[inline]
    fn end(&mut self) {
        self.offsets.push(self.data.len() as u32);
    }

    fn into_wit(self) -> wit::Column {
        wit::Column {
            data: self.data,
            offsets: self.offsets,
        }
    }
}

/// `fmt::Write` into the end of a byte buffer.
struct AppendBytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for AppendBytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(time: u64) -> BatchInfo {
        BatchInfo {
            time,
            ..BatchInfo::default()
        }
    }

    #[test]
    fn values_only_leave_keys_and_headers_empty() {
        let mut out = Output::with_time(7);
        out.emit("a", None, 1);
        out.push(Record::new("bc"));
        let wit = out.into_wit().batch;
        assert_eq!(wit.timestamps, [1, 7]);
        assert_eq!(wit.values.data, b"abc");
        assert_eq!(wit.values.offsets, [0, 1, 3]);
        assert!(wit.keys.offsets.is_empty() && wit.keys.data.is_empty());
        assert!(wit.keys_absent.is_empty());
        assert!(wit.header_offsets.is_empty());
    }

    #[test]
    fn late_key_backfills_absent_bits() {
        let mut out = Output::with_time(0);
        for i in 0..9 {
            out.emit("v", None, i);
        }
        out.emit("v", Some(b"k"), 9);
        out.emit("v", Some(b""), 10);
        out.emit("v", None, 11);
        let wit = out.into_wit().batch;
        assert_eq!(wit.keys.offsets, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(wit.keys_absent, [0xff, 0b1001]);
    }

    #[test]
    fn all_keyed_has_no_bitmap() {
        let mut out = Output::with_time(0);
        out.emit("v", Some(b"k1"), 0);
        out.emit("v", Some(b"k2"), 0);
        let wit = out.into_wit().batch;
        assert_eq!(wit.keys.data, b"k1k2");
        assert!(wit.keys_absent.is_empty());
    }

    #[test]
    fn round_trip() {
        let records = vec![
            Record::new("one").with_timestamp(5),
            Record::new(b"t\xffo".as_slice())
                .with_key("")
                .with_header("h", "1")
                .with_header("g", ""),
            Record::new(String::from("three")).with_key(vec![0xff, 2]),
            Record::new(Vec::new()).with_header("h", "3"),
        ];
        let batch = Batch::from_records(info(100), records);
        assert_eq!(batch.len(), 4);
        let r: Vec<_> = batch.records().collect();
        assert_eq!(r[0].value_str(), Ok("one"));
        assert_eq!(r[0].key(), None);
        assert_eq!(r[0].timestamp(), 5);
        assert_eq!(r[0].headers().count(), 0);
        assert_eq!(
            r[1].value_str().unwrap_err().to_string(),
            "value is not valid UTF-8 at byte 1"
        );
        assert_eq!(r[1].key(), Some(&b""[..]));
        assert_eq!(r[1].timestamp(), 100);
        assert_eq!(
            r[1].headers().collect::<Vec<_>>(),
            [(&b"h"[..], &b"1"[..]), (b"g", b"")]
        );
        assert_eq!(r[1].header("g"), Some(&b""[..]));
        assert_eq!(r[2].key(), Some(&[0xffu8, 2][..]));
        assert_eq!(
            r[2].key_str().unwrap_err().to_string(),
            "key is not valid UTF-8 at byte 0"
        );
        assert_eq!(r[2].header("h"), None);
        assert_eq!(r[3].value(), b"");
        assert_eq!(r[3].key(), None);
        assert_eq!(r[3].header("h"), Some(&b"3"[..]));

        let mut out = Output::new(&batch);
        batch.records().rev().for_each(|rec| out.forward(&rec));
        out.fail(1, "bad");
        assert_eq!(out.failures().collect::<Vec<_>>(), [(1, "bad")]);
        let back = out.into_batch();
        let values: Vec<_> = back.records().map(|r| r.value().to_vec()).collect();
        assert_eq!(values, [&b""[..], b"three", b"t\xffo", b"one"]);
        assert_eq!(back.record(2).unwrap().headers().count(), 2);
        assert_eq!(back.record(0).unwrap().header("h"), Some(&b"3"[..]));
        assert_eq!(back.record(1).unwrap().key(), Some(&[0xffu8, 2][..]));
        assert_eq!(back.record(3).unwrap().key(), None);
        assert!(back.record(4).is_none());
    }

    #[test]
    fn a_short_keys_absent_bitmap_means_the_rest_have_keys() {
        // 10 records, only record 0 without a key: the engine sends one byte.
        let mut keys = wit::Column {
            data: Vec::new(),
            offsets: vec![0, 0],
        };
        for _ in 1..10 {
            keys.data.push(b'k');
            keys.offsets.push(keys.data.len() as u32);
        }
        let batch = wit::Batch {
            timestamps: vec![0; 10],
            values: wit::Column {
                data: Vec::new(),
                offsets: vec![0; 11],
            },
            keys,
            keys_absent: vec![1],
            header_offsets: vec![],
            header_names: wit::Column {
                data: vec![],
                offsets: vec![],
            },
            header_values: wit::Column {
                data: vec![],
                offsets: vec![],
            },
        };
        let batch = Batch::from_wit(info(0), batch).unwrap();
        let keys: Vec<_> = batch.records().map(|r| r.key()).collect();
        assert_eq!(keys[0], None);
        assert!(keys[1..].iter().all(|k| *k == Some(&b"k"[..])));
    }

    #[test]
    fn rejects_malformed_input() {
        let column = |data: &[u8], offsets: &[u32]| wit::Column {
            data: data.to_vec(),
            offsets: offsets.to_vec(),
        };
        let good = || wit::Batch {
            timestamps: vec![1, 2],
            values: column(b"ab", &[0, 1, 2]),
            keys: column(b"", &[]),
            keys_absent: vec![],
            header_offsets: vec![],
            header_names: column(b"", &[]),
            header_values: column(b"", &[]),
        };
        assert!(Batch::from_wit(info(0), good()).is_ok());
        let bad = [
            wit::Batch {
                values: column(b"ab", &[0, 2]),
                ..good()
            },
            wit::Batch {
                values: column(b"ab", &[0, 3, 2]),
                ..good()
            },
            wit::Batch {
                values: column(b"ab", &[0, 1, 3]),
                ..good()
            },
            wit::Batch {
                keys: column(b"k", &[0, 1]),
                ..good()
            },
            wit::Batch {
                keys: column(b"kk", &[0, 1, 2]),
                keys_absent: vec![],
                ..good()
            },
            wit::Batch {
                header_offsets: vec![0, 1, 1],
                ..good()
            },
        ];
        let ok = [false, false, false, false, true, false];
        for (batch, ok) in bad.into_iter().zip(ok) {
            assert_eq!(Batch::from_wit(info(0), batch).is_ok(), ok);
        }
        let empty = wit::Batch {
            timestamps: vec![],
            values: column(b"", &[]),
            keys: column(b"", &[0]),
            keys_absent: vec![],
            header_offsets: vec![0],
            header_names: column(b"", &[]),
            header_values: column(b"", &[0]),
        };
        assert!(Batch::from_wit(info(0), empty).unwrap().is_empty());
    }
}
