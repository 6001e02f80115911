//! The dashboard of `sluice run --metrics` in a real headless Chromium:
//! it loads with no console errors, shows the running pipeline, its four
//! rows (timeline and histogram each), a batch table whose numbers match
//! `/metrics`, a batch's per-stage detail, and updates as batches come,
//! without reloading.

use std::path::PathBuf;
use std::time::Duration;

use super::browser::Browser;
use super::*;

/// The batch table's record counts, summed, and its number of rows.
const TABLE: &str = "const rows = [...document.querySelectorAll('#batches tbody tr[data-batch]')];
    return [rows.length, rows.reduce((n, r) => n + Number(r.querySelector('td.records').textContent.replace(/,/g, '')), 0)];";

fn number(v: &serde_json::Value) -> f64 {
    v.as_str()
        .map(|s| s.replace(',', ""))
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_dashboard_shows_the_pipeline_live_and_agrees_with_metrics() {
    let s = Scratch::new();
    s.mkdir("input");
    let plugin = plugin("json_filter");
    s.write(
        "p.toml",
        &filter_pipeline("watched", &plugin.display().to_string(), "200ms"),
    );
    let run = Run::start(&s, "p.toml", &[]);
    let browser = Browser::start(1400, 1900);

    // The page takes the token from its address, keeps it for the tab and
    // takes it out of the address.
    browser.goto(&format!("http://{}/ui/#token={}", run.address, run.token));
    browser.wait_for(
        "the pipeline in the list",
        Duration::from_secs(20),
        "return document.querySelector('#pipelines tr[data-pipeline=\"watched\"] a')?.textContent",
    );
    assert_eq!(browser.eval("return location.hash"), "#/");
    assert_eq!(
        browser.eval("return document.querySelector('#pipelines-total').textContent"),
        "1"
    );
    let timing = browser.eval(
        "const n = performance.getEntriesByType('navigation')[0];
         const r = performance.getEntriesByType('resource').filter(e => /\\/ui\\/(app\\.js|style\\.css)$/.test(e.name));
         return { dom: n.domContentLoadedEventEnd, load: n.loadEventEnd,
                  bytes: n.transferSize + r.reduce((a, e) => a + e.transferSize, 0) };",
    );
    eprintln!(
        "dashboard: DOMContentLoaded {} ms, load {} ms, {} bytes transferred",
        timing["dom"], timing["load"], timing["bytes"]
    );

    // Into the pipeline's page, by its link.
    browser.eval(
        "document.querySelector('#pipelines tr[data-pipeline=\"watched\"] a').click(); return true",
    );
    browser.wait_for("the pipeline's page", Duration::from_secs(20),
        "return document.querySelector('#p-name')?.textContent === 'watched' && document.querySelector('#p-state').textContent");
    assert_eq!(
        browser.eval("return document.querySelector('#p-state').textContent"),
        "running"
    );

    let (first, kept_1, dead_1) = filter_input(300, "a");
    drop_file(&s.path("input"), "a.txt", &first);
    browser.wait_for(
        "the first file's records",
        Duration::from_secs(30),
        "return document.querySelector('#total-records-in')?.textContent === '300'",
    );
    // Four rows, each a timeline and a histogram, drawn.
    for row in [
        "input-rate",
        "scheduling-delay",
        "processing-time",
        "total-delay",
    ] {
        let drawn = browser.eval(&format!(
            "const r = document.getElementById('row-{row}');
             return !!r && !!r.querySelector('.tl svg path.line') && r.querySelectorAll('.hg svg rect.bar').length === 10"
        ));
        assert_eq!(drawn, true, "row {row}");
    }
    // The batch interval is drawn on the processing time row.
    assert_eq!(
        browser.eval("return document.querySelectorAll('#row-processing-time .tl .limit').length"),
        1
    );
    // The stage chain names the stage and its version.
    let chain = browser
        .eval("return document.querySelector('#chain g[data-stage=\"filter\"]').textContent");
    assert!(chain.as_str().unwrap().contains("json_filter@"), "{chain}");

    // The table agrees with /metrics.
    let table = browser.eval(TABLE);
    let (_, m) = run.metrics();
    assert_eq!(
        number(&table[1]),
        value(&m, "sluice_source_records_total", &[])
    );
    assert_eq!(
        number(&table[0]),
        value(&m, "sluice_batch_processing_seconds_count", &[])
    );
    assert_eq!(
        number(&browser.eval("return document.querySelector('#total-dead-letters').textContent")),
        value(&m, "sluice_dead_letters_total", &[])
    );
    assert_eq!(value(&m, "sluice_dead_letters_total", &[]), dead_1 as f64);
    let rows_before = number(&table[0]);

    // A batch's detail: its stage's records in and out.
    browser.eval("document.querySelector('#batches tbody tr[data-batch]').click(); return true");
    let detail = browser.wait_for(
        "a batch's detail",
        Duration::from_secs(5),
        "return document.querySelector('#batch-stages tbody tr')?.innerText",
    );
    assert!(detail.as_str().unwrap().starts_with("filter"), "{detail}");

    // New records arrive: the page follows without a reload.
    let marker = browser
        .eval("window.notReloaded = true; return document.getElementById('updated').textContent");
    let (second, kept_2, _) = filter_input(200, "b");
    drop_file(&s.path("input"), "b.txt", &second);
    browser.wait_for(
        "the second file's records",
        Duration::from_secs(30),
        "return document.querySelector('#total-records-in')?.textContent === '500'",
    );
    assert_eq!(browser.eval("return window.notReloaded === true"), true);
    assert_ne!(
        browser.eval("return document.getElementById('updated').textContent"),
        marker
    );
    let table = browser.eval(TABLE);
    assert!(number(&table[0]) > rows_before);
    assert_eq!(number(&table[1]), 500.0);
    let (_, m) = run.metrics();
    assert_eq!(
        value(&m, "sluice_sink_records_total", &[]),
        (kept_1 + kept_2) as f64
    );
    assert_eq!(
        number(&browser.eval("return document.querySelector('#total-records-out').textContent")),
        (kept_1 + kept_2) as f64
    );

    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let shot = std::env::var("SLUICE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| s.path("dashboard.png"));
    std::fs::write(&shot, &png).unwrap();
    let console = browser.console();
    let errors: Vec<&String> = console.iter().filter(|l| l.starts_with("SEVERE")).collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(browser);
    assert!(run.process.stop(Duration::from_secs(30)).success());
}

#[test]
fn the_dashboard_asks_for_a_token_and_refuses_a_wrong_one() {
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &filter_pipeline(
            "guarded",
            &plugin("json_filter").display().to_string(),
            "200ms",
        ),
    );
    let run = Run::start(&s, "p.toml", &[]);
    let browser = Browser::start(1000, 800);
    browser.goto(&format!("http://{}/ui/", run.address));
    browser.wait_for(
        "the sign-in form",
        Duration::from_secs(10),
        "return !document.getElementById('signin').hidden",
    );
    assert_eq!(
        browser.eval("return document.getElementById('main').children.length"),
        0
    );
    browser.eval("document.getElementById('token').value = 'wrong'; document.querySelector('#signin button').click(); return true");
    browser.wait_for("the refusal", Duration::from_secs(10),
        "return !document.getElementById('signin').hidden && document.getElementById('signin-why').textContent.includes('not accepted')");
    browser.eval(&format!(
        "document.getElementById('token').value = '{}'; document.querySelector('#signin button').click(); return true",
        run.token
    ));
    browser.wait_for(
        "the list",
        Duration::from_secs(10),
        "return document.querySelector('#pipelines tr[data-pipeline=\"guarded\"]') !== null",
    );
    // The wrong token's 401 is the only error the console saw.
    let severe: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|l| l.starts_with("SEVERE"))
        .collect();
    assert!(severe.iter().all(|l| l.contains("401")), "{severe:?}");
}
