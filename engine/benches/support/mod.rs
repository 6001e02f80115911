//! Shared by the benchmarks: building the guest plugins once per run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the guest workspace (`plugins/Cargo.toml`, wasm32-wasip2) and
/// returns the folder of `.wasm` files.
pub fn guests() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--manifest-path",
        ])
        .arg(root.join("plugins/Cargo.toml"))
        .status()
        .expect("running cargo for the guests");
    assert!(status.success(), "building the guest plugins failed");
    root.join("plugins/target/wasm32-wasip2/release")
}

/// `sluice run PIPELINE` as the benchmarks run it: no control endpoint, no
/// plugin-file watching, output discarded.
#[allow(dead_code)] // not every benchmark runs the binary
pub fn sluice_run(pipeline: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args([
        "run",
        pipeline.to_str().unwrap(),
        "--control",
        "off",
        "--no-watch",
    ])
    .stdout(std::process::Stdio::null());
    cmd
}
