//! Two tenants on one service: each runs word count over its own files and
//! over ingest, exactly; each sees only its own pipelines, plugins and dead
//! letters; every request across the line is refused and changes nothing;
//! tokens are checked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::support::*;
use crate::support::*;

/// Pushes word-split and word-count as `split` and `count`.
fn with_plugins(server: &Server, token: &str) {
    for (name, krate) in [("split", "word_split"), ("count", "word_count")] {
        let answer = server.push(token, name, krate);
        assert_eq!(answer.status, 201, "{answer:?}");
        assert!(
            answer.body["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
}

/// Runs word count for `tenant` over `files` (written to its files root)
/// and `ingested` (sent through the API); waits for the exact counts.
fn count_for(server: &Server, token: &str, tenant: &str, files: &str, ingested: &str) {
    std::fs::create_dir_all(server.files(tenant).join("in")).unwrap();
    let answer = server.apply(token, "wc", &wordcount("wc", ""));
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.body["state"], "running", "{answer:?}");
    std::fs::write(server.files(tenant).join("in/a.txt"), files).unwrap();
    server.ingest(token, "wc", ingested);
}

fn expected(texts: &[&str]) -> BTreeMap<String, u64> {
    count_words(&texts.concat())
}

#[test]
fn two_tenants_count_their_own_words_and_see_only_their_own() {
    let server = Server::start(&[]);
    let acme = server.tenant("acme", json!({}));
    let globex = server.tenant("globex", json!({}));
    with_plugins(&server, &acme);
    with_plugins(&server, &globex);
    let (acme_files, acme_sent) = (sample_text(200, 1), sample_text(100, 2));
    let (globex_files, globex_sent) = (
        "only globex words here\n".repeat(30),
        "globex ingest\n".repeat(20),
    );
    count_for(&server, &acme, "acme", &acme_files, &acme_sent);
    count_for(&server, &globex, "globex", &globex_files, &globex_sent);
    let acme_out = server.files("acme").join("out");
    let globex_out = server.files("globex").join("out");
    let want_acme = expected(&[&acme_files, &acme_sent]);
    let want_globex = expected(&[&globex_files, &globex_sent]);
    eventually(Duration::from_secs(60), "acme's counts", || {
        counted(&acme_out) == want_acme
    });
    eventually(Duration::from_secs(60), "globex's counts", || {
        counted(&globex_out) == want_globex
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counted(&acme_out), want_acme, "no duplicates later");
    assert_eq!(counted(&globex_out), want_globex);

    // Each sees its own pipeline and plugins, with versions and figures.
    for token in [&acme, &globex] {
        let list = server.call(Some(token), "GET", "/v1/pipelines", None, &[]);
        assert_eq!(list.status, 200);
        let names: Vec<&str> = list
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["wc"]);
        let plugins = server.call(Some(token), "GET", "/v1/plugins", None, &[]);
        assert_eq!(plugins.body.as_array().unwrap().len(), 2);
    }
    let acme_status = server.call(Some(&acme), "GET", "/v1/pipelines/wc", None, &[]);
    assert_eq!(acme_status.body["stages"][0]["plugin"], "split");
    let records_in = acme_status.body["metrics"]["records_in"].as_u64().unwrap();
    assert_eq!(
        records_in,
        (acme_files.lines().count() + acme_sent.lines().count()) as u64
    );
    // The same pipeline name in two tenants is two pipelines.
    let globex_status = server.call(Some(&globex), "GET", "/v1/pipelines/wc", None, &[]);
    assert_ne!(
        globex_status.body["metrics"]["records_in"],
        acme_status.body["metrics"]["records_in"]
    );
}

/// Every request one tenant makes at another's resources is refused, looks
/// like a request at something missing, and changes nothing.
#[test]
fn every_cross_tenant_request_is_refused_and_changes_nothing() {
    let server = Server::start(&[]);
    let acme = server.tenant("acme", json!({}));
    let mallory = server.tenant("mallory", json!({}));
    with_plugins(&server, &acme);
    std::fs::create_dir_all(server.files("acme").join("in")).unwrap();
    assert_eq!(server.apply(&acme, "wc", &wordcount("wc", "")).status, 201);
    server.ingest(&acme, "wc", "secret words\n");
    let acme_out = server.files("acme").join("out");
    eventually(Duration::from_secs(30), "acme's output", || {
        counted(&acme_out).len() == 2
    });
    let before = counted(&acme_out);

    let no_pipeline = |a: &Answer| {
        a.status == 404
            && a.body["error"]
                .as_str()
                .unwrap()
                .contains("no pipeline `wc`")
    };
    let table: Vec<(&str, &str, &str, Option<&str>, &[u8])> = vec![
        ("read", "GET", "/v1/pipelines/wc", None, b""),
        ("stop", "POST", "/v1/pipelines/wc/stop", None, b""),
        ("start", "POST", "/v1/pipelines/wc/start", None, b""),
        ("delete", "DELETE", "/v1/pipelines/wc", None, b""),
        (
            "ingest",
            "POST",
            "/v1/pipelines/wc/ingest",
            Some("text/plain"),
            b"injected\n",
        ),
        (
            "dead letters",
            "GET",
            "/v1/pipelines/wc/dead-letters",
            None,
            b"",
        ),
        (
            "deploy",
            "POST",
            "/v1/pipelines/wc/stages/split/deploy",
            Some("application/json"),
            br#"{"plugin": "split"}"#,
        ),
        (
            "rollback",
            "POST",
            "/v1/pipelines/wc/stages/split/rollback",
            None,
            b"",
        ),
        ("plugin", "GET", "/v1/plugins/split", None, b""),
    ];
    for (what, method, path, ct, body) in table {
        let answer = server.call(Some(&mallory), method, path, ct, body);
        assert_eq!(answer.status, 404, "{what}: {answer:?}");
        if path.starts_with("/v1/pipelines/wc") {
            assert!(no_pipeline(&answer), "{what}: {answer:?}");
        }
    }
    // Pipeline files that reach for acme's plugins or files.
    let attempts = [
        (
            "acme's plugin by name",
            wordcount("grab", ""),
            "no plugin `split`",
        ),
        (
            "acme's plugin by digest",
            wordcount("grab", "").replace(
                "plugin = \"split\"",
                &format!(
                    "plugin = \"split@{}\"",
                    server
                        .call(Some(&acme), "GET", "/v1/plugins/split", None, &[])
                        .body["digest"]
                        .as_str()
                        .unwrap()
                ),
            ),
            "no plugin `split`",
        ),
    ];
    for (what, text, why) in attempts {
        let answer = server.apply(&mallory, "grab", &text);
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.contains(why), "{what}: {error}");
        assert!(error.starts_with("grab.toml:"), "{what}: located: {error}");
    }
    // With plugins of its own, paths are what is refused.
    with_plugins(&server, &mallory);
    let attempts = [
        (
            "`..` to acme's files",
            wordcount("grab", "").replace("path = \"in\"", "path = \"../../acme/files/in\""),
            "leaves your files root",
        ),
        (
            "an absolute path",
            wordcount("grab", "").replace(
                "path = \"in\"",
                &format!("path = \"{}\"", server.files("acme").join("in").display()),
            ),
            "is an absolute path",
        ),
        (
            "a sink into acme's files",
            wordcount("grab", "").replace("path = \"out\"", "path = \"../../acme/files/out\""),
            "leaves your files root",
        ),
        (
            "a state folder",
            format!("state_dir = \"x\"\n{}", wordcount("grab", "")),
            "the service keeps pipeline state itself",
        ),
    ];
    for (what, text, why) in attempts {
        let answer = server.apply(&mallory, "grab", &text);
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.contains(why), "{what}: {error}");
        assert!(error.starts_with("grab.toml:"), "{what}: located: {error}");
    }
    // A link in mallory's own root that points at acme's files.
    std::fs::create_dir_all(server.files("mallory")).unwrap();
    std::os::unix::fs::symlink(
        server.files("acme").join("in"),
        server.files("mallory").join("in"),
    )
    .unwrap();
    let answer = server.apply(&mallory, "grab", &wordcount("grab", ""));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("links out of your files root"),
        "{answer:?}"
    );
    // Nothing of mallory's was made, and acme's pipeline is as it was.
    let list = server.call(Some(&mallory), "GET", "/v1/pipelines", None, &[]);
    assert_eq!(list.body, json!([]));
    let status = server.call(Some(&acme), "GET", "/v1/pipelines/wc", None, &[]);
    assert_eq!(status.body["state"], "running");
    server.ingest(&acme, "wc", "more\n");
    eventually(Duration::from_secs(30), "acme's next output", || {
        counted(&acme_out).contains_key("more")
    });
    let mut after = counted(&acme_out);
    after.remove("more");
    assert_eq!(after, before, "acme's data changed");
}

#[test]
fn tokens_are_checked_and_each_side_keeps_to_its_calls() {
    let server = Server::start(&[]);
    let acme = server.tenant("acme", json!({}));
    let get = |token: Option<&str>, path: &str| server.call(token, "GET", path, None, &[]);
    assert_eq!(get(None, "/v1/pipelines").status, 401);
    assert_eq!(get(Some("sl_0000"), "/v1/pipelines").status, 401);
    assert_eq!(get(Some(&acme), "/v1/pipelines").status, 200);
    // A tenant at the admin's calls, the admin at a tenant's.
    let answer = get(Some(&acme), "/v1/tenants");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("only the admin")
    );
    let answer = get(Some(&server.admin), "/v1/pipelines");
    assert_eq!(answer.status, 403, "{answer:?}");
    // A new token replaces the old one at once.
    let rotated = server.call(
        Some(&server.admin),
        "POST",
        "/v1/tenants/acme/token",
        None,
        &[],
    );
    assert_eq!(rotated.status, 200);
    let new = rotated.body["token"].as_str().unwrap().to_string();
    assert_eq!(get(Some(&acme), "/v1/pipelines").status, 401);
    assert_eq!(get(Some(&new), "/v1/pipelines").status, 200);
    // A deleted tenant's token is gone, and so are its files.
    assert!(server.files("acme").exists());
    let deleted = server.call(Some(&server.admin), "DELETE", "/v1/tenants/acme", None, &[]);
    assert_eq!(deleted.status, 204);
    assert_eq!(get(Some(&new), "/v1/pipelines").status, 401);
    assert!(!server.files("acme").exists());
    // The token hash is all the catalogue keeps.
    let catalog = std::fs::read(server.data().join("catalog.redb")).unwrap();
    let needle = new.as_bytes();
    assert!(
        !catalog.windows(needle.len()).any(|w| w == needle),
        "the token is stored in clear"
    );
}
