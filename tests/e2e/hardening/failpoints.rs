//! Crashes at the points of the delivery order that random kills rarely
//! hit (`SLUICE_CRASH_AT`, see `engine/src/failpoint.rs`), each with a test
//! that fails if that part of the order were wrong: a sink file is never
//! seen before it is complete, and a batch is checkpointed only after the
//! sinks have it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// Visible (not dot-named) files of a folder, sorted.
fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A sink file appears under its name only once complete: crash after the
/// second batch's file is written and synced under its temporary name but
/// before the rename, and that batch has no file yet; the restart writes
/// it, and nothing is lost.
#[test]
fn a_crash_before_the_rename_leaves_no_visible_file_of_that_batch() {
    let s = Scratch::new();
    s.mkdir("in");
    s.write(
        "p.toml",
        "name = \"atomic\"\nbatch_interval = \"100ms\"\n\
         [[sources]]\ntype = \"directory\"\npath = \"in\"\nsettle = \"100ms\"\n\
         [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"text\"\n",
    );
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .env("SLUICE_CRASH_AT", "renaming:2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.write("in/a.txt", "a1\na2\n");
    eventually(Duration::from_secs(20), "the first file", || {
        visible(&s.path("out")).len() == 1
    });
    s.write("in/b.txt", "b1\nb2\n");
    let status = wait_deadline(&mut child, Duration::from_secs(20));
    assert!(!status.success(), "the crash point was not reached");
    assert_eq!(
        visible(&s.path("out")).len(),
        1,
        "the second batch's file showed before its rename"
    );
    let hidden = std::fs::read_dir(s.path("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(hidden, 1, "its temporary file is there, complete");

    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the second batch again", || {
        visible(&s.path("out")).len() == 2
    });
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
    let mut lines: Vec<String> = visible(&s.path("out"))
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(s.path("out").join(f))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, ["a1", "a2", "b1", "b2"]);
}

/// A checkpoint follows the sinks' write: crash right after the first
/// batch's checkpoint, restart, and every word's latest running total is
/// in the output. Were the checkpoint taken before the write, the first
/// batch's words would be counted in the state but never written.
#[test]
fn a_crash_right_after_a_checkpoint_loses_no_output() {
    let s = Scratch::new();
    s.mkdir("in");
    s.write(
        "p.toml",
        &format!(
            "name = \"ordered\"\nbatch_interval = \"100ms\"\n\
             [[sources]]\ntype = \"directory\"\npath = \"in\"\nsettle = \"100ms\"\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\n\
             [[stages]]\nname = \"count\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n",
            plugin("word_split").display(),
            plugin("running_count").display()
        ),
    );
    s.write("in/a.txt", "solo1 solo2 shared\n");
    let crashed = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .env("SLUICE_CRASH_AT", "checkpointed:1")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the crash point was not reached");
    s.write("in/b.txt", "shared other\n");
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = |dir: &Path| -> BTreeMap<String, u64> {
        read_jsonl_dir(dir)
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["value"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    eventually(Duration::from_secs(20), "b.txt's words", || {
        latest(&s.path("out")).contains_key("other")
    });
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
    let expected: BTreeMap<String, u64> = [("other", 1), ("shared", 2), ("solo1", 1), ("solo2", 1)]
        .into_iter()
        .map(|(w, n)| (w.to_string(), n))
        .collect();
    assert_eq!(latest(&s.path("out")), expected);
}
