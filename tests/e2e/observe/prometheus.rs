//! The README's Prometheus examples work as written: a real Prometheus
//! (Debian's `prometheus`) with the README's scrape config scrapes `sluice
//! run --metrics` (no token) and `sluice serve` (the admin token from a
//! credentials file), loads the README's alert rule, and answers queries
//! with the records the pipelines counted; `promtool test rules` shows the
//! alert firing once the total delay has stayed above the batch interval
//! for 5 minutes, and not for a pipeline that keeps up.

use std::process::Command;
use std::time::Duration;

use super::*;

/// The fenced block after `<!-- marker -->` in the README.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let after = readme
        .split(&format!("<!-- {marker} -->"))
        .nth(1)
        .unwrap_or_else(|| panic!("no `<!-- {marker} -->` in README.md"));
    let body = after
        .split("```yaml\n")
        .nth(1)
        .expect("a yaml block after the marker");
    body.split("\n```").next().unwrap().to_string() + "\n"
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): install Debian's `prometheus` package (tests/run.sh does)"));
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_alert_rule_fires_when_batches_fall_behind() {
    let s = Scratch::new();
    s.write("sluice-alerts.yml", &readme_block("sluice-alerts.yml"));
    promtool(&["check", "rules", "sluice-alerts.yml"], s.dir.path());
    // Two pipelines scraped every 15 s for 10 minutes: `slow`'s batches
    // take 2 s each against a 1 s interval, `fine`'s 0.5 s.
    s.write(
        "alerts-test.yml",
        r#"rule_files: [sluice-alerts.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'sluice_batch_total_delay_seconds_sum{job="sluice",instance="h:9464",pipeline="slow"}'
        values: '0+30x40'
      - series: 'sluice_batch_total_delay_seconds_count{job="sluice",instance="h:9464",pipeline="slow"}'
        values: '0+15x40'
      - series: 'sluice_batch_interval_seconds{job="sluice",instance="h:9464",pipeline="slow"}'
        values: '1x40'
      - series: 'sluice_batch_total_delay_seconds_sum{job="sluice",instance="h:9464",pipeline="fine"}'
        values: '0+7.5x40'
      - series: 'sluice_batch_total_delay_seconds_count{job="sluice",instance="h:9464",pipeline="fine"}'
        values: '0+15x40'
      - series: 'sluice_batch_interval_seconds{job="sluice",instance="h:9464",pipeline="fine"}'
        values: '1x40'
    alert_rule_test:
      - eval_time: 4m
        alertname: SluiceFallingBehind
        exp_alerts: []
      - eval_time: 8m
        alertname: SluiceFallingBehind
        exp_alerts:
          - exp_labels:
              severity: warning
              job: sluice
              instance: h:9464
              pipeline: slow
            exp_annotations:
              summary: 'Pipeline slow falls behind: its batches take longer than its batch interval'
"#,
    );
    promtool(&["test", "rules", "alerts-test.yml"], s.dir.path());
}

#[test]
fn prometheus_scrapes_run_and_serve_with_the_readme_config() {
    let s = Scratch::new();
    // sluice run --metrics: no token.
    s.mkdir("input");
    s.write(
        "p.toml",
        &filter_pipeline(
            "scraped",
            &plugin("json_filter").display().to_string(),
            "100ms",
        ),
    );
    let run = Run::start(&s, "p.toml", &[]);
    let (text, kept, _) = filter_input(90, "r");
    drop_file(&s.path("input"), "r.txt", &text);
    // sluice serve: the admin token, from a file.
    let admin = "prometheus-scrape-admin-token-42";
    let mut cmd = s.sluice(&[
        "serve",
        "--data",
        "data",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    cmd.env("SLUICE_ADMIN_TOKEN", admin);
    let mut serve = Process::start(cmd);
    let line = serve.wait_line("sluice serve on http://", Duration::from_secs(60));
    let serve_address = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let created = http::request(
        &serve_address,
        "POST",
        "/v1/tenants",
        Some(admin),
        b"{\"name\":\"acme\"}",
        "application/json",
    );
    let tenant = created.json()["token"].as_str().unwrap().to_string();
    let wasm = std::fs::read(plugin("json_filter")).unwrap();
    assert_eq!(
        http::request(
            &serve_address,
            "PUT",
            "/v1/plugins/json-filter",
            Some(&tenant),
            &wasm,
            ""
        )
        .status,
        201
    );
    let files = s.path("data/tenants/acme/files");
    std::fs::create_dir_all(files.join("input")).unwrap();
    let file = filter_pipeline("hosted", "json-filter", "100ms");
    assert_eq!(
        http::request(
            &serve_address,
            "PUT",
            "/v1/pipelines/hosted",
            Some(&tenant),
            file.as_bytes(),
            ""
        )
        .status,
        201
    );
    let (text, kept_hosted, _) = filter_input(60, "h");
    drop_file(&files.join("input"), "h.txt", &text);

    // The README's config, pointed at these two and scraping every second.
    let token_file = s.write("admin-token", admin);
    let config = readme_block("prometheus.yml")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("127.0.0.1:9464", &run.address)
        .replace("127.0.0.1:7070", &serve_address)
        .replace(
            "/etc/prometheus/sluice-admin-token",
            token_file.to_str().unwrap(),
        );
    assert!(
        config.contains(&run.address) && config.contains(&serve_address),
        "{config}"
    );
    s.write("prometheus.yml", &config);
    s.write("sluice-alerts.yml", &readme_block("sluice-alerts.yml"));
    promtool(&["check", "config", "prometheus.yml"], s.dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prometheus_address = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("prometheus");
    cmd.current_dir(s.dir.path()).args([
        "--config.file=prometheus.yml",
        "--storage.tsdb.path=tsdb",
        &format!("--web.listen-address={prometheus_address}"),
    ]);
    let mut prometheus = Process::start(cmd);
    eventually(Duration::from_secs(60), "Prometheus ready", || {
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", prometheus.log());
        }
        std::net::TcpStream::connect(&prometheus_address).is_ok()
            && http::get(&prometheus_address, "/-/ready", None).status == 200
    });
    let query = |q: &str| -> Vec<serde_json::Value> {
        let path = format!(
            "/api/v1/query?query={}",
            q.replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
        );
        let r = http::get(&prometheus_address, &path, None);
        if r.status != 200 {
            return Vec::new();
        }
        r.json()["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let scalar = |v: &serde_json::Value| v["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape both targets' final counts",
        || {
            let run_kept = query("sluice_sink_records_total{job=\"sluice\"}");
            let hosted_kept =
                query("sluice_sink_records_total{job=\"sluice-serve\",tenant=\"acme\"}");
            run_kept.len() == 1
                && hosted_kept.len() == 1
                && scalar(&run_kept[0]) == kept as f64
                && scalar(&hosted_kept[0]) == kept_hosted as f64
        },
    );
    let up = query("up");
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|u| scalar(u) == 1.0), "{up:?}");
    // The alert rule is loaded, and evaluates.
    eventually(Duration::from_secs(20), "the alert rule evaluated", || {
        let rules = http::get(&prometheus_address, "/api/v1/rules", None).json();
        let rule = &rules["data"]["groups"][0]["rules"][0];
        rule["name"] == "SluiceFallingBehind" && rule["health"] == "ok"
    });
    drop(prometheus);
    assert!(serve.stop(Duration::from_secs(30)).success());
    assert!(run.process.stop(Duration::from_secs(30)).success());
}
