//! The sandbox: a plugin gets no files, no network, no environment, the
//! batch time for a clock and a seeded random sequence — unless the
//! pipeline grants the real clock or real randomness, which open nothing
//! else.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use crate::support::*;

/// Runs the probe once over one record; returns finding name → (value,
/// record timestamp). `open:PATH` findings are keyed by their path. The
/// probe tries to connect to a listener of the test's own, which must see
/// no connection.
fn probe(grants: &str) -> HashMap<String, (String, u64)> {
    let s = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    s.write(
        "p.toml",
        &format!(
            "name = \"sandbox\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"probe\"\nplugin = '{}'\n\
             config = {{ mode = \"probe\", connect = \"{address}\" }}\ngrants = {grants}\n\
             [[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
            plugin("misbehave").display()
        ),
    );
    // Stdin stays open past the first interval, so the batch is processed
    // when its interval ends, a second after its batch time.
    let run = s.sluice(&["run", "p.toml"]);
    let finished = run_paced(
        run,
        &["x\n"],
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        listener.accept().is_err(),
        "the plugin reached a socket on the host"
    );
    finished
        .stdout
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = record["value"].as_str().unwrap();
            let (mut name, mut value) = text.split_once(':').unwrap();
            if name == "open" {
                let at = value
                    .rfind(":denied")
                    .or_else(|| value.rfind(":opened"))
                    .unwrap();
                (name, value) = (&text[..5 + at], &value[at + 1..]);
            }
            (
                name.to_string(),
                (value.to_string(), record["timestamp"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// What no grant opens: files (known paths included), sockets, name
/// lookups and the environment.
fn assert_shut(found: &HashMap<String, (String, u64)>) {
    assert!(found["fs"].0.starts_with("denied"), "{found:?}");
    for path in ["/etc/passwd", "/proc/self/environ", "."] {
        let key = format!("open:{path}");
        assert!(found[&key].0.starts_with("denied"), "{key}: {found:?}");
    }
    // The host refuses (the guest's standard library does support
    // sockets on wasip2: a refusal by the sandbox reads "Permission
    // denied", not "unsupported").
    for net in ["tcp", "udp"] {
        assert!(
            found[net].0.starts_with("denied (Permission denied"),
            "{net}: {found:?}"
        );
    }
    assert!(found["dns"].0.starts_with("denied"), "dns: {found:?}");
    assert_eq!(found["env"].0, "0", "{found:?}");
}

#[test]
fn a_plugin_sees_no_files_no_environment_and_the_batch_time() {
    let found = probe("[]");
    assert_shut(&found);
    // The wall clock reads the batch time, which stamps the record too.
    let (clock, batch_time) = &found["clock"];
    assert_eq!(clock.parse::<u64>().unwrap(), *batch_time, "{found:?}");
    // Randomness is a deterministic sequence: a replay sees the same value.
    assert_eq!(found["random"].0, probe("[]")["random"].0);
}

#[test]
fn granted_clock_and_randomness_are_real() {
    let found = probe("[\"clock\", \"random\"]");
    // Grants open nothing else.
    assert_shut(&found);
    let (clock, batch_time) = &found["clock"];
    // The batch is processed after its interval ends, so the real clock is
    // past the batch time.
    assert!(clock.parse::<u64>().unwrap() > *batch_time, "{found:?}");
    assert_ne!(found["random"].0, probe("[\"random\"]")["random"].0);
}
