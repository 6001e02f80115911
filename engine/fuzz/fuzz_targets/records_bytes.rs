//! Any bytes as a stored batch (`SLR1` format, as checkpoints and the
//! exactly-once sinks keep it): decoded and safe to read, or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::batch::Records;

fuzz_target!(|bytes: &[u8]| {
    let mut data = b"SLR1".to_vec();
    data.extend_from_slice(bytes);
    for input in [bytes, data.as_slice()] {
        if let Some(records) = Records::from_bytes(input) {
            let mut total = 0usize;
            for record in records.iter() {
                total += record.value().len() + record.key().map_or(0, <[u8]>::len);
                for (name, value) in record.headers() {
                    total += name.len() + value.len();
                }
            }
            std::hint::black_box(total);
            assert_eq!(Records::from_bytes(&records.to_bytes()).as_ref(), Some(&records));
        }
    }
});
