//! The compiled-plugin cache: the second run loads what the first compiled,
//! and a damaged entry is compiled again, never trusted or fatal.

use std::time::Duration;

use crate::support::*;

fn run(s: &Scratch, input: &str) -> Finished {
    let mut cmd = s.sluice(&["run", "p.toml", "--control", "off"]);
    cmd.env("SLUICE_CACHE_DIR", s.path("cache"));
    run_with_input(cmd, input, Duration::from_secs(30))
}

#[test]
fn compiled_plugins_are_cached_and_a_damaged_entry_is_compiled_again() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        &format!(
            "name = \"cached\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\n[[stages]]\nname = \"count\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"console\"\n",
            plugin("word_split").display(),
            plugin("word_count").display()
        ),
    );
    let input = "to be or not to be\n";
    let first = run(&s, input);
    assert!(first.status.success(), "{}", first.stderr);
    let entries: Vec<_> = std::fs::read_dir(s.path("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 2, "one entry per plugin: {entries:?}");

    let second = run(&s, input);
    assert!(second.status.success(), "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
    assert!(!second.stderr.contains("unusable"), "{}", second.stderr);

    for entry in &entries {
        std::fs::write(entry, b"not compiled code at all").unwrap();
    }
    let third = run(&s, input);
    assert!(third.status.success(), "{}", third.stderr);
    assert_eq!(third.stdout, first.stdout);
    assert!(third.stderr.contains("unusable"), "{}", third.stderr);
}
