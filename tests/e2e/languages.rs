//! Plugins in other languages run in the same pipelines as the Rust ones:
//! word count with its split stage written in Python gives exactly the
//! output of the Rust split, batch for batch.

use std::time::Duration;

use crate::support::*;

fn word_count(split: &str, input: &str) -> Finished {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"wc\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\nconfig = {{ lowercase = true }}\n\
             [[stages]]\nname = \"count\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
            plugin(split).display(),
            plugin("word_count").display()
        ),
    );
    let finished = run_with_input(
        s.sluice(&["run", "p.toml", "--control", "off"]),
        input,
        Duration::from_secs(60),
    );
    assert!(finished.status.success(), "{split}: {}", finished.stderr);
    finished
}

#[test]
fn python_word_split_gives_the_same_counts_as_rust() {
    let text = sample_text(3000, 41);
    let rust = word_count("word_split", &text);
    let python = word_count("word_split_py", &text);
    let keys = |out: &str| -> Vec<(String, String)> {
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (r, p) = (keys(&rust.stdout), keys(&python.stdout));
    assert!(!r.is_empty());
    assert_eq!(r, p, "the Python split must give the Rust split's output");
    // And both agree with counts computed here.
    let mut expected = std::collections::BTreeMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_lowercase()).or_insert(0u64) += 1;
    }
    let got: std::collections::BTreeMap<String, u64> = p
        .iter()
        .map(|(k, v)| (k.clone(), v.parse().unwrap()))
        .collect();
    assert_eq!(got, expected);
}
