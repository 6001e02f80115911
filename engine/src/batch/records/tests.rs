//! Tests of the columnar records: building, reading back, storing, checking.

use super::*;

#[test]
fn stored_records_read_back_the_same_and_damage_is_refused() {
    let mut r = Records::default();
    r.push_value(b"plain", 7);
    r.push(Some(b"k"), b"with key", 8, &[(b"h", b"1")]);
    r.push(None, b"", u64::MAX, &[]);
    let stored = r.to_bytes();
    assert_eq!(Records::from_bytes(&stored), Some(r));
    assert_eq!(
        Records::from_bytes(&Records::default().to_bytes()),
        Some(Records::default())
    );
    for cut in 0..stored.len() {
        assert_eq!(Records::from_bytes(&stored[..cut]), None, "cut at {cut}");
    }
    let mut wrong = stored.clone();
    wrong[4] = 9; // three records claimed as nine
    assert_eq!(Records::from_bytes(&wrong), None);
}

#[test]
fn values_only() {
    let mut r = Records::default();
    r.push_value(b"a b", 1);
    r.push_value(b"", 2);
    assert_eq!(r.len(), 2);
    assert_eq!(r.get(0).value(), b"a b");
    assert_eq!(r.get(1).value(), b"");
    assert_eq!(r.get(1).key(), None);
    assert!(r.keys.is_empty());
    r.check().unwrap();
}

#[test]
fn room_made_ahead_holds_the_same_records_without_growing() {
    let mut plain = Records::default();
    let mut sized = Records::with_capacity(3, 8);
    assert_eq!(sized, Records::default(), "room is not content");
    let (data, offsets) = (sized.values.data.as_ptr(), sized.values.offsets.as_ptr());
    for (v, ts) in [(&b"ab"[..], 1), (b"", 2), (b"cdefgh", 3)] {
        plain.push_value(v, ts);
        sized.push_value(v, ts);
    }
    assert_eq!(sized, plain);
    sized.check().unwrap();
    // Three values of eight bytes in all fit where they were made.
    assert_eq!(sized.values.data.as_ptr(), data);
    assert_eq!(sized.values.offsets.as_ptr(), offsets);
    // A key afterwards still works: keys grow as before.
    sized.push(Some(b"k"), b"v", 4, &[]);
    sized.check().unwrap();
    assert_eq!(sized.get(3).key(), Some(&b"k"[..]));
    assert_eq!(sized.get(0).key(), None);

    // Room in total, not in addition.
    let mut r = Records::default();
    r.push_value(b"abcd", 0);
    r.reserve_values(10, 100);
    assert!(r.timestamps.capacity() >= 10 && r.values.data.capacity() >= 100);
    assert_eq!(r.len(), 1);
    assert_eq!(r.get(0).value(), b"abcd");

    // A one-record batch made as a full chunk gives the room back...
    let mut small = Records::with_capacity(1024, 64 << 10);
    small.push_value(b"one line", 5);
    small.trim();
    assert!(small.values.data.capacity() < 1024);
    assert_eq!(small.get(0).value(), b"one line");
    // ...a nearly full one keeps it.
    let mut full = Records::with_capacity(1024, 64 << 10);
    for _ in 0..1000 {
        full.push_value(&[b'x'; 60], 5);
    }
    let room = full.values.data.capacity();
    full.trim();
    assert_eq!(full.values.data.capacity(), room);
}

#[test]
fn keys_and_headers_mixed() {
    let mut r = Records::default();
    r.push_value(b"v0", 0);
    r.push(Some(b"k1"), b"v1", 1, &[(b"h", b"x")]);
    r.push(None, b"v2", 2, &[]);
    r.push(Some(b""), b"v3", 3, &[(b"a", b"1"), (b"b", b"2")]);
    r.push_value(b"v4", 4);
    r.check().unwrap();
    let keys: Vec<_> = r.iter().map(|x| x.key()).collect();
    assert_eq!(
        keys,
        vec![None, Some(&b"k1"[..]), None, Some(&b""[..]), None]
    );
    let headers: Vec<usize> = r.iter().map(|x| x.headers().count()).collect();
    assert_eq!(headers, vec![0, 1, 0, 2, 0]);
    assert_eq!(r.get(3).headers().nth(1), Some((&b"b"[..], &b"2"[..])));
}

#[test]
fn append_keeps_every_record_in_order() {
    let mut a = Records::default();
    a.push_value(b"1", 1);
    let mut b = Records::default();
    b.push_value(b"2", 2);
    b.push(Some(b"k"), b"3", 3, &[]);
    a.append(b.clone());
    a.append(b);
    a.check().unwrap();
    let values: Vec<_> = a.iter().map(|r| r.value().to_vec()).collect();
    assert_eq!(
        values,
        vec![
            b"1".to_vec(),
            b"2".to_vec(),
            b"3".to_vec(),
            b"2".to_vec(),
            b"3".to_vec()
        ]
    );
    assert_eq!(a.get(2).key(), Some(&b"k"[..]));
    assert_eq!(a.get(3).key(), None);
}

#[test]
fn an_empty_keys_column_may_have_the_single_offset_zero() {
    let mut r = Records::default();
    r.push_value(b"a", 1);
    r.push_value(b"b", 2);
    r.keys.offsets = vec![0];
    r.header_names.offsets = vec![0];
    r.header_values.offsets = vec![0];
    r.check().unwrap();
    assert_eq!(r.get(1).key(), None);
    r.keys.offsets = vec![3];
    assert!(r.check().is_err());
}

#[test]
fn check_rejects_bad_offsets() {
    let mut r = Records::default();
    r.push_value(b"abc", 1);
    r.values.offsets[1] = 10;
    assert!(r.check().unwrap_err().contains("values"));
    let r = Records {
        timestamps: vec![1, 2],
        values: Column {
            data: b"ab".to_vec(),
            offsets: vec![0, 2, 1],
        },
        ..Records::default()
    };
    assert!(r.check().unwrap_err().contains("decrease"));
}

/// Property tests: any batch built through the API survives storing and
/// reading back; any columns at all (what a plugin could return) are
/// either refused by `check` with a message or safe to read in full.
mod properties {
    use proptest::prelude::*;

    use super::super::*;

    type Header = (Vec<u8>, Vec<u8>);
    type Row = (Option<Vec<u8>>, Vec<u8>, u64, Vec<Header>);

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..12);
        proptest::collection::vec(
            (
                proptest::option::of(bytes()),
                bytes(),
                any::<u64>(),
                proptest::collection::vec((bytes(), bytes()), 0..3),
            ),
            0..40,
        )
    }

    fn build(rows: &[Row]) -> Records {
        let mut records = Records::default();
        for (key, value, ts, headers) in rows {
            let headers: Vec<(&[u8], &[u8])> = headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect();
            records.push(key.as_deref(), value, *ts, &headers);
        }
        records
    }

    /// Reads every field of every record, as a sink or the next stage does.
    fn read_all(records: &Records) -> usize {
        let mut bytes = 0;
        for record in records.iter() {
            bytes += record.value().len() + record.key().map_or(0, <[u8]>::len);
            bytes += record.timestamp() as usize % 2;
            for (name, value) in record.headers() {
                bytes += name.len() + value.len();
            }
        }
        bytes
    }

    proptest! {
        #[test]
        fn built_batches_round_trip_through_storage(rows in rows()) {
            let records = build(&rows);
            prop_assert!(records.check().is_ok());
            let back = Records::from_bytes(&records.to_bytes());
            prop_assert_eq!(back.as_ref(), Some(&records));
            let back = back.unwrap();
            prop_assert_eq!(back.len(), rows.len());
            for (i, (key, value, ts, headers)) in rows.iter().enumerate() {
                let record = back.get(i);
                prop_assert_eq!(record.key(), key.as_deref());
                prop_assert_eq!(record.value(), value.as_slice());
                prop_assert_eq!(record.timestamp(), *ts);
                let got: Vec<(Vec<u8>, Vec<u8>)> =
                    record.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                prop_assert_eq!(&got, headers);
            }
        }

        #[test]
        fn arbitrary_columns_are_refused_or_safe_to_read(
            timestamps in proptest::collection::vec(any::<u64>(), 0..6),
            values in (proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(0u32..20, 0..8)),
            keys in (proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(0u32..20, 0..8)),
            keys_absent in proptest::collection::vec(any::<u8>(), 0..3),
            header_offsets in proptest::collection::vec(0u32..6, 0..8),
            names in (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(0u32..10, 0..6)),
            header_values in (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(0u32..10, 0..6)),
        ) {
            let column = |(data, offsets): (Vec<u8>, Vec<u32>)| Column { data, offsets };
            let records = Records {
                timestamps,
                values: column(values),
                keys: column(keys),
                keys_absent,
                header_offsets,
                header_names: column(names),
                header_values: column(header_values),
            };
            if records.check().is_ok() {
                read_all(&records);
                let back = Records::from_bytes(&records.to_bytes());
                prop_assert_eq!(back.as_ref(), Some(&records));
            }
        }

        #[test]
        fn arbitrary_stored_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = b"SLR1".to_vec();
            data.extend_from_slice(&bytes);
            if let Some(records) = Records::from_bytes(&data) {
                read_all(&records);
            }
        }
    }
}
