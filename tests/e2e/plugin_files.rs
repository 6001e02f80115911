//! Files that are not Sluice plugins are refused with a reason, by
//! `sluice check` and `sluice plugin inspect`; a real plugin is described.

use crate::support::*;

fn check_with_plugin(s: &Scratch, plugin_path: &std::path::Path) -> (bool, String) {
    s.write(
        "p.toml",
        &format!(
            "name = \"p\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n\
             [[stages]]\nname = \"s\"\nplugin = '{}'\n[[sinks]]\ntype = \"console\"\n",
            plugin_path.display()
        ),
    );
    let out = s.sluice(&["check", "p.toml"]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_text_file_is_not_webassembly() {
    let s = Scratch::new();
    let path = s.write("fake.wasm", "this is not wasm\n");
    let (ok, stderr) = check_with_plugin(&s, &path);
    assert!(!ok);
    assert!(stderr.contains("p.toml:7:10: stage `s`"), "{stderr}");
    assert!(stderr.contains("is not a WebAssembly file"), "{stderr}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let s = Scratch::new();
    let path = s.path("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let (ok, stderr) = check_with_plugin(&s, &path);
    assert!(!ok);
    assert!(
        stderr.contains("is a core WebAssembly module, not a component"),
        "{stderr}"
    );
    assert!(stderr.contains("wasm32-wasip2"), "{stderr}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let s = Scratch::new();
    let (ok, stderr) = check_with_plugin(&s, &plugin("wrong_world"));
    assert!(!ok);
    assert!(
        stderr.contains("is not a `sluice:plugin/stage@0.1.0` component"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`run`"),
        "the message lists what it exports: {stderr}"
    );
}

#[test]
fn a_truncated_component_does_not_compile() {
    let s = Scratch::new();
    let bytes = std::fs::read(plugin("word_split")).unwrap();
    let path = s.path("truncated.wasm");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, stderr) = check_with_plugin(&s, &path);
    assert!(!ok);
    assert!(stderr.contains("does not compile"), "{stderr}");
}

#[test]
fn inspect_describes_a_plugin_and_refuses_the_wrong_world() {
    let s = Scratch::new();
    let out = s
        .sluice(&[
            "plugin",
            "inspect",
            &plugin("word_split").display().to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sluice:plugin/processor@0.1.0"), "{stdout}");
    assert!(
        stdout.contains("imports:") && stdout.contains("size:"),
        "{stdout}"
    );
    assert!(stdout.contains("runs as a sluice stage"), "{stdout}");

    let out = s
        .sluice(&[
            "plugin",
            "inspect",
            &plugin("wrong_world").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not runnable as a sluice stage"));
}

#[test]
fn plugin_test_runs_a_plugin_over_a_file() {
    let s = Scratch::new();
    let input = s.path("in.txt");
    std::fs::write(&input, b"Hello World\nsecond  line\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["plugin", "test"];
        let wasm = plugin("word_split").display().to_string();
        let input = input.display().to_string();
        args.extend([wasm.as_str(), "--input", input.as_str()]);
        args.extend(extra);
        s.sluice(&args).output().unwrap()
    };
    let out = run(&["--config", "lowercase=true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\nworld\nsecond\nline\n"
    );

    // A record the plugin rejects is reported with its line, exit 1.
    std::fs::write(&input, b"ok\n\xff\xfe\nfine\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\nfine\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: failed: value is not valid UTF-8"),
        "{stderr}"
    );

    // A config the plugin rejects is an error, as in a pipeline.
    let out = run(&["--config", "lowercase=maybe"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected its config"));
}

#[test]
fn plugin_test_goes_on_with_a_new_instance_after_a_trap() {
    let s = Scratch::new();
    s.write("in.txt", "a\nboom\nb\nc\n");
    let wasm = plugin("misbehave").display().to_string();
    let out = s
        .sluice(&[
            "plugin",
            "test",
            &wasm,
            "--input",
            "in.txt",
            "--batch",
            "2",
            "--config",
            "mode=trap",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The first batch traps; the second goes through a fresh instance.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\nc\n", "{stderr}");
    assert!(
        stderr.contains("lines 1-2: plugin") && stderr.contains("trapped"),
        "{stderr}"
    );
    assert!(stderr.contains("a new instance"), "{stderr}");
}
