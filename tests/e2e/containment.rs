//! A plugin that traps, loops forever or allocates without bound is
//! contained: the engine survives, reports the failure with pipeline, stage,
//! plugin and batch, and either dead-letters the batch and goes on, or
//! fails the pipeline cleanly — never losing a record silently.

use std::time::Duration;

use crate::support::*;

fn misbehaving_pipeline(mode: &str, on_error: &str) -> String {
    misbehaving_pipeline_with(mode, on_error, "boom", "300ms", "")
}

/// The misbehave stage, misbehaving on records equal to `when`, with a time
/// limit and any further stage keys in `extra`.
fn misbehaving_pipeline_with(
    mode: &str,
    on_error: &str,
    when: &str,
    time_limit: &str,
    extra: &str,
) -> String {
    format!(
        r#"
name = "contained"
batch_interval = "50ms"

[[sources]]
type = "stdin"

[[stages]]
name = "risky"
plugin = '{}'
config = {{ mode = "{mode}", when = "{when}" }}
on_error = "{on_error}"
retries = 1
time_limit = "{time_limit}"
memory_limit = "32MiB"
{extra}

[[sinks]]
type = "directory"
path = "output"
format = "jsonl"
"#,
        plugin("misbehave").display()
    )
}

/// Feeds `a b`, then (in a later batch) `boom`, then `c d`, to a pipeline
/// whose stage misbehaves on `boom`.
fn run_three_batches(s: &Scratch) -> Finished {
    let chunks = ["a\nb\n", "boom\n", "c\nd\n"];
    run_paced(
        s.sluice(&["run", "p.toml"]),
        &chunks,
        Duration::from_millis(800),
        Duration::from_secs(60),
    )
}

fn values(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect()
}

fn check_dead_lettered(mode: &str, reason: &str) {
    let s = Scratch::new();
    s.write("p.toml", &misbehaving_pipeline(mode, "dead-letter"));
    let finished = run_three_batches(&s);
    assert!(
        finished.status.success(),
        "mode {mode}: {}",
        finished.stderr
    );
    // Every other record went through, in order.
    assert_eq!(
        values(&read_jsonl_dir(&s.path("output"))),
        ["a", "b", "c", "d"]
    );
    // The batch with `boom` is in the dead-letter folder, with the reason.
    let dead = read_jsonl_dir(&s.path("dead-letter/contained/risky"));
    assert_eq!(values(&dead), ["boom"], "mode {mode}");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains(reason),
        "mode {mode}: error {error:?} lacks {reason:?}"
    );
    assert!(
        error.contains("misbehave.wasm@"),
        "the error names the plugin: {error}"
    );
    // The log says it retried: on a fresh instance after a trap or limit,
    // on the same one after an error the plugin returned.
    let retry = if mode == "fail" {
        "; retrying"
    } else {
        "retrying on a fresh instance"
    };
    assert!(finished.stderr.contains(retry), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("dead-lettered"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_trapping_plugin_is_contained_and_its_batch_dead_lettered() {
    check_dead_lettered("trap", "trapped");
}

#[test]
fn a_plugin_that_loops_forever_is_stopped_by_its_time_limit() {
    check_dead_lettered("loop", "time limit of 300ms");
}

#[test]
fn a_plugin_that_allocates_without_bound_is_stopped_by_its_memory_limit() {
    check_dead_lettered("grow", "memory limit of 33554432 bytes");
}

#[test]
fn a_plugin_error_for_the_whole_batch_is_dead_lettered_too() {
    check_dead_lettered("fail", "asked to fail");
}

#[test]
fn with_on_error_fail_the_pipeline_stops_with_a_clear_error() {
    let s = Scratch::new();
    s.write("p.toml", &misbehaving_pipeline("trap", "fail"));
    let finished = run_three_batches(&s);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    let stderr = &finished.stderr;
    assert!(
        stderr.contains("error: pipeline `contained`, stage `risky`, plugin misbehave.wasm@"),
        "{stderr}"
    );
    assert!(stderr.contains(", batch "), "{stderr}");
    assert!(stderr.contains("trapped"), "{stderr}");
    // What came before the failure was written.
    assert_eq!(values(&read_jsonl_dir(&s.path("output"))), ["a", "b"]);
}

#[test]
fn a_plugin_that_sleeps_cannot_hold_the_pipeline() {
    let s = Scratch::new();
    s.write("p.toml", &misbehaving_pipeline("sleep", "dead-letter"));
    let started = std::time::Instant::now();
    let finished = run_three_batches(&s);
    assert!(finished.status.success(), "{}", finished.stderr);
    // The feeder takes ~2.4 s; an hour-long sleep must not add to that.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // Whether the sleep returned at once or the spin after it hit the time
    // limit, every record is accounted for.
    let mut all = values(&read_jsonl_dir(&s.path("output")));
    all.extend(values(&read_jsonl_dir(
        &s.path("dead-letter/contained/risky"),
    )));
    all.sort();
    assert_eq!(all, ["a", "b", "boom", "c", "d"]);
}

#[test]
fn a_plugin_cannot_flood_the_engine_log() {
    let s = Scratch::new();
    // A generous time limit: this test is about the log, not the clock.
    let pipeline = misbehaving_pipeline_with("chatty", "fail", "boom", "30s", "");
    s.write("p.toml", &pipeline);
    let finished = run_three_batches(&s);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        values(&read_jsonl_dir(&s.path("output"))),
        ["a", "b", "boom", "c", "d"]
    );
    let chatty = finished
        .stderr
        .lines()
        .filter(|l| l.contains("chatty"))
        .count();
    assert!(
        chatty <= 1000,
        "{chatty} lines from the plugin reached the log"
    );
    assert!(
        finished
            .stderr
            .contains("39000 log lines from the plugin dropped"),
        "{}",
        finished.stderr
    );
}

#[test]
fn instances_are_recycled_after_their_batches_without_losing_records() {
    let s = Scratch::new();
    // `when` never matches: the plugin passes everything through.
    let pipeline = misbehaving_pipeline_with("trap", "fail", "never", "300ms", "recycle_after = 1");
    s.write("p.toml", &pipeline);
    let mut cmd = s.sluice(&["run", "p.toml"]);
    cmd.env("RUST_LOG", "debug");
    let chunks = ["a\n", "b\n", "c\n"];
    let finished = run_paced(
        cmd,
        &chunks,
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(values(&read_jsonl_dir(&s.path("output"))), ["a", "b", "c"]);
    let recycled = finished.stderr.matches("recycled after 1 batches").count();
    assert_eq!(recycled, 3, "{}", finished.stderr);
}
