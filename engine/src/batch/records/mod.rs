//! The engine's in-memory form of records: columns, laid out exactly as the
//! WIT `batch` record, so a batch crosses into a plugin and back as a few
//! block copies rather than one allocation per field per record.

/// A column of byte strings: entry `i` is `data[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    /// Every entry's bytes, back to back.
    pub data: Vec<u8>,
    /// Entry starts, plus the end of the last entry; empty when the column
    /// has no entries.
    pub offsets: Vec<u32>,
}

impl Column {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether the column has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`. Panics when out of range; callers check `len` first.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Appends an entry.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(bytes);
        self.offsets.push(self.data.len() as u32);
    }

    /// Appends `count` empty entries.
    fn push_empty(&mut self, count: usize) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let end = self.data.len() as u32;
        self.offsets.extend(std::iter::repeat_n(end, count));
    }

    /// Appends every entry of `other`.
    fn append(&mut self, other: &Column) {
        if other.is_empty() {
            return;
        }
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let base = self.data.len() as u32 - other.offsets[0];
        self.data
            .extend_from_slice(&other.data[other.offsets[0] as usize..]);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
    }

    /// Checks the offsets against the data: `expected` entries (or none,
    /// when `optional`), non-decreasing, ending at the data's length.
    fn check(&self, name: &str, expected: usize, optional: bool) -> Result<(), String> {
        // No entries: no offsets, or the single offset 0 (the WIT allows both).
        if self.offsets.len() <= 1 && (optional || expected == 0) {
            if self.offsets.first().is_some_and(|&o| o != 0) {
                return Err(format!(
                    "`{name}` has no entries but its one offset is {}",
                    self.offsets[0]
                ));
            }
            if !self.data.is_empty() {
                return Err(format!(
                    "`{name}` has {} bytes of data but no offsets",
                    self.data.len()
                ));
            }
            if expected > 0 && !optional {
                return Err(format!("`{name}` has no entries, expected {expected}"));
            }
            return Ok(());
        }
        if self.len() != expected {
            return Err(format!(
                "`{name}` has {} entries, expected {expected}",
                self.len()
            ));
        }
        if self.offsets[0] != 0 {
            return Err(format!(
                "`{name}` offsets start at {}, not 0",
                self.offsets[0]
            ));
        }
        if let Some(i) = self.offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(format!(
                "`{name}` offsets decrease at entry {i}: {} then {}",
                self.offsets[i],
                self.offsets[i + 1]
            ));
        }
        let end = *self.offsets.last().unwrap() as usize;
        if end != self.data.len() {
            return Err(format!(
                "`{name}` offsets end at {end} but the data has {} bytes",
                self.data.len()
            ));
        }
        Ok(())
    }

    fn byte_size(&self) -> usize {
        self.data.len() + self.offsets.len() * 4
    }
}

/// Records, column by column. Record `i` is index `i` in every column.
///
/// Invariants (checked by [`Records::check`] on anything a plugin returns):
/// `values` has one entry per timestamp; `keys` is empty or has one entry
/// per record; `keys_absent` is empty or a bitmap over the records;
/// `header_offsets` is empty or has `len + 1` entries indexing
/// `header_names` / `header_values`, which have the same number of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// Event time of each record, ms since the Unix epoch.
    pub timestamps: Vec<u64>,
    /// Each record's value.
    pub values: Column,
    /// Each record's key, or empty when no record has one.
    pub keys: Column,
    /// Bit `i` set: record `i` has no key (only when `keys` is not empty).
    pub keys_absent: Vec<u8>,
    /// Per-record ranges into the header columns, or empty.
    pub header_offsets: Vec<u32>,
    /// Header names.
    pub header_names: Column,
    /// Header values.
    pub header_values: Column,
}

/// One record, borrowed from a [`Records`].
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    records: &'a Records,
    index: usize,
}

impl<'a> RecordRef<'a> {
    /// The record's value.
    pub fn value(&self) -> &'a [u8] {
        self.records.values.get(self.index)
    }

    /// The record's key, if it has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        let r = self.records;
        if r.keys.is_empty() || bit(&r.keys_absent, self.index) {
            None
        } else {
            Some(r.keys.get(self.index))
        }
    }

    /// The record's event time, ms since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.records.timestamps[self.index]
    }

    /// The record's headers, as (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let r = self.records;
        let range = if r.header_offsets.is_empty() {
            0..0
        } else {
            r.header_offsets[self.index] as usize..r.header_offsets[self.index + 1] as usize
        };
        range.map(move |h| (r.header_names.get(h), r.header_values.get(h)))
    }
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap
        .get(i / 8)
        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

impl Records {
    /// An empty batch with room for `records` values of `bytes` bytes in
    /// all, so that a source filling a chunk does not grow its columns
    /// record by record (keys and headers, if any, still grow).
    pub fn with_capacity(records: usize, bytes: usize) -> Records {
        Records {
            timestamps: Vec::with_capacity(records),
            values: Column {
                data: Vec::with_capacity(bytes),
                offsets: Vec::with_capacity(records + 1),
            },
            ..Records::default()
        }
    }

    /// Makes room for `records` values of `bytes` bytes in all, in total
    /// (not in addition to what the batch holds).
    pub fn reserve_values(&mut self, records: usize, bytes: usize) {
        let more = records.saturating_sub(self.len());
        self.timestamps.reserve(more);
        self.values.offsets.reserve(more);
        let data = &mut self.values.data;
        data.reserve(bytes.saturating_sub(data.len()));
    }

    /// Gives back room the batch is far from using (more than twice its
    /// size and 16 KiB over it), so that a small batch that began as a
    /// pre-sized chunk does not keep a whole chunk's memory while it waits,
    /// for example in a window.
    pub fn trim(&mut self) {
        fn trim<T>(v: &mut Vec<T>) {
            let (used, room) = (v.len() * size_of::<T>(), v.capacity() * size_of::<T>());
            if room > 2 * used + (16 << 10) {
                v.shrink_to_fit();
            }
        }
        trim(&mut self.timestamps);
        trim(&mut self.values.data);
        trim(&mut self.values.offsets);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Record `i`.
    pub fn get(&self, index: usize) -> RecordRef<'_> {
        assert!(index < self.len(), "record {index} out of {}", self.len());
        RecordRef {
            records: self,
            index,
        }
    }

    /// Every record in order.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> {
        (0..self.len()).map(move |index| RecordRef {
            records: self,
            index,
        })
    }

    /// Approximate heap size in bytes.
    pub fn byte_size(&self) -> usize {
        self.timestamps.len() * 8
            + self.values.byte_size()
            + self.keys.byte_size()
            + self.keys_absent.len()
            + self.header_offsets.len() * 4
            + self.header_names.byte_size()
            + self.header_values.byte_size()
    }

    /// Appends a record with a value and a timestamp only: the fast path of
    /// line-oriented sources.
    pub fn push_value(&mut self, value: &[u8], timestamp: u64) {
        let i = self.len();
        self.timestamps.push(timestamp);
        self.values.push(value);
        if !self.keys.is_empty() {
            self.keys.push_empty(1);
            set_bit(&mut self.keys_absent, i);
        }
        if !self.header_offsets.is_empty() {
            let end = *self.header_offsets.last().unwrap();
            self.header_offsets.push(end);
        }
    }

    /// Appends a record.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: u64,
        headers: &[(&[u8], &[u8])],
    ) {
        let i = self.len();
        self.push_value(value, timestamp);
        if let Some(key) = key {
            if self.keys.is_empty() {
                // First key in this batch: earlier records had none.
                self.keys.push_empty(i);
                for earlier in 0..i {
                    set_bit(&mut self.keys_absent, earlier);
                }
            } else {
                // push_value added an empty, absent entry; replace it.
                self.keys.offsets.pop();
                clear_bit(&mut self.keys_absent, i);
            }
            self.keys.push(key);
        }
        if !headers.is_empty() {
            if self.header_offsets.is_empty() {
                self.header_offsets = vec![0; i + 2];
            }
            for (name, value) in headers {
                self.header_names.push(name);
                self.header_values.push(value);
            }
            *self.header_offsets.last_mut().unwrap() = self.header_names.len() as u32;
        }
    }

    /// Appends a copy of one record from another batch.
    pub fn push_record(&mut self, record: RecordRef<'_>) {
        let headers: Vec<_> = record.headers().collect();
        self.push(record.key(), record.value(), record.timestamp(), &headers);
    }

    /// Moves every record of `other` to the end of `self`.
    pub fn append(&mut self, other: Records) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other;
            return;
        }
        let other = &other;
        if other.keys.is_empty()
            && other.header_offsets.is_empty()
            && self.keys.is_empty()
            && self.header_offsets.is_empty()
        {
            self.timestamps.extend_from_slice(&other.timestamps);
            self.values.append(&other.values);
            return;
        }
        for record in other.iter() {
            self.push_record(record);
        }
    }

    /// Checks the invariants; the message says which column is wrong.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        self.values.check("values", n, false)?;
        self.keys.check("keys", n, true)?;
        if self.keys_absent.len() > n.div_ceil(8) {
            return Err(format!(
                "`keys-absent` has {} bytes, more than the {} that {n} records need",
                self.keys_absent.len(),
                n.div_ceil(8)
            ));
        }
        let headers = self.header_names.len();
        self.header_names.check("header-names", headers, true)?;
        self.header_values.check("header-values", headers, true)?;
        if !self.header_offsets.is_empty() {
            if self.header_offsets.len() != n + 1 {
                return Err(format!(
                    "`header-offsets` has {} entries, expected {}",
                    self.header_offsets.len(),
                    n + 1
                ));
            }
            if self.header_offsets[0] != 0
                || self.header_offsets.windows(2).any(|w| w[0] > w[1])
                || *self.header_offsets.last().unwrap() as usize != headers
            {
                return Err(format!(
                    "`header-offsets` must rise from 0 to the {headers} header entries"
                ));
            }
        } else if headers > 0 {
            return Err(format!("{headers} header entries but no `header-offsets`"));
        }
        Ok(())
    }
}

/// First bytes of [`Records::to_bytes`], with the format's version.
const STORED_MAGIC: &[u8; 4] = b"SLR1";

impl Records {
    /// The records as bytes, for storing them (window contents, the
    /// write-ahead log): every column with its length, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, data: &[u8]) {
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        fn words(out: &mut Vec<u8>, data: &[u32]) {
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            for w in data {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(self.byte_size() + 80);
        out.extend_from_slice(STORED_MAGIC);
        out.extend_from_slice(&(self.timestamps.len() as u64).to_le_bytes());
        for t in &self.timestamps {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for column in [
            &self.values,
            &self.keys,
            &self.header_names,
            &self.header_values,
        ] {
            bytes(&mut out, &column.data);
            words(&mut out, &column.offsets);
        }
        bytes(&mut out, &self.keys_absent);
        words(&mut out, &self.header_offsets);
        out
    }

    /// Records stored by [`Records::to_bytes`]; `None` when the bytes are
    /// not such records (damaged or from another format version).
    pub fn from_bytes(mut data: &[u8]) -> Option<Records> {
        fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if data.len() < n {
                return None;
            }
            let (head, rest) = data.split_at(n);
            *data = rest;
            Some(head)
        }
        fn len(data: &mut &[u8], unit: usize) -> Option<usize> {
            let n = u64::from_le_bytes(take(data, 8)?.try_into().ok()?) as usize;
            // Never trust a length the data cannot hold.
            (n.checked_mul(unit)? <= data.len()).then_some(n)
        }
        fn bytes(data: &mut &[u8]) -> Option<Vec<u8>> {
            let n = len(data, 1)?;
            Some(take(data, n)?.to_vec())
        }
        fn words(data: &mut &[u8]) -> Option<Vec<u32>> {
            let n = len(data, 4)?;
            let raw = take(data, n * 4)?;
            Some(
                raw.chunks_exact(4)
                    .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                    .collect(),
            )
        }
        fn column(data: &mut &[u8]) -> Option<Column> {
            Some(Column {
                data: bytes(data)?,
                offsets: words(data)?,
            })
        }
        if take(&mut data, 4)? != STORED_MAGIC {
            return None;
        }
        let n = len(&mut data, 8)?;
        let timestamps = take(&mut data, n * 8)?
            .chunks_exact(8)
            .map(|t| u64::from_le_bytes(t.try_into().unwrap()))
            .collect();
        let values = column(&mut data)?;
        let keys = column(&mut data)?;
        let header_names = column(&mut data)?;
        let header_values = column(&mut data)?;
        let records = Records {
            timestamps,
            values,
            keys,
            keys_absent: bytes(&mut data)?,
            header_offsets: words(&mut data)?,
            header_names,
            header_values,
        };
        (data.is_empty() && records.check().is_ok()).then_some(records)
    }
}

fn set_bit(bitmap: &mut Vec<u8>, i: usize) {
    if bitmap.len() <= i / 8 {
        bitmap.resize(i / 8 + 1, 0);
    }
    bitmap[i / 8] |= 1 << (i % 8);
}

fn clear_bit(bitmap: &mut [u8], i: usize) {
    if let Some(byte) = bitmap.get_mut(i / 8) {
        *byte &= !(1 << (i % 8));
    }
}

#[cfg(test)]
mod tests;
