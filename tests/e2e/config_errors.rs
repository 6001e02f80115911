//! Malformed pipeline files, data-driven: each `tests/ui/invalid/NAME.toml`
//! must make `sluice check` fail with every line of `NAME.err` in its
//! message (which starts `NAME.toml:LINE:COLUMN:`), and `sluice run` refuse
//! it with exit code 2. `${PLUGINS}` in a file stands for the folder of
//! built plugins; a comment line `# mkdir: PATH` or `# file: PATH` makes
//! that folder or (empty) file beside the pipeline first.

use std::time::Duration;

use crate::support::*;

#[test]
fn every_invalid_pipeline_fails_with_its_expected_message() {
    let cases = root().join("tests/ui/invalid");
    let plugins = plugin("word_split").parent().unwrap().to_path_buf();
    let mut names: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 50,
        "expected the invalid cases in {}",
        cases.display()
    );
    let mut failures = Vec::new();
    for case in &names {
        let file_name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected_path = case.with_extension("err");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no {}", case.display(), expected_path.display()));
        let s = Scratch::new();
        let text = std::fs::read_to_string(case)
            .unwrap()
            .replace("${PLUGINS}", &plugins.display().to_string());
        for line in text.lines() {
            if let Some(dir) = line.strip_prefix("# mkdir: ") {
                s.mkdir(dir.trim());
            } else if let Some(file) = line.strip_prefix("# file: ") {
                s.write(file.trim(), "");
            }
        }
        s.write(&file_name, &text);
        let out = s.sluice(&["check", &file_name]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{file_name}: `sluice check` succeeded"));
            continue;
        }
        if !stderr.starts_with(&format!("error: {file_name}:")) {
            failures.push(format!(
                "{file_name}: the message does not start with the file's name:\n{stderr}"
            ));
        }
        for line in expected.lines().filter(|l| !l.is_empty()) {
            if !stderr.contains(line) {
                failures.push(format!("{file_name}: expected `{line}` in:\n{stderr}"));
            }
        }
        let run = s
            .sluice(&["run", &file_name])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        if run.status.code() != Some(2) {
            failures.push(format!(
                "{file_name}: `sluice run` exited {:?}, not 2",
                run.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn run_refuses_an_invalid_file_with_exit_code_2() {
    let s = Scratch::new();
    s.write("p.toml", "name = \"p\"\nbatch_interval = \"soon\"\n");
    let finished = run_with_input(s.sluice(&["run", "p.toml"]), "", Duration::from_secs(20));
    assert_eq!(finished.status.code(), Some(2));
    assert!(
        finished
            .stderr
            .contains("p.toml:2:18: invalid duration `soon`"),
        "{}",
        finished.stderr
    );
}

#[test]
fn check_accepts_a_valid_pipeline() {
    let s = Scratch::new();
    s.mkdir("input");
    s.write(
        "p.toml",
        &format!(
            "name = \"ok\"\nbatch_interval = \"200ms\"\n[[sources]]\ntype = \"directory\"\npath = \"input\"\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\nconfig = {{ lowercase = true }}\n\
             [[sinks]]\ntype = \"console\"\n",
            plugin("word_split").display()
        ),
    );
    let out = s.sluice(&["check", "p.toml"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok: p.toml") && stdout.contains("1 stage(s)"),
        "{stdout}"
    );
}
