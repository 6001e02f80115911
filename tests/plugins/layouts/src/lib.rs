//! `layouts`: a benchmark guest. It exports the same word split three
//! times: behind a row layout (`list<row>`), a columnar one (`columns`), and
//! columns in with spans into the input out (`spans`), so that the host's
//! benchmark can measure what the batch layout at the boundary costs (see
//! `wit/layouts.wit`). All split each value on whitespace
//! (Unicode whitespace for UTF-8 text, ASCII whitespace otherwise) and give
//! each word its input's timestamp.

wit_bindgen::generate!({
    path: "wit",
    world: "layouts",
});

use exports::bench::layouts::split::{Columns, Guest, Row, Spans};

struct Layouts;

impl Guest for Layouts {
    fn split_rows(input: Vec<Row>) -> Vec<Row> {
        let mut out = Vec::with_capacity(input.len() * 8);
        for row in &input {
            for_each_word(&row.value, |word| {
                out.push(Row {
                    key: None,
                    value: word.to_vec(),
                    timestamp: row.timestamp,
                });
            });
        }
        out
    }

    fn split_columns(input: Columns) -> Columns {
        let entries = input.timestamps.len();
        let mut out = Columns {
            data: Vec::with_capacity(input.data.len()),
            offsets: Vec::with_capacity(entries * 8 + 1),
            timestamps: Vec::with_capacity(entries * 8),
        };
        out.offsets.push(0);
        for (i, &timestamp) in input.timestamps.iter().enumerate() {
            let start = input.offsets[i] as usize;
            let end = input.offsets[i + 1] as usize;
            for_each_word(&input.data[start..end], |word| {
                out.data.extend_from_slice(word);
                out.offsets.push(out.data.len() as u32);
                out.timestamps.push(timestamp);
            });
        }
        out
    }

    fn split_spans(input: Columns) -> Spans {
        let entries = input.timestamps.len();
        let mut out = Spans {
            bounds: Vec::with_capacity(entries * 16),
            sources: Vec::with_capacity(entries * 8),
        };
        for i in 0..entries {
            let start = input.offsets[i] as usize;
            let end = input.offsets[i + 1] as usize;
            let line = &input.data[start..end];
            for_each_word(line, |word| {
                // `word` is a slice of `line`: its place in `data` is its
                // distance from the start of `data`.
                let at = word.as_ptr() as usize - input.data.as_ptr() as usize;
                out.bounds.push(at as u32);
                out.bounds.push((at + word.len()) as u32);
                out.sources.push(i as u32);
            });
        }
        out
    }
}

export!(Layouts);

/// Calls `f` with each whitespace-separated word of `line`.
#[inline]
fn for_each_word(line: &[u8], mut f: impl FnMut(&[u8])) {
    match std::str::from_utf8(line) {
        Ok(text) => text.split_whitespace().for_each(|word| f(word.as_bytes())),
        Err(_) => line
            .split(u8::is_ascii_whitespace)
            .filter(|word| !word.is_empty())
            .for_each(f),
    }
}
