//! Builds the guest plugins (the example plugins in `plugins/` and the test
//! plugins in `tests/plugins/`) for `wasm32-wasip2` with one cargo
//! invocation, and hands the tests the folder they land in
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
    println!("cargo:rustc-env=SLUICE_PLUGINS={}", plugins.display());

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
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
    for (dir, name) in [("plugins/python/word-split", "word_split_py")] {
        let output = Command::new(&tool)
            .current_dir(root.join(dir))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-d",
                "../../../wit",
                "-w",
                "stage",
                "componentize",
                "app",
                "-o",
            ])
            .arg(out.join(format!("{name}.wasm")))
            .output()
            .expect("running componentize-py");
        if !output.status.success() {
            panic!(
                "building {dir} with componentize-py failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
