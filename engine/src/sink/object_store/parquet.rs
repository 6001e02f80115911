//! One batch as a Parquet file (the format lakehouse readers want): one
//! row group with the columns `key` (optional string), `value` (string) and
//! `timestamp` (milliseconds, UTC), Snappy-compressed. Written with the
//! `parquet` crate's column writers, without Arrow (which would add a dozen
//! crates to the build for no gain here). Keys and values that are not
//! UTF-8 are written with U+FFFD in place of the bad bytes, as the `text`
//! format does; headers are left out.

use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::batch::Records;

/// The schema every file has.
const SCHEMA: &str = "
message record {
  OPTIONAL BYTE_ARRAY key (STRING);
  REQUIRED BYTE_ARRAY value (STRING);
  REQUIRED INT64 timestamp (TIMESTAMP(MILLIS,true));
}";

/// `records` as a complete Parquet file.
pub fn encode(records: &Records) -> Result<Vec<u8>, String> {
    let error = |e: parquet::errors::ParquetError| format!("cannot encode Parquet: {e}");
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(error)?);
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let text =
        |bytes: &[u8]| ByteArray::from(String::from_utf8_lossy(bytes).into_owned().into_bytes());
    let mut keys = Vec::new();
    let mut key_levels = Vec::with_capacity(records.len());
    let mut values = Vec::with_capacity(records.len());
    let mut times = Vec::with_capacity(records.len());
    for record in records.iter() {
        match record.key() {
            Some(key) => {
                keys.push(text(key));
                key_levels.push(1);
            }
            None => key_levels.push(0),
        }
        values.push(text(record.value()));
        times.push(record.timestamp().min(i64::MAX as u64) as i64);
    }
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, properties).map_err(error)?;
    let mut group = writer.next_row_group().map_err(error)?;
    let mut column = 0;
    while let Some(mut col) = group.next_column().map_err(error)? {
        match column {
            0 => col
                .typed::<ByteArrayType>()
                .write_batch(&keys, Some(&key_levels), None)
                .map(drop),
            1 => col
                .typed::<ByteArrayType>()
                .write_batch(&values, None, None)
                .map(drop),
            _ => col
                .typed::<Int64Type>()
                .write_batch(&times, None, None)
                .map(drop),
        }
        .map_err(error)?;
        col.close().map_err(error)?;
        column += 1;
    }
    group.close().map_err(error)?;
    writer.close().map_err(error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    use super::*;

    #[test]
    fn a_batch_reads_back_row_by_row() {
        let mut r = Records::default();
        r.push(Some(b"river"), b"3", 1_700_000_000_000, &[]);
        r.push(None, b"no key \xff", 7, &[]);
        let bytes = encode(&r).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<Vec<(String, Field)>> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().into_columns())
            .collect();
        assert_eq!(rows[0][0], ("key".into(), Field::Str("river".into())));
        assert_eq!(rows[0][1], ("value".into(), Field::Str("3".into())));
        assert_eq!(
            rows[0][2],
            (
                "timestamp".into(),
                Field::TimestampMillis(1_700_000_000_000)
            )
        );
        assert_eq!(rows[1][0], ("key".into(), Field::Null));
        assert_eq!(
            rows[1][1],
            ("value".into(), Field::Str("no key \u{fffd}".into()))
        );
    }
}
