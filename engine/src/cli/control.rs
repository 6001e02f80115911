//! `sluice deploy`, `rollback` and `status`: requests to a running engine's
//! control endpoint.

use std::process::ExitCode;

use anyhow::Context;

use sluice::control::client;

/// One request to the control endpoint at `control`; a connection that
/// fails says how to start one.
fn control_request(
    control: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<client::Response> {
    client::request(control, method, path, body)
        .with_context(|| format!("cannot reach a running sluice at {control} (is it running, with `--control {control}`?)"))
}

/// A string field of a JSON body, or "" when it has none.
fn json_field(body: &str, field: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v[field].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The `error` field of a JSON error body, or the body itself.
fn error_text(body: &str) -> String {
    match json_field(body, "error") {
        e if e.is_empty() => body.to_string(),
        e => e,
    }
}

/// `sluice deploy`: sends a new plugin version for one stage.
pub fn deploy(
    control: &str,
    pipeline: &str,
    stage: &str,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name: String = file
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect()
        })
        .unwrap_or_default();
    let response = control_request(
        control,
        "POST",
        &format!("/deploy/{pipeline}/{stage}?name={name}"),
        &bytes,
    )?;
    if response.status == 200 {
        let version = json_field(&response.body, "version");
        println!("deployed {version} to {pipeline}/{stage}: live at the next batch");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} rejected: {}",
            file.display(),
            error_text(&response.body)
        );
        Ok(ExitCode::from(1))
    }
}

/// `sluice rollback`: puts a stage's previous version back.
pub fn rollback(control: &str, pipeline: &str, stage: &str) -> anyhow::Result<ExitCode> {
    let response = control_request(
        control,
        "POST",
        &format!("/rollback/{pipeline}/{stage}"),
        &[],
    )?;
    if response.status == 200 {
        let version = json_field(&response.body, "version");
        println!("rolling {pipeline}/{stage} back to {version} at the next batch");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {}", error_text(&response.body));
        Ok(ExitCode::from(1))
    }
}

/// `sluice status`: the running pipelines and their stages, as a table or
/// as JSON.
pub fn status(control: &str, json: bool) -> anyhow::Result<ExitCode> {
    let response = control_request(control, "GET", "/status", &[])?;
    if json {
        println!("{}", response.body);
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        client::render_status(&response.body).context("reading the status")?
    );
    Ok(ExitCode::SUCCESS)
}
