//! Every quota exceeded once: refused with `403` (or `429` for a rate)
//! naming it, nothing partially created; quotas on running pipelines stop
//! them with the quota named, never dropping data in silence.

use std::time::Duration;

use serde_json::json;

use super::support::*;
use crate::support::*;

fn names(answer: &Answer) -> Vec<String> {
    answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn refused(answer: &Answer, quota: &str) {
    assert_eq!(answer.status, 403, "{answer:?}");
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.contains(&format!("quota `{quota}`")), "{error}");
}

#[test]
fn quotas_refuse_requests_that_would_exceed_them() {
    let server = Server::start(&[]);
    let t = server.tenant(
        "small",
        json!({ "pipelines": 1, "stages": 2, "memory": "300MiB", "plugin_bytes": "200KiB" }),
    );
    std::fs::create_dir_all(server.files("small").join("in")).unwrap();
    // plugin_bytes: word-split (~90 KB) and word-count (~60 KB) fit; a
    // third plugin does not, and is not stored.
    assert_eq!(server.push(&t, "split", "word_split").status, 201);
    assert_eq!(server.push(&t, "count", "word_count").status, 201);
    refused(&server.push(&t, "upper", "uppercase"), "plugin_bytes");
    let plugins = server.call(Some(&t), "GET", "/v1/plugins", None, &[]);
    assert_eq!(names(&plugins), ["count", "split"]);
    assert_eq!(
        server
            .call(Some(&t), "GET", "/v1/plugins/upper", None, &[])
            .status,
        404
    );

    // memory: two stages of 256MiB each (the default) exceed 300MiB.
    refused(&server.apply(&t, "wc", &wordcount("wc", "")), "memory");
    let small = wordcount("wc", "").replace(
        "plugin = \"count\"\n",
        "plugin = \"count\"\nmemory_limit = \"16MiB\"\n",
    );
    // stages: a third stage exceeds two.
    let three = small.replace(
        "[[sinks]]",
        "[[stages]]\nname = \"again\"\nplugin = \"count\"\nmemory_limit = \"16MiB\"\n[[sinks]]",
    );
    refused(&server.apply(&t, "wc", &three), "stages");
    assert_eq!(
        names(&server.call(Some(&t), "GET", "/v1/pipelines", None, &[])),
        Vec::<String>::new()
    );
    // Within every quota it runs.
    let answer = server.apply(&t, "wc", &small);
    assert_eq!(answer.status, 201, "{answer:?}");
    // pipelines: a second one exceeds one; replacing the first does not.
    refused(
        &server.apply(&t, "other", &small.replace("\"wc\"", "\"other\"")),
        "pipelines",
    );
    assert_eq!(server.apply(&t, "wc", &small).status, 200);
    assert_eq!(
        names(&server.call(Some(&t), "GET", "/v1/pipelines", None, &[])),
        ["wc"]
    );

    // A raised quota lets the same request through.
    let patched = server.json(
        Some(&server.admin),
        "PATCH",
        "/v1/tenants/small",
        &json!({ "quotas": { "pipelines": 2, "stages": 4, "memory": "1GiB" } }),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["quotas"]["pipelines"], 2);
    assert_eq!(
        patched.body["quotas"]["plugin_bytes"], "200KiB",
        "the others stay"
    );
    assert_eq!(
        server
            .apply(&t, "other", &small.replace("\"wc\"", "\"other\""))
            .status,
        201
    );
    // A bad quota is refused, naming it.
    let bad = server.json(
        Some(&server.admin),
        "PATCH",
        "/v1/tenants/small",
        &json!({ "quotas": { "cpu_share": 0 } }),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
}

#[test]
fn the_ingest_rate_is_answered_with_429_and_retry_after() {
    let server = Server::start(&[]);
    let t = server.tenant("slow", json!({ "ingest_rate": 100 }));
    assert_eq!(server.push(&t, "split", "word_split").status, 201);
    assert_eq!(server.push(&t, "count", "word_count").status, 201);
    std::fs::create_dir_all(server.files("slow").join("in")).unwrap();
    assert_eq!(server.apply(&t, "wc", &wordcount("wc", "")).status, 201);
    let lines = "w\n".repeat(80);
    server.ingest(&t, "wc", &lines);
    // 80 more within the same second pass the rate of 100.
    let answer = server.call(
        Some(&t),
        "POST",
        "/v1/pipelines/wc/ingest",
        Some("text/plain"),
        lines.as_bytes(),
    );
    assert_eq!(answer.status, 429, "{answer:?}");
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("quota `ingest_rate` of 100"),
        "{answer:?}"
    );
    assert!(
        answer
            .headers
            .to_ascii_lowercase()
            .contains("retry-after: 1"),
        "{}",
        answer.headers
    );
    // Nothing of the refused body was taken: after a wait it goes in whole.
    std::thread::sleep(Duration::from_millis(1100));
    server.ingest(&t, "wc", &lines);
    let out = server.files("slow").join("out");
    eventually(Duration::from_secs(30), "the counts", || {
        counted(&out).get("w") == Some(&160)
    });
}

#[test]
fn the_state_quota_stops_a_pipeline_naming_it() {
    let server = Server::start(&[]);
    let t = server.tenant("tight", json!({ "state_bytes": "4KiB" }));
    assert_eq!(server.push(&t, "split", "word_split").status, 201);
    assert_eq!(server.push(&t, "running", "running_count").status, 201);
    // A running count's state file outgrows 4KiB.
    let counting = "name = \"totals\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"http\"\n\
        [[stages]]\nname = \"split\"\nplugin = \"split\"\nmemory_limit = \"32MiB\"\n\
        [[stages]]\nname = \"count\"\nplugin = \"running\"\nmemory_limit = \"32MiB\"\n\
        [[sinks]]\ntype = \"directory\"\npath = \"totals\"\n";
    assert_eq!(server.apply(&t, "totals", counting).status, 201);
    server.ingest(&t, "totals", &sample_text(50, 3));
    eventually(
        Duration::from_secs(30),
        "the state quota to stop it",
        || {
            let status = server.call(Some(&t), "GET", "/v1/pipelines/totals", None, &[]);
            status.body["state"] == "failed"
                && status.body["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("quota `state_bytes`")
        },
    );
    refused(
        &server.apply(&t, "more", &counting.replace("\"totals\"", "\"more\"")),
        "state_bytes",
    );
    // What it counted before it was stopped is in its output, checkpointed.
    assert!(!read_jsonl_dir(&server.files("tight").join("totals")).is_empty());
}

#[test]
fn the_dead_letter_quota_stops_a_pipeline_naming_it() {
    let server = Server::start(&[]);
    let t = server.tenant("tight", json!({ "dead_letter_bytes": "50B" }));
    assert_eq!(server.push(&t, "misbehave", "misbehave").status, 201);
    // A plugin failing every batch, dead-lettered: the first dead letter
    // is over 50 B, so the batch is not dropped but the pipeline stops.
    let failing = "name = \"fails\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"http\"\n\
        [[stages]]\nname = \"m\"\nplugin = \"misbehave\"\nconfig = { mode = \"fail\", when = \"*\" }\n\
        on_error = \"dead-letter\"\nretries = 0\nmemory_limit = \"32MiB\"\n\
        [[sinks]]\ntype = \"null\"\n";
    assert_eq!(
        server.apply(&t, "fails", failing).status,
        201,
        "{}",
        server.log()
    );
    server.ingest(&t, "fails", "a record that will fail\n");
    let mut last = serde_json::Value::Null;
    let stopped = (0..300).any(|_| {
        last = server
            .call(Some(&t), "GET", "/v1/pipelines/fails", None, &[])
            .body;
        let done = last["state"] == "failed"
            && last["error"]
                .as_str()
                .unwrap_or("")
                .contains("quota `dead_letter_bytes` of 50B");
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(stopped, "{last}\n{}", server.log());
    let dead = server.call(
        Some(&t),
        "GET",
        "/v1/pipelines/fails/dead-letters",
        None,
        &[],
    );
    assert_eq!(dead.body, json!([]), "nothing written past the quota");
}
