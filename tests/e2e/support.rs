//! Helpers shared by the end-to-end tests: where the binary and plugins
//! are, scratch folders with pipeline files, running `sluice` with a
//! deadline, reading sink output, and counting words independently.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `sluice` binary under test. Refuses a binary older than the engine's
/// sources, so the tests never pass against stale code.
pub fn sluice_bin() -> PathBuf {
    let bin = PathBuf::from(env!("SLUICE_BIN"));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build it first with `cargo build --release --bin sluice`",
                bin.display()
            )
        });
    let newest = newest_change(&root().join("engine/src"));
    assert!(
        newest <= built,
        "{} is older than engine/src: rebuild it with `cargo build --release --bin sluice` \
         (tests/run.sh does)",
        bin.display()
    );
    bin
}

fn newest_change(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let changed = if path.is_dir() {
            newest_change(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(newest)
        };
        newest = newest.max(changed);
    }
    newest
}

/// A guest plugin built by the build step, by crate name (`word_split`).
pub fn plugin(name: &str) -> PathBuf {
    let path = Path::new(env!("SLUICE_PLUGINS")).join(format!("{name}.wasm"));
    assert!(path.exists(), "plugin {} was not built", path.display());
    path
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("SLUICE_ROOT"))
}

/// A scratch folder holding a pipeline file and its inputs and outputs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("sluice-e2e-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `text` to `rel`, creating folders; returns the path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// A `sluice` command run in this folder, logging at `info` (or as
    /// `E2E_LOG` says, e.g. `E2E_LOG=debug` when chasing a failure).
    pub fn sluice(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(args).current_dir(self.dir.path()).env(
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or("info".into()),
        );
        cmd
    }
}

/// Output of a finished command.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion with `stdin` as input (text, or any bytes),
/// failing the test if it takes longer than `limit`.
pub fn run_with_input(mut cmd: Command, stdin: impl AsRef<[u8]>, limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sluice");
    let input = stdin.as_ref().to_vec();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(&input);
    });
    let finished = wait_output(child, limit);
    writer.join().unwrap();
    finished
}

/// Runs a command, writing `chunks` to its stdin one at a time with `pause`
/// after each (so they land in separate batches), then closing stdin; fails
/// the test past `limit`. Write errors are ignored: a pipeline that failed
/// stops reading.
pub fn run_paced(mut cmd: Command, chunks: &[&str], pause: Duration, limit: Duration) -> Finished {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sluice");
    let mut stdin = child.stdin.take().unwrap();
    let chunks: Vec<String> = chunks.iter().map(|c| c.to_string()).collect();
    let feeder = std::thread::spawn(move || {
        for chunk in chunks {
            let _ = stdin.write_all(chunk.as_bytes());
            let _ = stdin.flush();
            std::thread::sleep(pause);
        }
    });
    let finished = wait_output(child, limit);
    feeder.join().unwrap();
    finished
}

/// Waits for a child whose stdout and stderr are piped, with a deadline.
pub fn wait_output(mut child: Child, limit: Duration) -> Finished {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let status = wait_deadline(&mut child, limit);
    Finished {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Waits for a child, killing it and failing the test past `limit`.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls `cond` every 50 ms until it holds, failing the test past `limit`.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each line of `text` (a sink's or client's JSONL output) as JSON.
pub fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Every JSON-lines record in the complete (not dot-prefixed) files of a
/// folder, files in name order.
pub fn read_jsonl_dir(dir: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    let mut records = Vec::new();
    for name in names {
        let text = std::fs::read_to_string(&name).unwrap();
        for line in text.lines() {
            records.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: bad JSON line {line:?}: {e}", name.display())),
            );
        }
    }
    records
}

/// Sums per-batch word counts (`key` = word, `value` = count) into totals.
pub fn totals(records: &[serde_json::Value]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for r in records {
        let word = r["key"]
            .as_str()
            .expect("word-count output has a key")
            .to_string();
        let n: u64 = r["value"].as_str().unwrap().parse().unwrap();
        *totals.entry(word).or_insert(0) += n;
    }
    totals
}

/// Word counts computed here, independently of any plugin.
pub fn count_words(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Some text with repeated words of varied frequency.
pub fn sample_text(lines: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "alpha", "beta", "gamma", "delta", "river", "stream", "sluice", "gate", "water", "flow",
        "Spark", "wasm", "über", "naïve", "日本", "x",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut text = String::new();
    for _ in 0..lines {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (state >> 60) as usize + 1;
        for i in 0..n {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i > 0 {
                text.push_str(if state & 1 == 0 { " " } else { "  \t" });
            }
            text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
        }
        text.push('\n');
    }
    text
}

/// Peak resident memory of a running process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Text files landing in a folder, each moved in by rename, one every
/// 80 ms: at least a given number, and on until [`Trickle::finish`], so a
/// run started meanwhile, however late, always has input arriving (a run
/// waiting for its second batch to crash at would otherwise wait forever).
pub struct Trickle {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<String>,
}

impl Trickle {
    /// Starts writing into `dir`: file `i` holds `text(i)`.
    pub fn start(
        dir: PathBuf,
        at_least: u64,
        text: impl Fn(u64) -> String + Send + 'static,
    ) -> Trickle {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writing = done.clone();
        let thread = std::thread::spawn(move || {
            let mut all = String::new();
            let mut i = 0u64;
            while i < at_least || !writing.load(std::sync::atomic::Ordering::Relaxed) {
                let text = text(i);
                let tmp = dir.join(format!(".f{i:04}.tmp"));
                std::fs::write(&tmp, &text).unwrap();
                std::fs::rename(&tmp, dir.join(format!("f{i:04}.txt"))).unwrap();
                all.push_str(&text);
                i += 1;
                std::thread::sleep(Duration::from_millis(80));
            }
            all
        });
        Trickle { done, thread }
    }

    /// Stops once at least the promised files are written; returns all the
    /// text written.
    pub fn finish(self) -> String {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Waits until `log` (a run's log file) says the run resumed from its
/// checkpoint: by then its signal handlers are installed, so a `SIGTERM`
/// stops it cleanly instead of killing it mid-start.
pub fn wait_until_resumed(log: &Path) {
    eventually(Duration::from_secs(60), "the run to resume", || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("resuming from the checkpoint")
    });
}
