//! `sluice serve`: `/metrics` and the dashboard on the service's listener.
//! The admin token sees every tenant's series (labelled `tenant`) and the
//! process's; a tenant's token sees only its own, on `/metrics`, in the
//! dashboard's data and on the page; no token gets `401`.

use std::time::Duration;

use super::browser::Browser;
use super::*;

const ADMIN: &str = "observe-admin-token-0123456789";

struct Service {
    process: Process,
    address: String,
    data: std::path::PathBuf,
}

impl Service {
    fn start(s: &Scratch) -> Service {
        let data = s.path("data");
        let mut cmd = s.sluice(&[
            "serve",
            "--data",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ]);
        cmd.env("SLUICE_ADMIN_TOKEN", ADMIN);
        let mut process = Process::start(cmd);
        let line = process.wait_line("sluice serve on http://", Duration::from_secs(60));
        let address = line
            .split("sluice serve on http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_string();
        Service {
            process,
            address,
            data,
        }
    }

    /// A tenant running `filter_pipeline` as `pipeline`; returns its token.
    fn tenant(&self, name: &str, pipeline: &str) -> String {
        let created = http::request(
            &self.address,
            "POST",
            "/v1/tenants",
            Some(ADMIN),
            format!("{{\"name\":\"{name}\"}}").as_bytes(),
            "application/json",
        );
        assert_eq!(created.status, 201, "{}", created.text());
        let token = created.json()["token"].as_str().unwrap().to_string();
        let wasm = std::fs::read(plugin("json_filter")).unwrap();
        let pushed = http::request(
            &self.address,
            "PUT",
            "/v1/plugins/json-filter",
            Some(&token),
            &wasm,
            "application/wasm",
        );
        assert_eq!(pushed.status, 201, "{}", pushed.text());
        std::fs::create_dir_all(self.files(name).join("input")).unwrap();
        let file = filter_pipeline(pipeline, "json-filter", "100ms");
        let applied = http::request(
            &self.address,
            "PUT",
            &format!("/v1/pipelines/{pipeline}"),
            Some(&token),
            file.as_bytes(),
            "application/toml",
        );
        assert_eq!(applied.status, 201, "{}", applied.text());
        token
    }

    fn files(&self, tenant: &str) -> std::path::PathBuf {
        self.data.join("tenants").join(tenant).join("files")
    }

    fn metrics(&self, token: Option<&str>) -> (u16, String) {
        let r = http::get(&self.address, "/metrics", token);
        (r.status, r.text())
    }
}

#[test]
fn a_tenant_sees_only_its_own_pipelines_and_series() {
    let s = Scratch::new();
    let service = Service::start(&s);
    let token_a = service.tenant("alpha", "orders");
    let token_b = service.tenant("beta", "clicks");
    let (input_a, kept_a, dead_a) = filter_input(120, "a");
    let (input_b, kept_b, dead_b) = filter_input(70, "b");
    drop_file(&service.files("alpha").join("input"), "a.txt", &input_a);
    drop_file(&service.files("beta").join("input"), "b.txt", &input_b);
    eventually(
        Duration::from_secs(60),
        "both tenants' records counted",
        || {
            let m = parse_metrics(&service.metrics(Some(ADMIN)).1);
            m.iter()
                .filter(|s| s.name == "sluice_sink_records_total")
                .count()
                == 2
                && value(&m, "sluice_sink_records_total", &[("tenant", "alpha")]) == kept_a as f64
                && value(&m, "sluice_sink_records_total", &[("tenant", "beta")]) == kept_b as f64
        },
    );

    // No token, or a wrong one: 401.
    assert_eq!(service.metrics(None).0, 401);
    assert_eq!(service.metrics(Some("not-a-token")).0, 401);
    assert_eq!(
        http::get(&service.address, "/ui/api/pipelines", None).status,
        401
    );

    // The admin: every tenant, and the process.
    let (status, admin) = service.metrics(Some(ADMIN));
    assert_eq!(status, 200);
    promtool_check(&admin);
    let m = parse_metrics(&admin);
    for (tenant, pipeline, sent, kept, dead) in [
        ("alpha", "orders", 120, kept_a, dead_a),
        ("beta", "clicks", 70, kept_b, dead_b),
    ] {
        let who = [("tenant", tenant), ("pipeline", pipeline)];
        assert_eq!(value(&m, "sluice_source_records_total", &who), sent as f64);
        assert_eq!(
            value(
                &m,
                "sluice_records_in_total",
                &[who[0], who[1], ("stage", "filter")]
            ),
            sent as f64
        );
        assert_eq!(value(&m, "sluice_records_out_total", &who), kept as f64);
        assert_eq!(value(&m, "sluice_dead_letters_total", &who), dead as f64);
        assert_eq!(value(&m, "sluice_sink_records_total", &who), kept as f64);
    }
    assert!(value(&m, "process_resident_memory_bytes", &[]) > 0.0);

    // A tenant: its own series only, nothing of the process.
    let (status, alpha) = service.metrics(Some(&token_a));
    assert_eq!(status, 200);
    promtool_check(&alpha);
    let m = parse_metrics(&alpha);
    assert!(!m.is_empty());
    assert!(
        m.iter()
            .all(|s| s.labels.get("tenant").map(String::as_str) == Some("alpha")),
        "{alpha}"
    );
    assert!(
        !alpha.contains("beta") && !alpha.contains("clicks") && !alpha.contains("process_"),
        "{alpha}"
    );
    assert_eq!(value(&m, "sluice_source_records_total", &[]), 120.0);
    assert_eq!(value(&m, "sluice_dead_letters_total", &[]), dead_a as f64);

    // The dashboard's data: the same split.
    let list = http::get(&service.address, "/ui/api/pipelines", Some(&token_a)).json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["pipelines"][0]["name"], "orders");
    assert_eq!(list["pipelines"][0]["records_in"], 120);
    let admin_list = http::get(&service.address, "/ui/api/pipelines", Some(ADMIN)).json();
    assert_eq!(admin_list["total"], 2);
    for path in [
        "/ui/api/pipelines/clicks",
        "/ui/api/pipelines/clicks?tenant=beta",
        "/ui/api/pipelines/orders?tenant=beta",
    ] {
        let r = http::get(&service.address, path, Some(&token_a));
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let own = http::get(&service.address, "/ui/api/pipelines/orders", Some(&token_a));
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["totals"]["records_in"], 120);
    let other = http::get(
        &service.address,
        "/ui/api/pipelines/clicks?tenant=beta",
        Some(ADMIN),
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.json()["tenant"], "beta");
    // The admin must say whose pipeline it means.
    assert_eq!(
        http::get(&service.address, "/ui/api/pipelines/clicks", Some(ADMIN)).status,
        404
    );

    // The page: alpha's token lists alpha's pipeline only.
    let browser = Browser::start(1200, 900);
    browser.goto(&format!("http://{}/ui/#token={token_a}", service.address));
    browser.wait_for(
        "alpha's pipeline",
        Duration::from_secs(20),
        "return document.querySelector('#pipelines tr[data-pipeline=\"orders\"]') !== null",
    );
    let rows = browser.eval(
        "return [...document.querySelectorAll('#pipelines tbody tr[data-pipeline]')].map(r => r.dataset.tenant + '/' + r.dataset.pipeline)",
    );
    assert_eq!(rows, serde_json::json!(["alpha/orders"]));
    // Signing out and in with beta's token shows beta's instead.
    browser.eval("document.getElementById('signout').click(); return true");
    browser.eval(&format!(
        "document.getElementById('token').value = '{token_b}'; document.querySelector('#signin button').click(); return true"
    ));
    browser.wait_for(
        "beta's pipeline",
        Duration::from_secs(20),
        "return document.querySelector('#pipelines tr[data-pipeline=\"clicks\"]') !== null",
    );
    let rows = browser.eval(
        "return [...document.querySelectorAll('#pipelines tbody tr[data-pipeline]')].map(r => r.dataset.tenant + '/' + r.dataset.pipeline)",
    );
    assert_eq!(rows, serde_json::json!(["beta/clicks"]));
    let severe: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|l| l.starts_with("SEVERE"))
        .collect();
    assert!(severe.is_empty(), "{severe:?}");
    drop(browser);
    assert!(service.process.stop(Duration::from_secs(30)).success());
}

#[test]
fn the_routes_answer_as_documented_past_the_api_rate_too() {
    let s = Scratch::new();
    let service = Service::start(&s);
    let created = http::request(
        &service.address,
        "POST",
        "/v1/tenants",
        Some(ADMIN),
        b"{\"name\":\"gamma\"}",
        "application/json",
    );
    let token = created.json()["token"].as_str().unwrap().to_string();
    // The page and its assets need no token.
    let redirect = http::get(&service.address, "/ui", None);
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/ui/"));
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = http::get(&service.address, path, None);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            r.header("content-security-policy")
                .unwrap()
                .contains("default-src 'none'")
        );
    }
    assert_eq!(
        http::get(&service.address, "/ui/api/pipelines/x", None).status,
        401
    );
    // A tenant without pipelines gets an empty page, not an error.
    let (status, empty) = service.metrics(Some(&token));
    assert_eq!((status, empty.as_str()), (200, ""));
    // Past the API rate (200 calls a second), these answer 429 with
    // Retry-After like the rest of the API.
    for path in ["/metrics", "/ui/api/pipelines", "/ui/api/pipelines/x"] {
        assert!(
            burst_until_limited(&service.address, path, &token),
            "{path}: 800 calls in a burst were never limited"
        );
    }
    assert!(service.process.stop(Duration::from_secs(30)).success());
}

/// Calls `path` from four threads, up to 800 times in all, until one
/// answer is `429` with `Retry-After`; every other answer must be `200` or
/// `404` (a missing pipeline).
fn burst_until_limited(address: &str, path: &str, token: &str) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let limited = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    if limited.load(Relaxed) {
                        return;
                    }
                    let r = http::get(address, path, Some(token));
                    match r.status {
                        429 => {
                            assert!(r.header("retry-after").is_some());
                            limited.store(true, Relaxed);
                        }
                        200 | 404 => {}
                        other => panic!("{path}: {other} {}", r.text()),
                    }
                }
            });
        }
    });
    limited.into_inner()
}
