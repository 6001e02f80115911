//! Any columns, as a plugin could return them across the Wasm boundary:
//! `check` refuses them with a message, or they are safe to read and
//! survive storage unchanged.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sluice::batch::{Column, Records};

fn column(u: &mut Unstructured<'_>) -> Result<Column> {
    Ok(Column {
        data: u.arbitrary()?,
        offsets: u.arbitrary()?,
    })
}

fn records(u: &mut Unstructured<'_>) -> Result<Records> {
    Ok(Records {
        timestamps: u.arbitrary()?,
        values: column(u)?,
        keys: column(u)?,
        keys_absent: u.arbitrary()?,
        header_offsets: u.arbitrary()?,
        header_names: column(u)?,
        header_values: column(u)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(records) = records(&mut Unstructured::new(data)) else {
        return;
    };
    match records.check() {
        Err(message) => assert!(!message.is_empty()),
        Ok(()) => {
            let mut total = 0usize;
            for record in records.iter() {
                total += record.value().len() + record.key().map_or(0, <[u8]>::len);
                total += record.timestamp() as usize % 2;
                for (name, value) in record.headers() {
                    total += name.len() + value.len();
                }
            }
            std::hint::black_box(total);
            assert_eq!(Records::from_bytes(&records.to_bytes()).as_ref(), Some(&records));
        }
    }
});
