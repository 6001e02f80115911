//! The `sluice` command: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::control::{deploy, rollback, status};
use cli::plugin::{build_plugin, inspect_plugin, new_plugin, test_plugin};
use cli::run::{check, run};

/// Sluice: a stream engine whose processing stages are WebAssembly components.
///
/// A pipeline file (TOML) declares sources, a batch interval, a chain of
/// stages (each a Wasm component) and sinks. `sluice run` processes the stream
/// in micro-batches until every source ends or it is interrupted.
#[derive(Parser)]
#[command(name = "sluice", version, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `sluice=debug` (overrides RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    /// Log lines as text, or as one JSON object per line (for a log
    /// shipper; the fields `tenant`, `pipeline`, `stage`, `batch` are keys).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    log_format: sluice::telemetry::logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one or more pipelines until their sources end or Ctrl-C.
    ///
    /// On SIGINT or SIGTERM the sources stop reading, what they had read is
    /// processed and written, and sluice exits 0; a second signal exits at
    /// once. Exits 1 if a pipeline fails, 2 if a file is invalid.
    ///
    /// Plugins are hot-reloaded: when a stage's plugin file changes (rewritten
    /// or replaced by rename), the new version is compiled, checked and
    /// initialised beside the running one and goes live at the next batch
    /// boundary; a version that fails to load is rejected and the old one
    /// carries on. A new version that fails a batch during its first 10
    /// batches is rolled back and the batch redone by the previous version.
    Run {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Address of the control endpoint (`sluice deploy`, `status`,
        /// `rollback`), or `off`. Requests must carry the run's token,
        /// which is written to a file only this user can read (the log
        /// names it); keep it on loopback all the same.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
        control: String,
        /// Serve Prometheus metrics at `http://ADDR/metrics` and the live
        /// dashboard at `http://ADDR/ui/`. `/metrics` needs no token (give
        /// an address only your Prometheus reaches); the dashboard's data
        /// needs the run's control token, written to a file the log names.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Do not watch plugin files for new versions.
        #[arg(long)]
        no_watch: bool,
    },
    /// Deploy a new version of one stage's plugin to a running sluice.
    ///
    /// The running process compiles it, checks it implements the world and
    /// runs its `init` with the stage's config; it goes live at the next
    /// batch boundary. Exits 1, with the reason, if it is rejected.
    Deploy {
        /// Pipeline name.
        pipeline: String,
        /// Stage name.
        stage: String,
        /// The new version (a component `.wasm`).
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
        /// The running process's control endpoint.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
        control: String,
        /// The endpoint's token [default: the one `sluice run` wrote for
        /// this user, see its log].
        #[arg(
            long,
            env = "SLUICE_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        token: Option<String>,
        /// A `sluice serve` to talk to instead of a local `sluice run`
        /// (then the token is a tenant's, and FILE may be a stored
        /// plugin's name).
        #[arg(long, env = "SLUICE_SERVER", value_name = "URL")]
        server: Option<String>,
        /// The certificates to trust for an `https://` server (PEM).
        #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Put the previous version of a stage's plugin back, at the next batch.
    Rollback {
        /// Pipeline name.
        pipeline: String,
        /// Stage name.
        stage: String,
        /// The running process's control endpoint.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
        control: String,
        /// The endpoint's token [default: the one `sluice run` wrote for
        /// this user, see its log].
        #[arg(
            long,
            env = "SLUICE_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        token: Option<String>,
        /// A `sluice serve` to talk to instead of a local `sluice run`
        /// (then the token is a tenant's, and FILE may be a stored
        /// plugin's name).
        #[arg(long, env = "SLUICE_SERVER", value_name = "URL")]
        server: Option<String>,
        /// The certificates to trust for an `https://` server (PEM).
        #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Show each stage's live plugin version, earlier versions and recent
    /// reload events in a running sluice.
    Status {
        /// The running process's control endpoint.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
        control: String,
        /// The endpoint's token [default: the one `sluice run` wrote for
        /// this user, see its log].
        #[arg(
            long,
            env = "SLUICE_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        token: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// A `sluice serve` to ask instead of a local `sluice run` (then
        /// the token is a tenant's).
        #[arg(long, env = "SLUICE_SERVER", value_name = "URL")]
        server: Option<String>,
        /// The certificates to trust for an `https://` server (PEM).
        #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Check pipeline files without running them.
    ///
    /// Validates each file, compiles every plugin, checks it implements the
    /// `sluice:plugin/stage` world and that its `init` accepts the stage's
    /// config. Exits non-zero on the first problem in each file.
    Check {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Run the multi-tenant service: tenants upload plugins and run
    /// pipelines through its HTTP API.
    ///
    /// Everything it keeps is under `--data`: a catalogue of tenants,
    /// plugins and pipelines, each tenant's files root
    /// (`DATA/tenants/<t>/files/`), state and dead letters. On first start
    /// it writes an admin token to `DATA/admin-token` (unless
    /// SLUICE_ADMIN_TOKEN gives one). A restart, clean or not, brings every
    /// pipeline back from its checkpoint. SIGINT or SIGTERM stops it
    /// gracefully; a second signal exits at once. The API is described at
    /// `/v1/openapi.json`.
    Serve {
        /// The data folder.
        #[arg(long, default_value = "./sluice-data", value_name = "DIR")]
        data: PathBuf,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
        listen: String,
        /// Serve HTTPS with this certificate chain (PEM), with --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Worker threads running plugins [default: one per core].
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// Let tenants' pipelines reach network peers (Kafka, sockets,
        /// Elasticsearch, object storage, HTTP endpoints).
        #[arg(long)]
        allow_network: bool,
        /// A stage with no records for this long drops its Wasm instance.
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        idle_release: String,
    },
    /// Manage a service's tenants (admin token).
    Tenant {
        #[command(flatten)]
        remote: cli::service::Remote,
        #[command(subcommand)]
        command: cli::service::TenantCommand,
    },
    /// Manage a service's pipelines (a tenant's token).
    Pipeline {
        #[command(flatten)]
        remote: cli::service::Remote,
        #[command(subcommand)]
        command: cli::service::PipelineCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Upload a plugin to a service (a tenant's token): a new version
    /// under its name.
    Push {
        /// The component.
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
        /// The name to store it under [default: the file's name].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: cli::service::Remote,
    },
    /// List a service's plugins of this tenant, with their versions.
    List {
        #[command(flatten)]
        remote: cli::service::Remote,
    },
    /// Start a plugin project: a folder with a working stage to change.
    ///
    /// The stage appends its config's `suffix` to each value. The folder's
    /// name is the plugin's (lowercase letters, digits, `-`, `_`). Build it
    /// with `sluice plugin build DIR`; the folder's README has the loop.
    New {
        /// The folder to create; its last part names the plugin.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The language: rust (with the SDK), python, js (each with a helper
        /// that hides the batch encoding), c or go.
        #[arg(long, default_value = "rust", value_name = "LANG")]
        lang: sluice::plugin::project::Lang,
        /// The `sdk/` folder of the sluice repository: a Rust project depends
        /// on the SDK in it by path, a Go project on the bindings beside it
        /// (`plugins/go`). Defaults to the one this sluice was built from.
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin project into a component, with its language's tools.
    ///
    /// The language comes from the folder's files: `Cargo.toml` (Rust, built
    /// for wasm32-wasip2), `go.mod` (Go for wasip1, and wasm-tools), `app.py`
    /// (Python, componentize-py), `app.js` (JavaScript, componentize-js) or
    /// `.c` files (C, clang for wasm32-wasi and wasm-tools). Tools are found
    /// on PATH, or named by SLUICE_GO, SLUICE_CLANG, SLUICE_WASM_TOOLS,
    /// SLUICE_COMPONENTIZE_PY or SLUICE_COMPONENTIZE_JS;
    /// a missing one is named with the command that installs it. The WIT,
    /// the Python and JavaScript helpers and the C bindings come with
    /// sluice. The result is checked to link as a stage (the world's
    /// imports and exports).
    Build {
        /// The project folder.
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Where to write the component [default: DIR/<folder name>.wasm].
        #[arg(short, long, value_name = "FILE.wasm")]
        out: Option<PathBuf>,
    },
    /// Show a component's imports, exports and size, and whether sluice can
    /// run it as a stage.
    Inspect {
        /// A WebAssembly component (`.wasm`).
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
    },
    /// Run a plugin over the lines of a file and print what it emits.
    ///
    /// Each line is one record (value only), as the stdin and directory
    /// sources make them; the output goes to standard output, records the
    /// plugin rejects to standard error with their line number. The plugin
    /// runs in the same sandbox and limits as in a pipeline. Exits 1 if a
    /// record or a batch failed. The fast loop of a plugin author.
    Test {
        /// A WebAssembly component (`.wasm`).
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
        /// Records, one per line (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// A config entry handed to `init`; repeat for more.
        #[arg(long, value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Output format: `text` (value, or key<TAB>value) or `jsonl`.
        #[arg(long, default_value = "text")]
        format: String,
        /// Lines per batch (each batch is one `process` call).
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice::telemetry::logging::init(cli.log.as_deref(), cli.log_format);
    let result = match cli.command {
        Command::Run {
            files,
            control,
            metrics,
            no_watch,
        } => run(files, &control, metrics.as_deref(), !no_watch),
        Command::Deploy {
            pipeline,
            stage,
            file,
            control,
            token,
            server,
            ca_cert,
        } => match server {
            Some(server) => {
                cli::service::deploy(&remote(server, token, ca_cert), &pipeline, &stage, &file)
            }
            None => deploy(&control, token.as_deref(), &pipeline, &stage, &file),
        },
        Command::Rollback {
            pipeline,
            stage,
            control,
            token,
            server,
            ca_cert,
        } => match server {
            Some(server) => {
                cli::service::rollback(&remote(server, token, ca_cert), &pipeline, &stage)
            }
            None => rollback(&control, token.as_deref(), &pipeline, &stage),
        },
        Command::Status {
            control,
            token,
            json,
            server,
            ca_cert,
        } => match server {
            Some(server) => cli::service::pipeline(
                &remote(server, token, ca_cert),
                cli::service::PipelineCommand::List,
            ),
            None => status(&control, token.as_deref(), json),
        },
        Command::Serve {
            data,
            listen,
            tls_cert,
            tls_key,
            workers,
            allow_network,
            idle_release,
        } => match sluice::units::HumanDuration::parse(&idle_release) {
            Ok(idle) => cli::serve::serve(cli::serve::ServeArgs {
                data,
                listen,
                tls_cert,
                tls_key,
                workers,
                allow_network,
                idle_release: idle.0,
            }),
            Err(e) => Err(anyhow::anyhow!("--idle-release: {e}")),
        },
        Command::Tenant { remote, command } => cli::service::tenant(&remote, command),
        Command::Pipeline { remote, command } => cli::service::pipeline(&remote, command),
        Command::Plugin {
            command: PluginCommand::Push { file, name, remote },
        } => cli::service::push(&remote, &file, name),
        Command::Plugin {
            command: PluginCommand::List { remote },
        } => cli::service::plugins(&remote),
        Command::Check { files } => check(files),
        Command::Plugin {
            command: PluginCommand::Inspect { file },
        } => inspect_plugin(file),
        Command::Plugin {
            command: PluginCommand::New { dir, lang, sdk },
        } => new_plugin(&dir, lang, sdk),
        Command::Plugin {
            command: PluginCommand::Build { dir, out },
        } => build_plugin(&dir, out.as_deref()),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    file,
                    input,
                    config,
                    format,
                    batch,
                },
        } => test_plugin(&file, &input, &config, &format, batch),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// The service at `server`, asked with `token`.
fn remote(server: String, token: Option<String>, ca_cert: Option<PathBuf>) -> cli::service::Remote {
    cli::service::Remote {
        server,
        token,
        token_file: None,
        ca_cert,
    }
}

/// Where `sluice run` listens for control requests unless told otherwise.
const DEFAULT_CONTROL: &str = "127.0.0.1:7077";
