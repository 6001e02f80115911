//! Shared by the benchmarks: building the guest plugins once per run.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

#[cfg(feature = "kafka")]
#[allow(dead_code)] // only the Kafka benchmarks use it
pub mod kafka;

/// A store's data for benchmarks that call a component directly: WASI with
/// nothing granted.
#[allow(dead_code)] // not every benchmark calls components itself
pub struct WasiHost {
    wasi: WasiCtx,
    table: ResourceTable,
}

#[allow(dead_code)]
impl WasiHost {
    pub fn new() -> Self {
        WasiHost {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for WasiHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Builds the guest workspace (`plugins/Cargo.toml`, wasm32-wasip2) and
/// returns the folder of `.wasm` files.
#[allow(dead_code)] // not every benchmark loads the guests
pub fn guests() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--manifest-path",
        ])
        .arg(root.join("plugins/Cargo.toml"))
        .status()
        .expect("running cargo for the guests");
    assert!(status.success(), "building the guest plugins failed");
    root.join("plugins/target/wasm32-wasip2/release")
}

/// `sluice run PIPELINE` as the benchmarks run it: no control endpoint, no
/// plugin-file watching, output discarded.
#[allow(dead_code)] // not every benchmark runs the binary
pub fn sluice_run(pipeline: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args([
        "run",
        pipeline.to_str().unwrap(),
        "--control",
        "off",
        "--no-watch",
    ])
    .stdout(std::process::Stdio::null());
    cmd
}

/// Writes a word-count pipeline to `path`: `generator` (`lines` lines of
/// `words` words, as fast as taken) → `word-split` → `count_plugin` (a file
/// in `guests`) → `null`.
#[allow(dead_code)] // not every benchmark writes one
pub fn wordcount_pipeline(
    path: &Path,
    name: &str,
    interval: &str,
    lines: u64,
    words: u32,
    guests: &Path,
    count_plugin: &str,
) {
    std::fs::write(
        path,
        format!(
            r#"
name = "{name}"
batch_interval = "{interval}"

[[sources]]
type = "generator"
rate = 0
count = {lines}
words_per_line = {words}

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

[[sinks]]
type = "null"
"#,
            guests.join("word_split.wasm").display(),
            guests.join(count_plugin).display()
        ),
    )
    .unwrap();
}

/// CPU seconds (user + system) from `/proc/PID/stat` (`self` for this
/// process): the process's own, or with `children` those of its children
/// that have been waited for. Linux counts them in ticks of 1/100 s.
#[allow(dead_code)] // not every benchmark measures CPU
pub fn cpu_seconds(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses): utime, stime, cutime
    // and cstime are the 12th to 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let first = if children { 13 } else { 11 };
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(first) + ticks(first + 1)) / 100.0
}

/// Word count in plain Rust, the baseline beside the engine: `lines`
/// generated lines (seed `seed`, `words` words each) cut into batches of
/// `batch` lines, each split on whitespace, counted in a `HashMap` and
/// emitted as the plugin does (key = word, value = count as text). Returns
/// the distinct words emitted over all batches.
#[allow(dead_code)] // not every benchmark has this baseline
pub fn native_wordcount(seed: u64, words: u32, lines: u64, batch: u64) -> usize {
    use std::collections::HashMap;
    use std::hint::black_box;
    let mut maker = sluice::source::LineMaker::new(seed, words);
    let mut done = 0;
    let mut distinct = 0;
    while done < lines {
        let n = batch.min(lines - done);
        let mut counts: HashMap<String, u64> = HashMap::new();
        for _ in 0..n {
            for word in maker.next_line().split_whitespace() {
                match counts.get_mut(word) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(word.to_string(), 1);
                    }
                }
            }
        }
        let out: Vec<(String, String)> = counts
            .into_iter()
            .map(|(w, c)| (w, c.to_string()))
            .collect();
        distinct += black_box(out).len();
        done += n;
    }
    distinct
}

/// The words a word-count pipeline's directory sink (JSON lines,
/// `value` = a count) has counted so far, over its complete files.
#[allow(dead_code)] // the connector benchmarks use it
pub fn counted_words(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut words = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            words += record["value"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    words
}
