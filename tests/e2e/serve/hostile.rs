//! A hostile tenant — plugins that loop, allocate without bound, trap on
//! every batch and flood the log, on several pipelines at once, plus a
//! flood of API calls and connections that send nothing — beside a tenant
//! running word count: the other tenant's results stay exact and its
//! batches keep coming, and the service stays up.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;
use crate::support::*;

fn hostile_pipeline(name: &str, config: &str, limits: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"http\"\n\
         [[stages]]\nname = \"m\"\nplugin = \"misbehave\"\nconfig = {config}\n\
         on_error = \"dead-letter\"\nretries = 0\n{limits}\n\
         [[sinks]]\ntype = \"null\"\n"
    )
}

/// A process's threads: name, nice value and CPU time in clock ticks.
fn os_threads(pid: u32) -> Vec<(String, i64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // After the name in parentheses: state is field 3, utime 14,
        // stime 15, nice 19.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        out.push((name.trim().to_string(), fields[16].parse().unwrap(), ticks));
    }
    out
}

/// A service with tenant `good` (word count's plugins, an `in` folder) and
/// tenant `evil` (the misbehaving plugin); their tokens.
fn good_and_evil() -> (Server, String, String) {
    let server = Server::start(&[]);
    let good = server.tenant("good", json!({}));
    let evil = server.tenant("evil", json!({}));
    assert_eq!(server.push(&good, "split", "word_split").status, 201);
    assert_eq!(server.push(&good, "count", "word_count").status, 201);
    assert_eq!(server.push(&evil, "misbehave", "misbehave").status, 201);
    std::fs::create_dir_all(server.files("good").join("in")).unwrap();
    (server, good, evil)
}

#[test]
fn a_hostile_tenant_neither_slows_nor_breaks_another() {
    let (server, good, evil) = good_and_evil();
    assert_eq!(server.apply(&good, "wc", &wordcount("wc", "")).status, 201);

    let pipelines = [
        (
            "loop",
            "{ mode = \"loop\", when = \"*\" }",
            "time_limit = \"500ms\"",
        ),
        (
            "grow",
            "{ mode = \"grow\", when = \"*\" }",
            "memory_limit = \"16MiB\"",
        ),
        ("trap", "{ mode = \"trap\", when = \"*\" }", ""),
        ("chatty", "{ mode = \"chatty\", when = \"*\" }", ""),
        (
            "loop2",
            "{ mode = \"loop\", when = \"*\" }",
            "time_limit = \"500ms\"",
        ),
        (
            "grow2",
            "{ mode = \"grow\", when = \"*\" }",
            "memory_limit = \"16MiB\"",
        ),
    ];
    for (name, config, limits) in pipelines {
        let answer = server.apply(&evil, name, &hostile_pipeline(name, config, limits));
        assert_eq!(answer.status, 201, "{name}: {answer:?}");
    }
    // The hostile tenant's load: records into every bad pipeline, an API
    // flood, and connections that never send a request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for (name, _, _) in pipelines {
        let (stop, port, token) = (stop.clone(), server.port, evil.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = raw(
                    port,
                    "POST",
                    &format!("/v1/pipelines/{name}/ingest"),
                    Some(&token),
                    Some("text/plain"),
                    b"boom\n",
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    for _ in 0..2 {
        let (stop, port, token) = (stop.clone(), server.port, evil.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = raw(port, "GET", "/v1/pipelines", Some(&token), None, b"");
            }
        }));
    }
    let silent: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", server.port)).ok())
        .collect();

    // The good tenant's word count goes on, batch after batch, exactly.
    let out = server.files("good").join("out");
    let mut sent = String::new();
    let mut slowest = Duration::ZERO;
    for round in 0..15u64 {
        let text = sample_text(20, 700 + round);
        let started = Instant::now();
        let mut partial = sent.clone();
        partial.push_str(&text);
        let want = count_words(&partial);
        server.ingest(&good, "wc", &text);
        eventually(Duration::from_secs(60), "the good tenant's counts", || {
            counted(&out) == want
        });
        slowest = slowest.max(started.elapsed());
        sent = partial;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    drop(silent);
    assert_eq!(counted(&out), count_words(&sent));
    // The hostile tenant's steps went to the workers at the lowest OS
    // priority, and the good tenant's never did: the admin's view, the log
    // and the threads themselves say so.
    let tenants = server.call(Some(&server.admin), "GET", "/v1/tenants", None, &[]);
    let cpu = |name: &str| {
        tenants
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["usage"]["cpu"]
            .clone()
    };
    assert_eq!(cpu("evil")["priority"], "low", "{tenants:?}");
    assert_eq!(cpu("good")["priority"], "normal", "{tenants:?}");
    let log = server.log();
    assert!(
        log.contains("tenant `evil`: a step on sluice-stage ran out of time; its steps run at low priority (nice 19)"),
        "{log}"
    );
    assert!(!log.contains("tenant `good`: its steps"), "{log}");
    let pid = server.child.as_ref().unwrap().id();
    let low: Vec<(String, i64, u64)> = os_threads(pid)
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("sluice-stage-lo"))
        .collect();
    assert!(!low.is_empty(), "no low-priority stage workers");
    assert!(low.iter().all(|(_, nice, _)| *nice == 19), "{low:?}");
    assert!(
        low.iter().map(|(_, _, ticks)| ticks).sum::<u64>() > 0,
        "the low-priority workers never ran: {low:?}"
    );
    // Bounded: never the hostile plugins' time limits stacked up.
    assert!(
        slowest < Duration::from_secs(20),
        "a round took {slowest:?}"
    );
    assert_eq!(
        server.call(None, "GET", "/v1/health", None, &[]).status,
        200
    );
    // The hostile pipelines were contained: dead letters name what they
    // did. Their steps run at the lowest priority, so on a busy machine
    // they may get there only after the good tenant's rounds.
    for (pipeline, reason) in [("loop", "time limit"), ("grow", "memory limit")] {
        eventually(
            Duration::from_secs(120),
            &format!("{pipeline}'s dead letters to say `{reason}`"),
            || {
                let dead = server.call(
                    Some(&evil),
                    "GET",
                    &format!("/v1/pipelines/{pipeline}/dead-letters"),
                    None,
                    &[],
                );
                assert_eq!(dead.status, 200);
                dead.body.as_array().unwrap().iter().any(|r| {
                    r["error"]
                        .as_str()
                        .is_some_and(|error| error.contains(reason))
                })
            },
        );
    }
    // The good tenant's dead letters are its own: none.
    let dead = server.call(
        Some(&good),
        "GET",
        "/v1/pipelines/wc/dead-letters",
        None,
        &[],
    );
    assert_eq!(dead.body, json!([]));
    let _ = std::io::stdout().flush();
}

/// Tenant `evil`'s pipeline `loop`, whose plugin loops until its 1 s time
/// limit on every batch, given `batches` batches (each ingest in a batch
/// interval of its own); returns its text.
fn looping_with_batches(server: &Server, evil: &str, batches: usize) -> String {
    let looping = hostile_pipeline(
        "loop",
        "{ mode = \"loop\", when = \"*\" }",
        "time_limit = \"1s\"",
    );
    assert_eq!(server.apply(evil, "loop", &looping).status, 201);
    for _ in 0..batches {
        server.ingest(evil, "loop", "boom\n");
        std::thread::sleep(Duration::from_millis(150));
    }
    looping
}

#[test]
fn a_tenants_slow_pipeline_stop_holds_up_no_other_tenants_changes() {
    let (server, good, evil) = good_and_evil();
    // Several batches that each run into the time limit: replacing the
    // pipeline finishes them first (the new version goes on from their
    // checkpoint), which takes seconds.
    let looping = looping_with_batches(&server, &evil, 4);
    let (port, token) = (server.port, evil.clone());
    let replacing = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = raw(
            port,
            "PUT",
            "/v1/pipelines/loop",
            Some(&token),
            Some("application/toml"),
            looping.as_bytes(),
        );
        (answer.map(|a| a.status), started, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the other tenant's changes go through.
    assert_eq!(server.apply(&good, "wc", &wordcount("wc", "")).status, 201);
    let applied = Instant::now();
    assert_eq!(server.push(&good, "split", "word_split").status, 200);
    let (status, started, replaced) = replacing.join().unwrap();
    assert_eq!(status, Some(200), "{}", server.log());
    assert!(
        replaced - started > Duration::from_secs(2),
        "the replacement was quick ({:?}): nothing shows here",
        replaced - started
    );
    assert!(
        applied < replaced,
        "the good tenant's change waited for the other tenant's replacement"
    );
}

#[test]
fn deleting_a_pipeline_drops_the_batches_it_holds_instead_of_running_them() {
    let (server, _good, evil) = good_and_evil();
    // 30 batches, each running into the 1 s time limit, so finishing them
    // would take 30 s.
    looping_with_batches(&server, &evil, 30);
    let started = Instant::now();
    let deleted = server.call(Some(&evil), "DELETE", "/v1/pipelines/loop", None, b"");
    let took = started.elapsed();
    assert_eq!(deleted.status, 204, "{}", server.log());
    // The call under way ends within its 1 s limit; the tenant's steps may
    // be held back up to 10 s after repeated timeouts. Finishing the rest
    // would take 20 s or more.
    assert!(took < Duration::from_secs(15), "the delete took {took:?}");
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("evil/loop") && l.contains("discarded: "))
        .unwrap_or_else(|| panic!("no discard line in the log:\n{log}"));
    let batches: u64 = line
        .split("discarded: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in {line}"));
    assert!(batches >= 10, "only {batches} batches were dropped: {line}");
    let gone = server.call(Some(&evil), "GET", "/v1/pipelines/loop", None, b"");
    assert_eq!(gone.status, 404);
    // A new pipeline of the same name starts afresh.
    let calm = hostile_pipeline("loop", "{ mode = \"trap\", when = \"never\" }", "");
    assert_eq!(server.apply(&evil, "loop", &calm).status, 201);
}
