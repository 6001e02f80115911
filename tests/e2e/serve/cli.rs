//! The `sluice` commands that talk to a service, as an operator and a
//! tenant would use them: tenant create/list/quota/delete (admin), plugin
//! push/list, pipeline apply/list/get/stop/start/ingest/dead-letters/delete,
//! and deploy/status/rollback with `--server`; and a stage that has had no
//! records for `--idle-release` drops its instance.

use std::time::Duration;

use serde_json::Value;

use super::support::*;
use crate::support::*;

/// Runs `sluice ARGS` against `server` with `token`; returns (success,
/// stdout as JSON when it is, stderr).
fn sluice(server: &Server, token: &str, args: &[&str]) -> (bool, Value, String) {
    let out = server
        .scratch
        .sluice(args)
        .env("SLUICE_SERVER", format!("http://127.0.0.1:{}", server.port))
        .env("SLUICE_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_commands_drive_a_service_end_to_end() {
    let server = Server::start_logging(&["--idle-release", "1s"], Some("info,sluice=debug"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data().join("admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the admin token is the operator's alone"
    );
    let admin = server.admin.clone();
    let (ok, made, err) = sluice(
        &server,
        &admin,
        &[
            "tenant",
            "create",
            "acme",
            "--quota",
            "pipelines=3",
            "--quota",
            "memory=1GiB",
        ],
    );
    assert!(ok, "{err}");
    let token = made["token"].as_str().unwrap().to_string();
    let (ok, list, err) = sluice(&server, &admin, &["tenant", "list"]);
    assert!(ok, "{err}");
    assert_eq!(list[0]["name"], "acme");
    assert_eq!(list[0]["quotas"]["pipelines"], 3);
    let (ok, _, err) = sluice(&server, &admin, &["tenant", "quota", "acme", "stages=9"]);
    assert!(ok, "{err}");
    // A tenant's commands.
    for (file, name) in [
        ("word_split", "split"),
        ("word_count", "count"),
        ("uppercase", "upper"),
    ] {
        let path = plugin(file).display().to_string();
        let (ok, pushed, err) = sluice(&server, &token, &["plugin", "push", &path, "--name", name]);
        assert!(ok, "{err}");
        assert!(pushed["digest"].as_str().unwrap().starts_with("sha256:"));
    }
    let (ok, plugins, _) = sluice(&server, &token, &["plugin", "list"]);
    assert!(ok);
    assert_eq!(plugins.as_array().unwrap().len(), 3);
    std::fs::create_dir_all(server.files("acme").join("in")).unwrap();
    server.scratch.write("wc.toml", &wordcount("wc", ""));
    let (ok, applied, err) = sluice(&server, &token, &["pipeline", "apply", "wc.toml"]);
    assert!(ok, "{err}");
    assert_eq!(applied["state"], "running");
    let text = "one two two\n";
    server.scratch.write("lines.txt", text);
    let (ok, taken, err) = sluice(&server, &token, &["pipeline", "ingest", "wc", "lines.txt"]);
    assert!(ok, "{err}");
    assert_eq!(taken["accepted"], 1);
    let out = server.files("acme").join("out");
    eventually(Duration::from_secs(30), "the counts", || {
        counted(&out) == count_words(text)
    });
    // A stage idle for --idle-release drops its instance.
    eventually(
        Duration::from_secs(30),
        "the instance to be released",
        || server.log().contains("instance released"),
    );
    // Deploy, status and rollback through the service.
    let upper = plugin("uppercase").display().to_string();
    let (ok, deployed, err) = sluice(&server, &token, &["deploy", "wc", "split", "upper"]);
    assert!(ok, "{err}");
    assert!(
        deployed["version"]
            .as_str()
            .unwrap()
            .starts_with("upper.wasm@")
    );
    let _ = upper;
    server.ingest(&token, "wc", "x\n");
    eventually(Duration::from_secs(30), "the new version live", || {
        let (_, status, _) = sluice(&server, &token, &["status"]);
        status[0]["stages"][0]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with("upper.wasm")
    });
    let (ok, _, err) = sluice(&server, &token, &["rollback", "wc", "split"]);
    assert!(ok, "{err}");
    for (verb, state) in [("stop", "stopped"), ("start", "running")] {
        let (ok, status, err) = sluice(&server, &token, &["pipeline", verb, "wc"]);
        assert!(ok, "{err}");
        assert_eq!(status["state"], state);
    }
    let (ok, got, _) = sluice(&server, &token, &["pipeline", "get", "wc"]);
    assert!(ok);
    assert_eq!(got["name"], "wc");
    let (ok, dead, _) = sluice(&server, &token, &["pipeline", "dead-letters", "wc"]);
    assert!(ok);
    assert_eq!(dead, serde_json::json!([]));
    // Refusals exit 1 with the service's reason.
    let (ok, _, err) = sluice(&server, &token, &["pipeline", "get", "missing"]);
    assert!(!ok);
    assert!(err.contains("no pipeline `missing` (404)"), "{err}");
    let (ok, _, err) = sluice(&server, &token, &["tenant", "list"]);
    assert!(!ok);
    assert!(err.contains("only the admin"), "{err}");
    let (ok, _, err) = sluice(&server, &token, &["pipeline", "delete", "wc"]);
    assert!(ok, "{err}");
    let (ok, list, _) = sluice(&server, &token, &["pipeline", "list"]);
    assert!(ok);
    assert_eq!(list, serde_json::json!([]));
    let (ok, _, err) = sluice(&server, &admin, &["tenant", "delete", "acme"]);
    assert!(ok, "{err}");
}
