//! `type = "generator"`: synthetic text lines at a set rate, for demos and
//! benchmarks. Deterministic for a given seed.

use std::time::Duration;

use serde::Deserialize;

use super::{CHUNK_BYTES, CHUNK_RECORDS, Emitter, Source, SourceTask};
use crate::batch::{Records, now_ms};

/// Produces lines of words drawn from a fixed vocabulary.
///
/// ```toml
/// [[sources]]
/// type = "generator"
/// rate = 10000        # lines per second; 0 = as fast as the pipeline takes them
/// count = 1000000     # stop after this many lines (default: never)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Lines per second; 0 means as fast as the pipeline accepts them.
    /// Default 1000.
    #[serde(default = "default_rate")]
    pub rate: u64,
    /// Total lines before the source ends. Default: unlimited.
    pub count: Option<u64>,
    /// Words per line. Default 10 (lines of about 60 bytes).
    #[serde(default = "default_words")]
    pub words_per_line: u32,
    /// Seed of the word sequence. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_rate() -> u64 {
    1000
}

fn default_words() -> u32 {
    10
}

fn default_seed() -> u64 {
    1
}

impl GeneratorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.words_per_line == 0 || self.words_per_line > 10_000 {
            return Err(format!(
                "invalid generator `words_per_line` `{}`: between 1 and 10000",
                self.words_per_line
            ));
        }
        Ok(())
    }

    /// The running source.
    pub fn build(&self) -> GeneratorSource {
        GeneratorSource {
            lines: LineMaker::new(self.seed, self.words_per_line),
            rate: self.rate,
            count: self.count,
        }
    }
}

/// Makes deterministic lines of words.
pub struct LineMaker {
    state: u64,
    words: u32,
    line: String,
}

/// The generator's vocabulary.
const WORDS: &[&str] = &[
    "the",
    "stream",
    "flows",
    "through",
    "a",
    "sluice",
    "gate",
    "and",
    "every",
    "batch",
    "carries",
    "records",
    "from",
    "kafka",
    "files",
    "sockets",
    "into",
    "wasm",
    "stages",
    "that",
    "split",
    "count",
    "filter",
    "join",
    "window",
    "state",
    "checkpoint",
    "sink",
    "latency",
    "throughput",
    "river",
    "water",
    "lock",
    "canal",
    "boat",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "spark",
    "flink",
    "micro",
    "event",
    "time",
    "key",
    "value",
    "offset",
    "partition",
    "topic",
    "commit",
    "replay",
    "plugin",
    "sandbox",
    "memory",
    "limit",
];

impl LineMaker {
    /// A maker with this seed and words per line.
    pub fn new(seed: u64, words: u32) -> Self {
        LineMaker {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            words,
            line: String::new(),
        }
    }

    /// The most bytes a line can have.
    pub fn longest_line(&self) -> usize {
        let word = WORDS.iter().map(|w| w.len()).max().unwrap_or(0);
        (word + 1) * self.words as usize
    }

    /// The next line.
    pub fn next_line(&mut self) -> &str {
        self.line.clear();
        for i in 0..self.words {
            // xorshift64*: fast and good enough for synthetic text.
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            if i > 0 {
                self.line.push(' ');
            }
            self.line.push_str(WORDS[(r >> 33) as usize % WORDS.len()]);
        }
        &self.line
    }
}

/// The running generator.
pub struct GeneratorSource {
    lines: LineMaker,
    rate: u64,
    count: Option<u64>,
}

const TICK: Duration = Duration::from_millis(10);

impl Source for GeneratorSource {
    fn describe(&self) -> String {
        format!("generator ({} lines/s)", self.rate)
    }

    fn run(mut self: Box<Self>, emitter: Emitter) -> SourceTask {
        Box::pin(async move {
            let mut made: u64 = 0;
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = tokio::time::Instant::now();
            let longest = self.lines.longest_line();
            loop {
                if emitter.stopping() || self.count.is_some_and(|c| made >= c) {
                    return Ok(());
                }
                // How many lines are due by now, at most one chunk at a time.
                let due = if self.rate == 0 {
                    CHUNK_RECORDS as u64
                } else {
                    let elapsed = started.elapsed().as_micros() as u64;
                    let target = elapsed.saturating_mul(self.rate) / 1_000_000;
                    target.saturating_sub(made).min(CHUNK_RECORDS as u64)
                };
                let due = self.count.map_or(due, |c| due.min(c - made));
                if due == 0 {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = emitter.stopped() => return Ok(()),
                    }
                    continue;
                }
                // Room for the chunk: `due` of the longest lines there can
                // be, or a full chunk and the line that ends it.
                let mut records = Records::with_capacity(
                    due as usize,
                    (due as usize * longest).min(CHUNK_BYTES + longest),
                );
                let ts = now_ms();
                for _ in 0..due {
                    records.push_value(self.lines.next_line().as_bytes(), ts);
                    if records.values.data.len() >= CHUNK_BYTES {
                        break;
                    }
                }
                made += records.len() as u64;
                if emitter
                    .emit(records, Some(format!("line {made}")))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_deterministic() {
        let mut a = LineMaker::new(7, 5);
        let mut b = LineMaker::new(7, 5);
        for _ in 0..100 {
            let line = a.next_line().to_string();
            assert_eq!(line, b.next_line());
            assert_eq!(line.split(' ').count(), 5);
        }
    }
}
