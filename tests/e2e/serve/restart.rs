//! A restart of the service, clean or `kill -9` mid-stream, brings every
//! pipeline back in the state it was meant to be in, from its checkpoint,
//! with nothing lost and (where the pipeline promises it) nothing repeated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::support::*;
use crate::support::*;

/// Each word's latest total in running-count's output.
fn latest(dir: &std::path::Path) -> BTreeMap<String, u64> {
    read_jsonl_dir(dir)
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn status(server: &Server, token: &str, name: &str) -> serde_json::Value {
    server
        .call(
            Some(token),
            "GET",
            &format!("/v1/pipelines/{name}"),
            None,
            &[],
        )
        .body
}

#[test]
fn kill_9_mid_stream_brings_every_pipeline_back_with_exact_counts() {
    let mut server = Server::start(&[]);
    let t = server.tenant("acme", json!({}));
    for (name, krate) in [
        ("split", "word_split"),
        ("count", "word_count"),
        ("running", "running_count"),
    ] {
        assert_eq!(server.push(&t, name, krate).status, 201);
    }
    let files = server.files("acme");
    for dir in ["in-exact", "in-totals", "in-idle"] {
        std::fs::create_dir_all(files.join(dir)).unwrap();
    }
    // Per-batch counts, exactly once: summed, they equal the input's.
    let exact = "name = \"exact\"\nbatch_interval = \"100ms\"\ndelivery = \"exactly-once\"\n\
        [[sources]]\ntype = \"directory\"\npath = \"in-exact\"\nsettle = \"100ms\"\n\
        [[stages]]\nname = \"split\"\nplugin = \"split\"\n[[stages]]\nname = \"count\"\nplugin = \"count\"\n\
        [[sinks]]\ntype = \"directory\"\npath = \"out-exact\"\n";
    // Running totals in host state: the latest total of each word is exact.
    let totals = "name = \"totals\"\nbatch_interval = \"100ms\"\n\
        [[sources]]\ntype = \"directory\"\npath = \"in-totals\"\nsettle = \"100ms\"\n\
        [[stages]]\nname = \"split\"\nplugin = \"split\"\n[[stages]]\nname = \"count\"\nplugin = \"running\"\n\
        [[sinks]]\ntype = \"directory\"\npath = \"out-totals\"\n";
    // One stopped on purpose: it must stay stopped.
    let idle = exact
        .replace("\"exact\"", "\"idle\"")
        .replace("in-exact", "in-idle")
        .replace("out-exact", "out-idle");
    assert_eq!(server.apply(&t, "exact", exact).status, 201);
    assert_eq!(server.apply(&t, "totals", totals).status, 201);
    assert_eq!(server.apply(&t, "idle", &idle).status, 201);
    assert_eq!(
        server
            .call(Some(&t), "POST", "/v1/pipelines/idle/stop", None, &[])
            .body["state"],
        "stopped"
    );

    let mut all = String::new();
    for round in 0..6u64 {
        let text = sample_text(40, 100 + round);
        for dir in ["in-exact", "in-totals"] {
            let tmp = files.join(dir).join(format!(".f{round}.tmp"));
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, files.join(dir).join(format!("f{round}.txt"))).unwrap();
        }
        all.push_str(&text);
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        if round % 2 == 1 {
            server.kill_and_restart();
        }
    }
    let expected = count_words(&all);
    eventually(Duration::from_secs(60), "exact counts", || {
        counted(&files.join("out-exact")) == expected
    });
    eventually(Duration::from_secs(60), "exact totals", || {
        latest(&files.join("out-totals")) == expected
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counted(&files.join("out-exact")),
        expected,
        "nothing repeated"
    );
    assert_eq!(status(&server, &t, "exact")["state"], "running");
    assert_eq!(
        status(&server, &t, "idle")["state"],
        "stopped",
        "a stopped pipeline stays stopped"
    );
    assert!(
        counted(&files.join("out-idle")).is_empty(),
        "the stopped one wrote nothing"
    );

    // A clean restart too; then the stopped one starts from where it was.
    server.restart();
    assert_eq!(status(&server, &t, "totals")["state"], "running");
    let answer = server.call(Some(&t), "POST", "/v1/pipelines/idle/start", None, &[]);
    assert_eq!(answer.body["state"], "running", "{answer:?}");
    std::fs::write(files.join("in-idle/x.txt"), "late word\n").unwrap();
    eventually(
        Duration::from_secs(30),
        "the started pipeline's output",
        || counted(&files.join("out-idle")) == count_words("late word\n"),
    );
    assert!(server.stop().success(), "{}", server.log());
}
