//! Plugins in other languages run in the same pipelines as the Rust ones:
//! word count with its split stage written in Python, C, JavaScript or Go
//! gives exactly the output of the Rust split, batch for batch; every split
//! also agrees with Rust's on every Unicode character (whitespace,
//! lowercasing, final sigma), dead-letters the same malformed values and
//! refuses the same bad configs with the same messages. The C, Python,
//! JavaScript and Go `average`s print the Rust one's means, digit for digit.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

/// The word-split plugin in each language, Rust first.
const RUST: &str = "word_split";
const OTHERS: &[(&str, &str)] = &[
    ("Python", "word_split_py"),
    ("C", "word_split_c"),
    ("JavaScript", "word_split_js"),
    ("Go", "word_split_go"),
];

/// Runs `input` through stdin → `stages` (plugin, config) → console (JSONL)
/// in a fresh folder; returns the output records and the dead-lettered ones.
/// The input is one batch, and the interpreted languages take seconds over
/// the largest one (`every_character`): hence the time limit.
fn run_pipeline(
    stages: &[(&str, &str)],
    input: impl AsRef<[u8]>,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let s = Scratch::new();
    let mut toml =
        String::from("name = \"lang\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n");
    for (i, (name, config)) in stages.iter().enumerate() {
        toml += &format!(
            "[[stages]]\nname = \"s{i}\"\nplugin = '{}'\nconfig = {{ {config} }}\n\
             time_limit = \"120s\"\n",
            plugin(name).display()
        );
    }
    toml += "[[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n";
    s.write("p.toml", &toml);
    let finished = run_with_input(
        s.sluice(&["run", "p.toml", "--control", "off"]),
        input,
        Duration::from_secs(120),
    );
    let names: Vec<&str> = stages.iter().map(|(name, _)| *name).collect();
    assert!(finished.status.success(), "{names:?}: {}", finished.stderr);
    let out = parse_jsonl(&finished.stdout);
    (out, read_jsonl_dir(&s.path("dead-letter/lang/s0")))
}

/// Each record's key and value, as text.
fn keys_values(records: &[serde_json::Value]) -> Vec<(Option<String>, String)> {
    records
        .iter()
        .map(|r| {
            let key = r["key"].as_str().map(str::to_owned);
            (key, r["value"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn word_count_gives_the_same_counts_with_the_split_in_every_language() {
    let text = sample_text(3000, 41);
    let count = |split| {
        let stages = [(split, "lowercase = true"), ("word_count", "")];
        keys_values(&run_pipeline(&stages, &text).0)
    };
    let rust = count(RUST);
    assert!(!rust.is_empty());
    // The Rust split agrees with counts computed here…
    let mut expected = BTreeMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_lowercase()).or_insert(0u64) += 1;
    }
    let got: BTreeMap<String, u64> = rust
        .iter()
        .map(|(k, v)| (k.clone().unwrap(), v.parse().unwrap()))
        .collect();
    assert_eq!(got, expected);
    // …and every other language gives its output, record for record.
    for (language, split) in OTHERS {
        assert_eq!(
            count(split),
            rust,
            "the {language} split must give the Rust split's output"
        );
    }
}

/// Text that puts every Unicode character (but the line breaks) through the
/// split: lines of 64 characters, each as `1cΣ1AcΣ`. Lowercasing maps each
/// `c`; the first Σ ends a word (ς) only when `c` is cased, the second when
/// `c` is cased or case-ignorable; a whitespace `c` splits the word there.
fn every_character() -> String {
    let chars: Vec<char> = (0..=0x10FFFF)
        .filter_map(char::from_u32)
        .filter(|c| !matches!(c, '\n' | '\r'))
        .collect();
    // And a byte-order mark first in a value, which is part of the word.
    let mut text = String::from("\u{feff}Aa\u{feff}Σ b\n");
    for line in chars.chunks(64) {
        for c in line {
            text += &format!("1{c}Σ1A{c}Σ");
        }
        text.push('\n');
    }
    text
}

#[test]
fn every_split_lowercases_and_splits_every_character_as_rust_does() {
    let text = every_character();
    let words = |split| {
        let (out, dead) = run_pipeline(&[(split, "lowercase = true")], &text);
        assert!(dead.is_empty(), "{split}: {dead:?}");
        keys_values(&out)
    };
    let rust = words(RUST);
    // Every character is somewhere in the output unless it is whitespace.
    let total: usize = rust.iter().map(|(_, w)| w.chars().count()).sum();
    assert!(total > 7 * 1_000_000, "{total} characters out");
    for (language, split) in OTHERS {
        let other = words(split);
        assert_eq!(other.len(), rust.len(), "{language}: number of words");
        for (o, r) in other.iter().zip(&rust) {
            assert_eq!(o, r, "the {language} split differs from the Rust split");
        }
    }
}

#[test]
fn a_value_that_is_not_utf8_is_dead_lettered_alike_in_every_language() {
    // Bad bytes at different offsets: a stray continuation byte, a
    // truncated sequence, an encoded surrogate, a code point past U+10FFFF,
    // an overlong encoding; and good lines around them.
    let input: &[u8] =
        b"good line\nok \xff\nab\xe2\x82\nx\xed\xa0\x80\n\xf4\x90\x80\x80\n\xc0\xaf\nstill good\n";
    let dead_letters = |split| {
        let (out, dead) = run_pipeline(&[(split, "")], input);
        let words: Vec<_> = keys_values(&out).into_iter().map(|(_, w)| w).collect();
        assert_eq!(words, ["good", "line", "still", "good"], "{split}");
        dead.iter()
            .map(|r| (r["value_base64"].clone(), r["error"].clone()))
            .collect::<Vec<_>>()
    };
    let rust = dead_letters(RUST);
    let errors: Vec<&str> = rust.iter().map(|(_, e)| e.as_str().unwrap()).collect();
    assert_eq!(
        errors,
        [3, 2, 1, 0, 0].map(|at| format!("value is not valid UTF-8 at byte {at}"))
    );
    for (language, split) in OTHERS {
        assert_eq!(dead_letters(split), rust, "{language}");
    }
}

#[test]
fn a_bad_config_is_rejected_alike_in_every_language() {
    // The last: both wrong; the unknown key is reported, as the SDK does.
    for config in [
        "lowercase = \"yes\"",
        "lower = true",
        "lowercase = 1, x = 2",
    ] {
        let message = |split| {
            let s = Scratch::new();
            s.write(
                "p.toml",
                &format!(
                    "name = \"lang\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
                     [[stages]]\nname = \"split\"\n\
                     plugin = '{}'\nconfig = {{ {config} }}\n[[sinks]]\ntype = \"console\"\n",
                    plugin(split).display()
                ),
            );
            let finished = run_with_input(
                s.sluice(&["run", "p.toml", "--control", "off"]),
                "",
                Duration::from_secs(120),
            );
            assert!(!finished.status.success(), "{split} took `{config}`");
            let (_, message) = finished
                .stderr
                .split_once("rejected its config: ")
                .unwrap_or_else(|| panic!("{split}: {}", finished.stderr));
            message.trim_end().to_owned()
        };
        let rust = message(RUST);
        for (_, split) in OTHERS {
            assert_eq!(message(split), rust, "{split} with `{config}`");
        }
    }
}

/// Numbers written in the ways people write them, from a fixed seed: signs,
/// fractions, exponents, padding, and magnitudes from 1e-30 to 1e30.
fn numbers(count: usize, seed: u64) -> Vec<String> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    (0..count)
        .map(|_| {
            let mantissa = next() % 1_000_000;
            let exponent = (next() % 61) as i32 - 30;
            let x = mantissa as f64 * 10f64.powi(exponent) / 1000.0;
            let sign = ["", "-", "+"][(next() % 3) as usize];
            match next() % 4 {
                0 => format!("{sign}{x}"),
                1 => format!("{sign}{x:e}"),
                2 => format!(" {sign}{}\t", mantissa),
                _ => format!("{sign}{mantissa}.{:03}E{}", next() % 1000, exponent),
            }
        })
        .collect()
}

/// The `average` plugin in each language but Rust.
const AVERAGES: &[&str] = &["average_c", "average_py", "average_js", "average_go"];

#[test]
fn every_average_prints_the_rust_averages_and_rejects_the_same_values() {
    // One batch, one group (stdin records have no key), so one mean a run:
    // a run per set of numbers.
    let mut runs: Vec<Vec<u8>> = (0..100)
        .map(|seed| (numbers(1 + seed as usize % 5, seed).join("\n") + "\n").into())
        .collect();
    runs.push(b"0.1\n0.2\n".into());
    runs.push(b"1e308\n1e308\n".into()); // the sum overflows: Rust prints `inf`
    runs.push(b"5e-324\n0\n".into());
    runs.push("\u{feff}5\n4\n".into()); // a leading BOM is not whitespace
    runs.push(b"-0\n-0.0\n".into()); // the sum starts at +0: Rust prints `0`
    runs.push(b"1e-400\n1\n1e400\n".into()); // underflows to 0; overflows: not finite
    runs.push(b"\xff\xfe9\n4\n\xe2\x82\n".into()); // quoted lossily
    // Not numbers, or not finite: dead-lettered, quoting the value.
    let long = "9".repeat(70) + "x";
    runs.push(
        format!(
            "1\noops\n 2.5 \ninf\nNaN\n0x10\n1_000\n.\n1e\n+\n\u{2003}3\u{a0}\n{long}\n\u{e9}\n"
        )
        .into(),
    );
    for input in &runs {
        let mean = |average| {
            let (out, dead) = run_pipeline(&[(average, "")], input);
            let out: Vec<_> = keys_values(&out);
            let dead: Vec<_> = dead
                .iter()
                .map(|r| (r["value_base64"].clone(), r["error"].clone()))
                .collect();
            (out, dead)
        };
        let rust = mean("average");
        let input = String::from_utf8_lossy(input);
        assert_eq!(rust.0.len(), 1, "{input:?}");
        for average in AVERAGES {
            assert_eq!(mean(average), rust, "{average}: {input:?}");
        }
    }
    // And per key, in order of first appearance: after word count, each
    // word is a key with its count as the value.
    let text = sample_text(200, 7);
    let per_key = |average| {
        let stages = [("word_split", ""), ("word_count", ""), (average, "")];
        keys_values(&run_pipeline(&stages, &text).0)
    };
    let rust = per_key("average");
    assert!(rust.len() > 5);
    for average in AVERAGES {
        assert_eq!(per_key(average), rust, "{average}");
    }
}

/// Many batches through one instance (`sluice plugin test --batch`), as a
/// long-running pipeline gives it: a Go plugin's garbage collector must not
/// run where the component model forbids calls to the host (it did, after
/// some twenty batches of a thousand lines).
#[test]
fn one_instance_takes_many_batches_alike_in_c_and_go() {
    let s = Scratch::new();
    let numbers: String = (0..50_000u32)
        .map(|i| format!("{}.{}\n", i % 977, i % 13))
        .collect();
    for (file, text) in [
        ("words.txt", sample_text(100_000, 3)),
        ("numbers.txt", numbers),
    ] {
        s.write(file, &text);
    }
    let run = |name: &str, input: &str, config: &[&str]| {
        let wasm = plugin(name).display().to_string();
        let mut args = vec!["plugin", "test", &wasm, "--input", input, "--batch", "500"];
        args.extend(config);
        let out = s.sluice(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let lowercase = ["--config", "lowercase=true"];
    let rust = run(RUST, "words.txt", &lowercase);
    assert!(rust.lines().count() > 500_000);
    for split in ["word_split_c", "word_split_go"] {
        assert!(run(split, "words.txt", &lowercase) == rust, "{split}");
    }
    let rust = run("average", "numbers.txt", &[]);
    assert_eq!(rust.lines().count(), 100);
    for average in ["average_c", "average_go"] {
        assert_eq!(run(average, "numbers.txt", &[]), rust, "{average}");
    }
}
