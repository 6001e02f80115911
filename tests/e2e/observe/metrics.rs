//! `sluice run --metrics`: `/metrics` counts exactly the records sent,
//! dead-lettered and written, passes `promtool check metrics`, and needs no
//! token, while the dashboard's data does; `--log-format json` writes one
//! JSON object per line with the events' fields as keys.

use std::time::Duration;

use super::*;

#[test]
fn counters_equal_the_records_sent_dead_lettered_and_written() {
    let s = Scratch::new();
    s.mkdir("input");
    let plugin = plugin("json_filter");
    s.write(
        "p.toml",
        &filter_pipeline("counted", &plugin.display().to_string(), "100ms"),
    );
    let run = Run::start(&s, "p.toml", &[]);

    let (first, kept_1, dead_1) = filter_input(600, "a");
    drop_file(&s.path("input"), "a.txt", &first);
    let (second, kept_2, dead_2) = filter_input(250, "b");
    let sent = 600 + 250;
    let (kept, dead) = (kept_1 + kept_2, dead_1 + dead_2);
    // The second file once the first is through, so there are at least two
    // batches with records.
    eventually(Duration::from_secs(30), "the first file counted", || {
        value(&run.metrics().1, "sluice_sink_records_total", &[]) == kept_1 as f64
    });
    drop_file(&s.path("input"), "b.txt", &second);
    eventually(Duration::from_secs(30), "every record counted", || {
        let m = run.metrics().1;
        value(&m, "sluice_sink_records_total", &[]) == kept as f64
            && value(&m, "sluice_dead_letters_total", &[]) == dead as f64
    });
    let (text, m) = run.metrics();
    let stage = [("stage", "filter")];
    assert_eq!(
        value(
            &m,
            "sluice_source_records_total",
            &[("source", "directory-0")]
        ),
        sent as f64
    );
    assert_eq!(value(&m, "sluice_records_in_total", &stage), sent as f64);
    assert_eq!(value(&m, "sluice_records_out_total", &stage), kept as f64);
    assert_eq!(value(&m, "sluice_dead_letters_total", &stage), dead as f64);
    assert_eq!(
        value(&m, "sluice_sink_records_total", &[("sink", "directory-0")]),
        kept as f64
    );
    // Independently: what the sink wrote and what went to the dead-letter
    // folder, record by record.
    let written = read_jsonl_dir(&s.path("output"));
    assert_eq!(written.len(), kept);
    assert!(
        written
            .iter()
            .all(|r| r["value"].as_str().unwrap().contains("\"keep\":\"yes\""))
    );
    let dead_letters = read_jsonl_dir(&s.path("dead-letter/counted/filter"));
    assert_eq!(dead_letters.len(), dead);

    // Every batch with records was one successful call (nothing failed
    // whole), and each is in the delay histograms once.
    let calls_ok = value(
        &m,
        "sluice_plugin_calls_total",
        &[("stage", "filter"), ("outcome", "ok")],
    );
    let with_records = value(&m, "sluice_batch_processing_seconds_count", &[]);
    assert!(with_records >= 2.0, "{text}");
    assert_eq!(calls_ok, with_records);
    for outcome in ["trap", "timeout", "out_of_memory", "failed"] {
        assert_eq!(
            value(
                &m,
                "sluice_plugin_calls_total",
                &[("stage", "filter"), ("outcome", outcome)]
            ),
            0.0
        );
    }
    for h in [
        "sluice_batch_scheduling_delay_seconds",
        "sluice_batch_total_delay_seconds",
        "sluice_record_latency_seconds",
    ] {
        assert_eq!(value(&m, &format!("{h}_count"), &[]), with_records, "{h}");
        assert_eq!(
            value(&m, &format!("{h}_bucket"), &[("le", "+Inf")]),
            with_records,
            "{h}"
        );
    }
    assert!(value(&m, "sluice_batches_total", &[]) >= with_records);
    assert_eq!(value(&m, "sluice_batch_interval_seconds", &[]), 0.1);
    assert_eq!(
        value(&m, "sluice_pipeline_up", &[("pipeline", "counted")]),
        1.0
    );
    // The live version, and its instance's memory.
    let info: Vec<&Sample> = m
        .iter()
        .filter(|s| s.name == "sluice_plugin_info")
        .collect();
    assert_eq!(info.len(), 1);
    assert!(
        info[0].labels["version"].starts_with("json_filter.wasm@"),
        "{info:?}"
    );
    assert!(value(&m, "sluice_plugin_memory_bytes", &stage) > 0.0);
    // The process's own figures.
    assert!(value(&m, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&m, "process_cpu_seconds_total", &[]) > 0.0);
    promtool_check(&text);

    // The dashboard's data needs the run's token; /metrics does not.
    assert_eq!(
        http::get(&run.address, "/ui/api/pipelines", None).status,
        401
    );
    assert_eq!(
        http::get(&run.address, "/ui/api/pipelines", Some("wrong")).status,
        401
    );
    let list = http::get(&run.address, "/ui/api/pipelines", Some(&run.token));
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["pipelines"][0]["records_in"], sent);
    let detail = http::get(&run.address, "/ui/api/pipelines/counted", Some(&run.token)).json();
    assert_eq!(detail["totals"]["dead_letters"], dead);
    assert_eq!(
        http::get(&run.address, "/ui/api/pipelines/other", Some(&run.token)).status,
        404
    );
    let status = run.process.stop(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            r#"
name = "logged"
batch_interval = "50ms"

[[sources]]
type = "stdin"

[[stages]]
name = "filter"
plugin = '{}'
config = {{ field = "keep", equals = "yes" }}

[[sinks]]
type = "null"
"#,
            plugin("json_filter").display()
        ),
    );
    let finished = run_with_input(
        s.sluice(&["run", "p.toml", "--control", "off", "--log-format", "json"]),
        "{\"keep\":\"yes\"}\nnot json\n{\"keep\":\"no\"}\n",
        Duration::from_secs(60),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let lines: Vec<serde_json::Value> = finished
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string())
    );
    let dead = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("dead-lettered to"))
        })
        .unwrap_or_else(|| panic!("no dead-letter line: {}", finished.stderr));
    assert_eq!(dead["level"], "WARN");
    assert_eq!(dead["pipeline"], "logged");
    assert_eq!(dead["stage"], "filter");
    assert!(dead["batch"].is_u64(), "{dead}");
    assert!(
        dead.get("tenant").is_none(),
        "no tenant under sluice run: {dead}"
    );
    let finished_line = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("finished:"))
        })
        .expect("a finished line");
    assert_eq!(finished_line["pipeline"], "logged");
    assert!(
        finished_line["message"]
            .as_str()
            .unwrap()
            .contains("3 records in, 1 out, 1 dead-lettered")
    );
}
