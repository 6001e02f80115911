//! Each example plugin, run by the engine over standard input, gives the
//! output its README promises; bad records are dead-lettered with a reason.

use std::time::Duration;

use crate::support::*;

/// Runs `stdin → <plugin with config> → console (jsonl)` and returns the
/// output records and the dead-lettered ones.
fn run_plugin(
    name: &str,
    config: &str,
    input: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"ex\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"stage\"\nplugin = '{}'\nconfig = {config}\n\
             [[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
            plugin(name).display()
        ),
    );
    let finished = run_with_input(s.sluice(&["run", "p.toml"]), input, Duration::from_secs(30));
    assert!(finished.status.success(), "{}", finished.stderr);
    let output = finished
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (output, read_jsonl_dir(&s.path("dead-letter/ex/stage")))
}

fn values(records: &[serde_json::Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect()
}

#[test]
fn word_split_splits_on_whitespace_and_can_lowercase() {
    let (out, dead) = run_plugin("word_split", "{}", "Hello  WORLD\n\n\tagain \n");
    assert_eq!(values(&out), ["Hello", "WORLD", "again"]);
    assert!(dead.is_empty());
    let (out, _) = run_plugin("word_split", "{ lowercase = true }", "Hello WORLD\n");
    assert_eq!(values(&out), ["hello", "world"]);
}

#[test]
fn word_split_dead_letters_values_that_are_not_utf8() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"ex\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"directory\"\npath = \"in\"\nwatch = false\n\
             [[stages]]\nname = \"stage\"\nplugin = '{}'\n[[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
            plugin("word_split").display()
        ),
    );
    s.mkdir("in");
    std::fs::write(
        s.path("in/data.txt"),
        b"good words\nbad \xff\xfe bytes\nmore\n",
    )
    .unwrap();
    let finished = run_with_input(s.sluice(&["run", "p.toml"]), "", Duration::from_secs(30));
    assert!(finished.status.success(), "{}", finished.stderr);
    let out = parse_jsonl(&finished.stdout);
    assert_eq!(values(&out), ["good", "words", "more"]);
    let dead = read_jsonl_dir(&s.path("dead-letter/ex/stage"));
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["value_base64"].is_string(),
        "the bad bytes are kept: {}",
        dead[0]
    );
    assert!(
        dead[0]["error"].as_str().unwrap().contains("UTF-8"),
        "{}",
        dead[0]
    );
}

#[test]
fn word_count_counts_within_the_batch() {
    let (out, _) = run_plugin("word_count", "{}", "b\na\nb\nc\nb\na\n");
    let pairs: Vec<(&str, &str)> = out
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["value"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("b", "3"), ("a", "2"), ("c", "1")]);
}

#[test]
fn average_averages_numbers_and_rejects_the_rest() {
    let (out, dead) = run_plugin("average", "{}", "1\n2\n3.5\noops\n");
    assert_eq!(out.len(), 1);
    let avg: f64 = out[0]["value"].as_str().unwrap().parse().unwrap();
    assert!((avg - 6.5 / 3.0).abs() < 1e-12, "{avg}");
    assert_eq!(values(&dead), ["oops"]);
    assert!(dead[0]["error"].as_str().unwrap().contains("oops"));

    let (out, _) = run_plugin(
        "average",
        "{ field = \"t\" }",
        "{\"t\": 4}\n{\"t\": \"6\"}\n",
    );
    assert_eq!(values(&out), ["5"]);
}

#[test]
fn threshold_alert_emits_an_alert_per_crossing() {
    let (out, dead) = run_plugin(
        "threshold_alert",
        "{ threshold = 10 }",
        "5\n11\n10\n20.5\nhot\n",
    );
    let alerts: Vec<serde_json::Value> = out
        .iter()
        .map(|r| serde_json::from_str(r["value"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["value"], 11.0);
    assert_eq!(alerts[1]["value"], 20.5);
    assert_eq!(alerts[0]["threshold"], 10.0);
    assert_eq!(alerts[0]["direction"], "above");
    assert_eq!(values(&dead), ["hot"]);

    let (out, _) = run_plugin(
        "threshold_alert",
        "{ threshold = 10, direction = \"below\" }",
        "5\n11\n",
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn json_filter_keeps_matching_records_unchanged() {
    let input = "{\"user\":{\"country\":\"NL\"},\"id\":1}\n{\"user\":{\"country\":\"DE\"},\"id\":2}\n{\"id\":3}\nnot json\n{\"user\":{\"country\":\"NL\"},\"id\":5}\n";
    let (out, dead) = run_plugin(
        "json_filter",
        "{ field = \"user.country\", equals = \"NL\" }",
        input,
    );
    assert_eq!(
        values(&out),
        [
            "{\"user\":{\"country\":\"NL\"},\"id\":1}",
            "{\"user\":{\"country\":\"NL\"},\"id\":5}"
        ]
    );
    assert_eq!(values(&dead), ["not json"]);
}
