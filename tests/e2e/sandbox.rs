//! The sandbox: a plugin gets no files, no environment, the batch time for
//! a clock and a seeded random sequence — unless the pipeline grants the
//! real clock or real randomness.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// Runs the probe once over one record; returns finding name → (value,
/// record timestamp).
fn probe(grants: &str) -> HashMap<String, (String, u64)> {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"sandbox\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"probe\"\nplugin = '{}'\nconfig = {{ mode = \"probe\" }}\ngrants = {grants}\n\
             [[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
            plugin("misbehave").display()
        ),
    );
    // Stdin stays open past the first interval, so the batch is processed
    // when its interval ends, a second after its batch time.
    let run = s.sluice(&["run", "p.toml"]);
    let finished = run_paced(
        run,
        &["x\n"],
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    finished
        .stdout
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let (name, value) = record["value"].as_str().unwrap().split_once(':').unwrap();
            (
                name.to_string(),
                (value.to_string(), record["timestamp"].as_u64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_plugin_sees_no_files_no_environment_and_the_batch_time() {
    let found = probe("[]");
    assert!(found["fs"].0.starts_with("denied"), "{found:?}");
    assert_eq!(found["env"].0, "0", "{found:?}");
    // The wall clock reads the batch time, which stamps the record too.
    let (clock, batch_time) = &found["clock"];
    assert_eq!(clock.parse::<u64>().unwrap(), *batch_time, "{found:?}");
    // Randomness is a deterministic sequence: a replay sees the same value.
    assert_eq!(found["random"].0, probe("[]")["random"].0);
}

#[test]
fn granted_clock_and_randomness_are_real() {
    let found = probe("[\"clock\", \"random\"]");
    assert!(
        found["fs"].0.starts_with("denied"),
        "grants do not open files: {found:?}"
    );
    let (clock, batch_time) = &found["clock"];
    // The batch is processed after its interval ends, so the real clock is
    // past the batch time.
    assert!(clock.parse::<u64>().unwrap() > *batch_time, "{found:?}");
    assert_ne!(found["random"].0, probe("[\"random\"]")["random"].0);
}
