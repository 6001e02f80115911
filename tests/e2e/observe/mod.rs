//! Observability end to end: `/metrics` counts exactly what a pipeline did
//! and passes `promtool check metrics`; JSON logs; the dashboard in a real
//! headless Chromium (driven through chromedriver's WebDriver API) shows
//! the running pipeline, its four rows and a batch table that agrees with
//! `/metrics`, and updates as batches come; under `sluice serve` a tenant's
//! token sees only that tenant's pipelines and series.
//!
//! `promtool` (Debian package `prometheus`) and `chromium` with
//! `chromedriver` (`chromium`, `chromium-driver`) must be installed:
//! `tests/run.sh` installs them; a test that needs a missing one fails and
//! says so.

mod browser;
mod dashboard;
pub mod http;
mod metrics;
mod prometheus;
mod serve;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a `/metrics` page (comments skipped; label values
/// unescaped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "a label value is quoted in {text:?}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The one sample named `name` whose labels include `labels`; panics if
/// there is none or more than one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

/// `promtool check metrics` on `text`; fails the test with its complaints.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` package (tests/run.sh does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed:\n{}{}\n--- the page ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `sluice` process whose standard error is collected as it comes.
pub struct Process {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `cmd`, collecting its standard error.
    pub fn start(mut cmd: Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting sluice");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `marker` and returns it.
    pub fn wait_line(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(marker)) {
                return line.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice exited ({status}) before logging {marker:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status within `limit`.
    pub fn stop(mut self, limit: Duration) -> std::process::ExitStatus {
        terminate(&self.child);
        wait_deadline(&mut self.child, limit)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sluice run FILE --metrics 127.0.0.1:0` with its address and token.
pub struct Run {
    pub process: Process,
    /// `host:port` of `/metrics` and the dashboard.
    pub address: String,
    /// The run's token (the dashboard's data needs it).
    pub token: String,
}

impl Run {
    /// Starts the pipeline `file` in `s` with metrics on a free port and
    /// no control endpoint (token files under the scratch folder).
    pub fn start(s: &Scratch, file: &str, extra: &[&str]) -> Run {
        let mut args = vec!["run", file, "--metrics", "127.0.0.1:0", "--control", "off"];
        args.extend_from_slice(extra);
        let mut cmd = s.sluice(&args);
        cmd.env("SLUICE_RUNTIME_DIR", s.path("runtime"));
        let mut process = Process::start(cmd);
        let line = process.wait_line("/metrics, dashboard on", Duration::from_secs(60));
        let address = line
            .split("metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("the log names the address")
            .to_string();
        let token_file = line
            .split("token in ")
            .nth(1)
            .map(|rest| rest.trim_end_matches(')'))
            .expect("the log names the token file");
        let token = std::fs::read_to_string(token_file)
            .unwrap_or_else(|e| panic!("reading {token_file}: {e}"))
            .trim()
            .to_string();
        Run {
            process,
            address,
            token,
        }
    }

    /// `/metrics`, parsed, with the page.
    pub fn metrics(&self) -> (String, Vec<Sample>) {
        let r = http::get(&self.address, "/metrics", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let samples = parse_metrics(&text);
        (text, samples)
    }
}

/// Writes `text` into `dir` as `name`, through a hidden file and a rename
/// (a directory source reads it whole at the rename).
pub fn drop_file(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// `n` JSON lines for the json-filter stage: every third kept (`"keep":
/// "yes"`), every fifth not JSON (dead-lettered), the rest dropped.
/// Returns the text and (kept, dead-lettered).
pub fn filter_input(n: usize, tag: &str) -> (String, usize, usize) {
    let (mut text, mut kept, mut dead) = (String::new(), 0, 0);
    for i in 0..n {
        if i % 5 == 4 {
            text.push_str(&format!("not json {tag} {i}\n"));
            dead += 1;
        } else if i % 3 == 0 {
            text.push_str(&format!(
                "{{\"keep\":\"yes\",\"tag\":\"{tag}\",\"i\":{i}}}\n"
            ));
            kept += 1;
        } else {
            text.push_str(&format!("{{\"keep\":\"no\",\"i\":{i}}}\n"));
        }
    }
    (text, kept, dead)
}

/// A pipeline `name`: a directory source `input`, json-filter keeping
/// `"keep": "yes"` and dead-lettering what is not JSON, a directory sink
/// `output`; `plugin` names the json-filter plugin as the file should.
pub fn filter_pipeline(name: &str, plugin: &str, interval: &str) -> String {
    format!(
        r#"
name = "{name}"
batch_interval = "{interval}"

[[sources]]
type = "directory"
path = "input"

[[stages]]
name = "filter"
plugin = '{plugin}'
config = {{ field = "keep", equals = "yes" }}
on_error = "dead-letter"

[[sinks]]
type = "directory"
path = "output"
format = "jsonl"
"#
    )
}
