//! Findings 5 and 8: what `sluice check` passed and `sluice run` then
//! rejected (or choked on), beyond the data-driven cases in
//! `tests/ui/invalid/`: plugins that are devices or huge, two pipelines of
//! one name, a state file another process holds, a time limit shorter than
//! the plugin's start-up.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

fn stage_pipeline(name: &str, plugin: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\n\
         [[sources]]\ntype = \"directory\"\npath = \"in\"\n\
         [[stages]]\nname = \"s\"\nplugin = '{plugin}'\n{extra}\n\
         [[sinks]]\ntype = \"directory\"\npath = \"out\"\n"
    )
}

#[test]
fn plugins_that_are_devices_or_huge_are_refused_at_once() {
    let s = Scratch::new();
    s.mkdir("in");
    // A sparse file just over the limit: no disk, but 64 MiB + 1 to read.
    let big = std::fs::File::create(s.path("big.wasm")).unwrap();
    big.set_len((64 << 20) + 1).unwrap();
    for (plugin, why) in [
        ("/dev/zero", "is not a regular file"),
        ("in", "is not a regular file"),
        ("big.wasm", "larger than the limit of 64 MiB"),
    ] {
        s.write("p.toml", &stage_pipeline("dev", plugin, ""));
        let started = Instant::now();
        let out = s.sluice(&["check", "p.toml"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{plugin}: {stderr}");
        assert!(stderr.contains(why), "{plugin}: {stderr}");
        assert!(
            stderr.contains("p.toml:8:10:"),
            "{plugin}: located: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{plugin} was read"
        );
        let run = s
            .sluice(&["run", "p.toml", "--control", "off"])
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{plugin}");
    }
}

#[test]
fn a_running_stage_whose_plugin_file_becomes_a_device_keeps_its_version() {
    let s = Scratch::new();
    s.mkdir("in");
    std::fs::copy(plugin("uppercase"), s.path("case.wasm")).unwrap();
    s.write("p.toml", &stage_pipeline("hot", "case.wasm", ""));
    let mut child = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.write("in/a.txt", "x\n");
    eventually(Duration::from_secs(20), "the first output", || {
        !read_jsonl_dir(&s.path("out")).is_empty()
    });
    let before = peak_rss(child.id()).unwrap();
    std::fs::remove_file(s.path("case.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", s.path("case.wasm")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let grown = peak_rss(child.id()).unwrap().saturating_sub(before);
    assert!(grown < 64 << 20, "memory grew by {} MiB", grown >> 20);
    s.write("in/b.txt", "y\n");
    eventually(Duration::from_secs(20), "the next output", || {
        read_jsonl_dir(&s.path("out")).len() == 2
    });
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("is not a regular file; not reloaded"), "{log}");
    let values: Vec<String> = read_jsonl_dir(&s.path("out"))
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["X", "Y"], "the old version carried on");
}

#[test]
fn two_pipelines_of_one_name_are_refused() {
    let s = Scratch::new();
    s.mkdir("in");
    s.mkdir("in2");
    let text = |input: &str, out: &str| {
        format!(
            "name = \"same\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"directory\"\n\
             path = \"{input}\"\n[[sinks]]\ntype = \"directory\"\npath = \"{out}\"\n"
        )
    };
    s.write("a.toml", &text("in", "out-a"));
    s.write("b.toml", &text("in2", "out-b"));
    for args in [
        &["check", "a.toml", "b.toml"][..],
        &["run", "a.toml", "b.toml", "--control", "off"],
    ] {
        let command = args[0];
        let out = s.sluice(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("b.toml: pipeline `same` is also declared in a.toml"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn a_state_file_in_use_names_the_process_that_holds_it() {
    let s = Scratch::new();
    s.mkdir("in");
    s.write(
        "p.toml",
        "name = \"held\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"directory\"\n\
         path = \"in\"\n[[sinks]]\ntype = \"null\"\n",
    );
    let mut first = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the state file", || {
        s.path("state/held.redb").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    let second = s
        .sluice(&["run", "p.toml", "--control", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by process {}", first.id())),
        "{stderr}"
    );
    assert!(!stderr.contains("backup"), "{stderr}");
    let check = s.sluice(&["check", "p.toml"]).output().unwrap();
    assert!(check.status.success());
    let note = String::from_utf8_lossy(&check.stderr);
    assert!(
        note.contains(&format!("in use by process {}", first.id())),
        "{note}"
    );
    terminate(&first);
    assert!(wait_deadline(&mut first, Duration::from_secs(30)).success());
}

/// A plugin whose `init` takes longer than the stage's `time_limit` starts
/// all the same: start-up gets its own, longer limit, so check and run
/// agree whatever the machine's speed.
#[test]
fn a_short_time_limit_does_not_cut_a_slow_init() {
    let s = Scratch::new();
    s.mkdir("in");
    s.write(
        "p.toml",
        &stage_pipeline(
            "slowinit",
            &plugin("misbehave").display().to_string(),
            "config = { mode = \"fail\", init_spin = 100000000 }\ntime_limit = \"5ms\"",
        ),
    );
    let out = s.sluice(&["check", "p.toml"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.write("in/a.txt", "fine\n");
    s.write(
        "p.toml",
        &stage_pipeline(
            "slowinit",
            &plugin("misbehave").display().to_string(),
            "config = { mode = \"fail\", init_spin = 100000000 }\ntime_limit = \"5ms\"",
        )
        .replace("path = \"in\"", "path = \"in\"\nwatch = false"),
    );
    let run = run_with_input(
        s.sluice(&["run", "p.toml", "--control", "off"]),
        "",
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", run.stderr);
    let values: Vec<_> = read_jsonl_dir(&s.path("out"));
    assert_eq!(values.len(), 1);
}

/// A pipeline may not write where another pipeline of the same process
/// reads: the output would loop back in.
#[test]
fn one_pipelines_sink_in_anothers_source_folder_is_refused() {
    let s = Scratch::new();
    s.mkdir("a-in");
    s.mkdir("b-in");
    s.write(
        "a.toml",
        "name = \"a\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"directory\"\npath = \"a-in\"\n\
         [[sinks]]\ntype = \"directory\"\npath = \"b-in\"\n",
    );
    s.write(
        "b.toml",
        "name = \"b\"\nbatch_interval = \"100ms\"\n[[sources]]\ntype = \"directory\"\npath = \"b-in\"\n\
         [[sinks]]\ntype = \"directory\"\npath = \"b-out\"\n",
    );
    for args in [
        &["check", "a.toml", "b.toml"][..],
        &["run", "a.toml", "b.toml", "--control", "off"],
    ] {
        let out = s.sluice(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", args[0]);
        assert!(
            stderr.contains("a.toml:6:1: directory sink ./b-in overlaps the folder of a directory source of pipeline `b`"),
            "{}: {stderr}",
            args[0]
        );
    }
}
