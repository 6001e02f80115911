//! The commands that talk to a `sluice serve`: tenants (admin), plugins and
//! pipelines (a tenant's), over its HTTP API. Each prints the answer (JSON,
//! indented) and exits 1 with the service's `error` when refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use sluice::control::client::{Client, Response};

/// Where the service is and who is asking.
#[derive(Args, Clone)]
pub struct Remote {
    /// The service's URL.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL"
    )]
    pub server: String,
    /// The bearer token (a tenant's, or the admin's for `tenant`
    /// commands). Prefer the environment variable: others can see
    /// command lines.
    #[arg(
        long,
        global = true,
        env = "SLUICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the token (e.g. the service's `DATA/admin-token`).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The certificates to trust for an `https://` server (PEM) [default:
    /// the system's].
    #[arg(long, global = true, env = "SLUICE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the token from {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Client::new(&self.server, token, self.ca_cert.as_deref()).map_err(anyhow::Error::msg)
    }

    /// One request; a connection that fails names the server.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        self.client()?
            .request(method, path, content_type, body)
            .with_context(|| format!("cannot reach the service at {}", self.server))
    }
}

/// `sluice tenant …` (admin token).
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its token (shown once).
    Create {
        /// Letters, digits, `-`, `_`, `.`.
        name: String,
        /// A quota, as `key=value` (`pipelines=5`, `memory=1GiB`); repeat.
        #[arg(long = "quota", value_name = "KEY=VALUE")]
        quotas: Vec<String>,
    },
    /// List tenants with their quotas and usage.
    List,
    /// Change a tenant's quotas.
    Quota {
        /// The tenant.
        name: String,
        /// `key=value`; repeat.
        #[arg(required = true, value_name = "KEY=VALUE")]
        quotas: Vec<String>,
    },
    /// Give a tenant a new token (the old one stops working).
    Token {
        /// The tenant.
        name: String,
    },
    /// Delete a tenant with its pipelines, plugins and files (what its
    /// pipelines hold is dropped unprocessed).
    Delete {
        /// The tenant.
        name: String,
    },
}

/// `sluice pipeline …` (a tenant's token).
#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Create or replace a pipeline from its file and start it.
    Apply {
        /// The pipeline file (TOML); its `name` names the pipeline.
        file: PathBuf,
    },
    /// List the pipelines with their status.
    List,
    /// One pipeline's status.
    Get {
        /// The pipeline.
        name: String,
    },
    /// Stop a pipeline (its batches in flight are finished and checkpointed).
    Stop {
        /// The pipeline.
        name: String,
    },
    /// Start a stopped pipeline from its checkpoint.
    Start {
        /// The pipeline.
        name: String,
    },
    /// Delete a pipeline with its state and dead letters; the batches it
    /// holds are dropped unprocessed (`stop` first to have them finished).
    Delete {
        /// The pipeline.
        name: String,
    },
    /// Send records to a pipeline's `http` source.
    Ingest {
        /// The pipeline.
        name: String,
        /// The records: lines, or JSON with `--content-type` (`-` for
        /// standard input).
        #[arg(default_value = "-")]
        file: PathBuf,
        /// `text/plain`, `application/x-ndjson` or `application/json`.
        #[arg(long, default_value = "text/plain")]
        content_type: String,
    },
    /// The newest dead-lettered records, with their reasons.
    DeadLetters {
        /// The pipeline.
        name: String,
    },
}

fn quotas_json(pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut quotas = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("`{pair}`: expected KEY=VALUE"))?;
        let value = match value.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(value),
        };
        quotas.insert(key.to_string(), value);
    }
    Ok(serde_json::Value::Object(quotas))
}

/// Prints a response: its JSON indented, or the error.
fn show(response: Response) -> anyhow::Result<ExitCode> {
    let value: Option<serde_json::Value> = serde_json::from_str(&response.body).ok();
    if (200..300).contains(&response.status) {
        match value {
            Some(value) => println!("{}", serde_json::to_string_pretty(&value)?),
            None if response.body.is_empty() => {}
            None => println!("{}", response.body),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let error = value
        .as_ref()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(response.body);
    eprintln!("error: {} ({})", error, response.status);
    Ok(ExitCode::from(1))
}

/// `sluice tenant …`.
pub fn tenant(remote: &Remote, command: TenantCommand) -> anyhow::Result<ExitCode> {
    let json = Some("application/json");
    match command {
        TenantCommand::Create { name, quotas } => {
            let body = serde_json::json!({ "name": name, "quotas": quotas_json(&quotas)? });
            show(remote.call("POST", "/v1/tenants", json, body.to_string().as_bytes())?)
        }
        TenantCommand::List => show(remote.call("GET", "/v1/tenants", None, &[])?),
        TenantCommand::Quota { name, quotas } => {
            let body = serde_json::json!({ "quotas": quotas_json(&quotas)? });
            show(remote.call(
                "PATCH",
                &format!("/v1/tenants/{name}"),
                json,
                body.to_string().as_bytes(),
            )?)
        }
        TenantCommand::Token { name } => {
            show(remote.call("POST", &format!("/v1/tenants/{name}/token"), None, &[])?)
        }
        TenantCommand::Delete { name } => {
            show(remote.call("DELETE", &format!("/v1/tenants/{name}"), None, &[])?)
        }
    }
}

/// `sluice plugin push FILE.wasm --name N`.
pub fn push(remote: &Remote, file: &Path, name: Option<String>) -> anyhow::Result<ExitCode> {
    let bytes = sluice::plugin::read_plugin(file)?;
    let name = name
        .or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
        })
        .context("name the plugin with --name")?;
    show(remote.call(
        "PUT",
        &format!("/v1/plugins/{name}"),
        Some("application/wasm"),
        &bytes,
    )?)
}

/// `sluice plugin list`.
pub fn plugins(remote: &Remote) -> anyhow::Result<ExitCode> {
    show(remote.call("GET", "/v1/plugins", None, &[])?)
}

/// `sluice pipeline …`.
pub fn pipeline(remote: &Remote, command: PipelineCommand) -> anyhow::Result<ExitCode> {
    match command {
        PipelineCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let parsed: toml::Table =
                toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
            let name = parsed
                .get("name")
                .and_then(|n| n.as_str())
                .with_context(|| format!("{} has no `name`", file.display()))?;
            show(remote.call(
                "PUT",
                &format!("/v1/pipelines/{name}"),
                Some("application/toml"),
                text.as_bytes(),
            )?)
        }
        PipelineCommand::List => show(remote.call("GET", "/v1/pipelines", None, &[])?),
        PipelineCommand::Get { name } => {
            show(remote.call("GET", &format!("/v1/pipelines/{name}"), None, &[])?)
        }
        PipelineCommand::Stop { name } => {
            show(remote.call("POST", &format!("/v1/pipelines/{name}/stop"), None, &[])?)
        }
        PipelineCommand::Start { name } => {
            show(remote.call("POST", &format!("/v1/pipelines/{name}/start"), None, &[])?)
        }
        PipelineCommand::Delete { name } => {
            show(remote.call("DELETE", &format!("/v1/pipelines/{name}"), None, &[])?)
        }
        PipelineCommand::Ingest {
            name,
            file,
            content_type,
        } => {
            let body = if file.as_os_str() == "-" {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
                body
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            show(remote.call(
                "POST",
                &format!("/v1/pipelines/{name}/ingest"),
                Some(&content_type),
                &body,
            )?)
        }
        PipelineCommand::DeadLetters { name } => show(remote.call(
            "GET",
            &format!("/v1/pipelines/{name}/dead-letters"),
            None,
            &[],
        )?),
    }
}

/// `sluice deploy PIPELINE STAGE PLUGIN --server URL`: PLUGIN is a stored
/// plugin's name (`name` or `name@sha256:…`), or a `.wasm` file, pushed
/// first under its file's name.
pub fn deploy(
    remote: &Remote,
    pipeline: &str,
    stage: &str,
    plugin: &Path,
) -> anyhow::Result<ExitCode> {
    let reference = if plugin.extension().is_some_and(|e| e == "wasm") && plugin.is_file() {
        let bytes = sluice::plugin::read_plugin(plugin)?;
        let name = plugin
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_default();
        let pushed = remote.call(
            "PUT",
            &format!("/v1/plugins/{name}"),
            Some("application/wasm"),
            &bytes,
        )?;
        if !(200..300).contains(&pushed.status) {
            return show(pushed);
        }
        let digest: serde_json::Value = serde_json::from_str(&pushed.body)?;
        format!("{name}@{}", digest["digest"].as_str().unwrap_or_default())
    } else {
        plugin.to_string_lossy().into_owned()
    };
    let body = serde_json::json!({ "plugin": reference });
    show(remote.call(
        "POST",
        &format!("/v1/pipelines/{pipeline}/stages/{stage}/deploy"),
        Some("application/json"),
        body.to_string().as_bytes(),
    )?)
}

/// `sluice rollback PIPELINE STAGE --server URL`.
pub fn rollback(remote: &Remote, pipeline: &str, stage: &str) -> anyhow::Result<ExitCode> {
    show(remote.call(
        "POST",
        &format!("/v1/pipelines/{pipeline}/stages/{stage}/rollback"),
        None,
        &[],
    )?)
}
