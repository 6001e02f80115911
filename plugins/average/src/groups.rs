//! Grouping a batch's numbers by key: the shared first step of `average`,
//! `moving-average` and `cumulative-sum` (which include this file by path).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use sluice_sdk::{Batch, Output};

use crate::number;

/// One key's numbers in a batch.
pub struct Group<'a> {
    /// The key (empty for records without one), borrowed from the batch.
    pub key: &'a [u8],
    /// Sum of the numbers.
    pub sum: f64,
    /// How many numbers.
    pub count: u64,
    /// Latest timestamp among them.
    pub latest: u64,
    /// Indexes of the records they came from.
    pub records: Vec<u32>,
}

/// The batch's numbers grouped by key, in order of first appearance. Each
/// record's value is a number (or, with `field`, a JSON object holding one
/// in that field); a record that is not fails on its own in `out`.
pub fn by_key<'a>(batch: &'a Batch, field: Option<&str>, out: &mut Output) -> Vec<Group<'a>> {
    // `DefaultHasher::new()` has fixed keys: deterministic, no randomness
    // needed. Keys borrow from the input batch.
    let mut index: HashMap<&[u8], usize, BuildHasherDefault<DefaultHasher>> = HashMap::default();
    let mut groups: Vec<Group<'a>> = Vec::new();
    for rec in batch.records() {
        let value = match number::read(rec.value(), field) {
            Ok(value) => value,
            Err(message) => {
                out.fail(rec.index(), message);
                continue;
            }
        };
        let key = rec.key().unwrap_or_default();
        let next = groups.len();
        let slot = *index.entry(key).or_insert(next);
        if slot == next {
            groups.push(Group {
                key,
                sum: 0.0,
                count: 0,
                latest: rec.timestamp(),
                records: Vec::new(),
            });
        }
        let group = &mut groups[slot];
        group.sum += value;
        group.count += 1;
        group.latest = group.latest.max(rec.timestamp());
        group.records.push(rec.index());
    }
    groups
}
