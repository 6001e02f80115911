//! The OpenAPI document matches the server: a tour of the API makes every
//! request the document describes and gets every status it lists for it,
//! and no answer has a status the document does not list. The document is
//! the one in the repository, and the server serves the same one.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::support::*;
use crate::support::*;

type Seen = BTreeSet<(String, String, u16)>;

fn documented(doc: &Value) -> Seen {
    let mut set = Seen::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                set.insert((method.to_uppercase(), path.clone(), status.parse().unwrap()));
            }
        }
    }
    set
}

/// Uses up the tenant's API call rate, so the next call gets `429`.
fn exhaust(server: &Server, token: &str) {
    for _ in 0..400 {
        let a = raw(server.port, "GET", "/v1/plugins", Some(token), None, b"").unwrap();
        if a.status == 429 {
            return;
        }
    }
    panic!("the API rate was never reached");
}

#[test]
fn every_documented_request_and_status_happens_and_nothing_else() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("engine/src/service/api/openapi.json")).unwrap(),
    )
    .unwrap();
    let server = Server::start(&[]);
    let served = server.call(None, "GET", "/v1/openapi.json", None, &[]);
    assert_eq!(
        served.body, doc,
        "the server serves the repository's document"
    );
    assert_eq!(
        server.call(None, "GET", "/v1/health", None, &[]).status,
        200
    );
    let admin = server.admin.clone();
    let a = Some(admin.as_str());

    // Tenants.
    let t = server.tenant("tour", json!({ "ingest_rate": 1000 }));
    let tk = Some(t.as_str());
    let body = |v: Value| v.to_string().into_bytes();
    let json_ct = Some("application/json");
    for (token, payload, want) in [
        (None, json!({"name": "x"}), 401),
        (tk, json!({"name": "x"}), 403),
        (a, json!({"name": "bad name"}), 400),
        (a, json!({"name": "tour"}), 409),
    ] {
        assert_eq!(
            server
                .call(token, "POST", "/v1/tenants", json_ct, &body(payload))
                .status,
            want
        );
    }
    for (token, want) in [(a, 200), (None, 401), (tk, 403)] {
        assert_eq!(
            server.call(token, "GET", "/v1/tenants", None, &[]).status,
            want
        );
    }
    for (token, path, payload, want) in [
        (
            a,
            "/v1/tenants/tour",
            json!({"quotas": {"pipelines": 5}}),
            200,
        ),
        (
            a,
            "/v1/tenants/tour",
            json!({"quotas": {"pipelines": "many"}}),
            400,
        ),
        (None, "/v1/tenants/tour", json!({}), 401),
        (tk, "/v1/tenants/tour", json!({}), 403),
        (a, "/v1/tenants/nobody", json!({"quotas": {}}), 404),
    ] {
        assert_eq!(
            server
                .call(token, "PATCH", path, json_ct, &body(payload))
                .status,
            want,
            "PATCH {path}"
        );
    }
    let spare = server.tenant("spare", json!({}));
    for (token, path, want) in [
        (None, "/v1/tenants/spare/token", 401),
        (tk, "/v1/tenants/spare/token", 403),
        (a, "/v1/tenants/nobody/token", 404),
        (a, "/v1/tenants/spare/token", 200),
    ] {
        assert_eq!(
            server.call(token, "POST", path, None, &[]).status,
            want,
            "POST {path}"
        );
    }
    for (token, path, want) in [
        (None, "/v1/tenants/spare", 401),
        (tk, "/v1/tenants/spare", 403),
        (a, "/v1/tenants/nobody", 404),
        (a, "/v1/tenants/spare", 204),
    ] {
        assert_eq!(
            server.call(token, "DELETE", path, None, &[]).status,
            want,
            "DELETE {path}"
        );
    }
    let _ = spare;

    // Plugins.
    let wasm = Some("application/wasm");
    assert_eq!(server.push(&t, "split", "word_split").status, 201);
    assert_eq!(
        server.push(&t, "split", "word_split").status,
        200,
        "the same bytes again"
    );
    assert_eq!(server.push(&t, "count", "word_count").status, 201);
    assert_eq!(server.push(&t, "alert", "threshold_alert").status, 201);
    assert_eq!(
        server
            .call(tk, "PUT", "/v1/plugins/junk", wasm, b"not a component")
            .status,
        400
    );
    assert_eq!(
        server
            .call(None, "PUT", "/v1/plugins/junk", wasm, b"x")
            .status,
        401
    );
    assert_eq!(
        server.call(a, "PUT", "/v1/plugins/junk", wasm, b"x").status,
        403
    );
    let huge = vec![0u8; (64 << 20) + 1];
    assert_eq!(
        server
            .call(tk, "PUT", "/v1/plugins/huge", wasm, &huge)
            .status,
        413
    );
    for (token, path, want) in [
        (tk, "/v1/plugins", 200),
        (None, "/v1/plugins", 401),
        (a, "/v1/plugins", 403),
        (tk, "/v1/plugins/split", 200),
        (tk, "/v1/plugins/nothing", 404),
        (None, "/v1/plugins/split", 401),
        (a, "/v1/plugins/split", 403),
    ] {
        assert_eq!(
            server.call(token, "GET", path, None, &[]).status,
            want,
            "GET {path}"
        );
    }

    // Pipelines.
    std::fs::create_dir_all(server.files("tour").join("in")).unwrap();
    let toml = Some("application/toml");
    let wc = wordcount("wc", "");
    assert_eq!(server.apply(&t, "wc", &wc).status, 201);
    assert_eq!(server.apply(&t, "wc", &wc).status, 200);
    assert_eq!(
        server
            .call(
                tk,
                "PUT",
                "/v1/pipelines/bad",
                toml,
                b"name = \"bad\"\nbatch_interval = 3\n"
            )
            .status,
        400
    );
    assert_eq!(
        server
            .call(None, "PUT", "/v1/pipelines/x", toml, wc.as_bytes())
            .status,
        401
    );
    assert_eq!(
        server
            .call(a, "PUT", "/v1/pipelines/x", toml, wc.as_bytes())
            .status,
        403
    );
    let big = format!("{wc}\n# {}\n", "x".repeat(1 << 20));
    assert_eq!(
        server
            .call(tk, "PUT", "/v1/pipelines/wc", toml, big.as_bytes())
            .status,
        413
    );
    for (token, path, want) in [
        (tk, "/v1/pipelines", 200),
        (None, "/v1/pipelines", 401),
        (a, "/v1/pipelines", 403),
        (tk, "/v1/pipelines/wc", 200),
        (tk, "/v1/pipelines/nothing", 404),
        (None, "/v1/pipelines/wc", 401),
        (a, "/v1/pipelines/wc", 403),
        (tk, "/v1/pipelines/wc/dead-letters", 200),
        (tk, "/v1/pipelines/nothing/dead-letters", 404),
        (None, "/v1/pipelines/wc/dead-letters", 401),
        (a, "/v1/pipelines/wc/dead-letters", 403),
    ] {
        assert_eq!(
            server.call(token, "GET", path, None, &[]).status,
            want,
            "GET {path}"
        );
    }
    // Metrics and the dashboard: the page and its assets hold no data and
    // take no token; `/metrics` and the page's data take the admin's or a
    // tenant's.
    for (token, path, want) in [
        (a, "/metrics", 200),
        (tk, "/metrics", 200),
        (None, "/metrics", 401),
        (None, "/ui", 308),
        (None, "/ui/", 200),
        (None, "/ui/app.js", 200),
        (None, "/ui/style.css", 200),
        (a, "/ui/api/pipelines", 200),
        (tk, "/ui/api/pipelines", 200),
        (None, "/ui/api/pipelines", 401),
        (a, "/ui/api/pipelines/wc?tenant=tour", 200),
        (tk, "/ui/api/pipelines/wc", 200),
        (tk, "/ui/api/pipelines/nothing", 404),
        (None, "/ui/api/pipelines/wc", 401),
    ] {
        assert_eq!(
            server.call(token, "GET", path, None, &[]).status,
            want,
            "GET {path}"
        );
    }
    // Ingest.
    let ingest = "/v1/pipelines/wc/ingest";
    let text = Some("text/plain");
    assert_eq!(
        server
            .call(tk, "POST", ingest, text, b"some words\n")
            .status,
        200
    );
    assert_eq!(
        server
            .call(tk, "POST", ingest, json_ct, b"[{\"nope\": 1}]")
            .status,
        400
    );
    assert_eq!(server.call(None, "POST", ingest, text, b"x\n").status, 401);
    assert_eq!(server.call(a, "POST", ingest, text, b"x\n").status, 403);
    assert_eq!(
        server
            .call(tk, "POST", "/v1/pipelines/nothing/ingest", text, b"x\n")
            .status,
        404
    );
    let too_big = vec![b'x'; 9 << 20];
    assert_eq!(server.call(tk, "POST", ingest, text, &too_big).status, 413);
    let burst = "w\n".repeat(1500);
    assert_eq!(
        server
            .call(tk, "POST", ingest, text, burst.as_bytes())
            .status,
        429,
        "over the ingest rate"
    );
    // Deploy and rollback.
    let deploy = "/v1/pipelines/wc/stages/count/deploy";
    let rollback = "/v1/pipelines/wc/stages/count/rollback";
    assert_eq!(
        server.call(tk, "POST", rollback, None, &[]).status,
        409,
        "no earlier version"
    );
    assert_eq!(
        server
            .json(tk, "POST", deploy, &json!({"plugin": "alert"}))
            .status,
        400,
        "init refuses"
    );
    assert_eq!(
        server
            .json(tk, "POST", deploy, &json!({"nothing": 1}))
            .status,
        400
    );
    assert_eq!(
        server
            .json(tk, "POST", deploy, &json!({"plugin": "nothing"}))
            .status,
        404
    );
    assert_eq!(
        server
            .json(
                tk,
                "POST",
                "/v1/pipelines/nothing/stages/count/deploy",
                &json!({"plugin": "count"})
            )
            .status,
        404
    );
    assert_eq!(
        server
            .json(None, "POST", deploy, &json!({"plugin": "count"}))
            .status,
        401
    );
    assert_eq!(
        server
            .json(a, "POST", deploy, &json!({"plugin": "count"}))
            .status,
        403
    );
    assert_eq!(
        server
            .json(
                tk,
                "POST",
                "/v1/pipelines/wc/stages/split/deploy",
                &json!({"plugin": "count"})
            )
            .status,
        200
    );
    // It goes live at the next batch; then there is a version to go back to.
    eventually(
        std::time::Duration::from_secs(30),
        "the deployed version live",
        || {
            let _ = raw(server.port, "POST", ingest, tk, text, b"x\n");
            let status = raw(server.port, "GET", "/v1/pipelines/wc", tk, None, b"").unwrap();
            status.body["stages"][0]["version"]
                .as_str()
                .unwrap_or("")
                .starts_with("count.wasm")
        },
    );
    assert_eq!(
        server
            .call(
                tk,
                "POST",
                "/v1/pipelines/wc/stages/split/rollback",
                None,
                &[]
            )
            .status,
        200
    );
    assert_eq!(
        server
            .call(
                tk,
                "POST",
                "/v1/pipelines/nothing/stages/count/rollback",
                None,
                &[]
            )
            .status,
        404
    );
    assert_eq!(server.call(None, "POST", rollback, None, &[]).status, 401);
    assert_eq!(server.call(a, "POST", rollback, None, &[]).status, 403);
    // Lifecycle.
    for (token, action, want) in [
        (tk, "stop", 200),
        (None, "stop", 401),
        (a, "stop", 403),
        (tk, "start", 200),
        (None, "start", 401),
        (a, "start", 403),
    ] {
        let path = format!("/v1/pipelines/wc/{action}");
        assert_eq!(
            server.call(token, "POST", &path, None, &[]).status,
            want,
            "POST {path}"
        );
    }
    for action in ["stop", "start"] {
        let path = format!("/v1/pipelines/nothing/{action}");
        assert_eq!(server.call(tk, "POST", &path, None, &[]).status, 404);
    }
    assert_eq!(
        server
            .call(tk, "POST", "/v1/pipelines/wc/stop", None, &[])
            .status,
        200
    );
    assert_eq!(
        server.call(tk, "POST", ingest, text, b"x\n").status,
        503,
        "stopped"
    );
    // Quotas and the API rate.
    let quota = server.json(
        a,
        "PATCH",
        "/v1/tenants/tour",
        &json!({"quotas": {"pipelines": 1}}),
    );
    assert_eq!(quota.status, 200);
    assert_eq!(
        server.apply(&t, "second", &wordcount("second", "")).status,
        403
    );
    assert_eq!(server.push(&t, "many", "uppercase").status, 201);
    let _ = server.json(
        a,
        "PATCH",
        "/v1/tenants/tour",
        &json!({"quotas": {"plugin_bytes": "1KiB"}}),
    );
    assert_eq!(server.push(&t, "more", "lowercase").status, 403);
    let tenant_calls: [(&str, &str, Option<&str>, &[u8]); 16] = [
        ("GET", "/v1/plugins", None, b""),
        ("PUT", "/v1/plugins/x", wasm, b"x"),
        ("GET", "/v1/plugins/split", None, b""),
        ("GET", "/v1/pipelines", None, b""),
        ("PUT", "/v1/pipelines/wc", toml, b"x"),
        ("GET", "/v1/pipelines/wc", None, b""),
        ("DELETE", "/v1/pipelines/wc", None, b""),
        ("POST", "/v1/pipelines/wc/stop", None, b""),
        ("POST", "/v1/pipelines/wc/start", None, b""),
        ("POST", deploy, json_ct, b"{}"),
        ("POST", rollback, None, b""),
        ("POST", ingest, text, b"x\n"),
        ("GET", "/v1/pipelines/wc/dead-letters", None, b""),
        ("GET", "/metrics", None, b""),
        ("GET", "/ui/api/pipelines", None, b""),
        ("GET", "/ui/api/pipelines/wc", None, b""),
    ];
    // One call a second: the bucket cannot refill between `exhaust` and the
    // call that must be refused, however slow the machine.
    let slow = server.json(
        a,
        "PATCH",
        "/v1/tenants/tour",
        &json!({"quotas": {"api_rate": 1}}),
    );
    assert_eq!(slow.status, 200);
    for (method, path, ct, payload) in tenant_calls {
        exhaust(&server, &t);
        assert_eq!(
            server.call(tk, method, path, ct, payload).status,
            429,
            "{method} {path}"
        );
    }
    let back = server.json(
        a,
        "PATCH",
        "/v1/tenants/tour",
        &json!({"quotas": {"api_rate": 200}}),
    );
    assert_eq!(back.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        server
            .call(tk, "DELETE", "/v1/pipelines/nothing", None, &[])
            .status,
        404
    );
    assert_eq!(
        server
            .call(None, "DELETE", "/v1/pipelines/wc", None, &[])
            .status,
        401
    );
    assert_eq!(
        server
            .call(a, "DELETE", "/v1/pipelines/wc", None, &[])
            .status,
        403
    );
    assert_eq!(
        server
            .call(tk, "DELETE", "/v1/pipelines/wc", None, &[])
            .status,
        204
    );

    let seen: Seen = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|(port, ..)| *port == server.port)
        .map(|(_, m, p, s)| (m.clone(), p.clone(), *s))
        .collect();
    let want = documented(&doc);
    let missing: Vec<_> = want.difference(&seen).collect();
    let undocumented: Vec<_> = seen.difference(&want).collect();
    assert!(missing.is_empty(), "documented but never seen: {missing:?}");
    assert!(
        undocumented.is_empty(),
        "seen but not documented: {undocumented:?}"
    );
}
