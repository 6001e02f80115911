//! `sluice deploy`, `rollback` and `status`: requests to a running engine's
//! control endpoint.

use std::process::ExitCode;

use anyhow::Context;

use sluice::control::{client, token};

/// One request to the control endpoint at `control`, with `token` or else
/// the token `sluice run` left for this user; a connection that fails says
/// how to start one.
fn control_request(
    control: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<client::Response> {
    let found = token
        .map(str::to_string)
        .or_else(|| token::read_for(control));
    let response = client::request(control, found.as_deref(), method, path, body)
        .with_context(|| format!("cannot reach a running sluice at {control} (is it running, with `--control {control}`?)"))?;
    if response.status == 401 && found.is_none() {
        let place = token::path_for(control).map_or_else(
            || "nowhere (HOME is not set)".to_string(),
            |p| p.display().to_string(),
        );
        anyhow::bail!(
            "the sluice at {control} asks for its token, and there is none at {place}: \
             run this command as the user who started it, or pass `--token`"
        );
    }
    Ok(response)
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
    token: Option<&str>,
    pipeline: &str,
    stage: &str,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let bytes = sluice::plugin::read_plugin(file)?;
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
        token,
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
pub fn rollback(
    control: &str,
    token: Option<&str>,
    pipeline: &str,
    stage: &str,
) -> anyhow::Result<ExitCode> {
    let response = control_request(
        control,
        token,
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
pub fn status(control: &str, token: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let response = control_request(control, token, "GET", "/status", &[])?;
    if response.status != 200 {
        eprintln!("error: {}", error_text(&response.body));
        return Ok(ExitCode::from(1));
    }
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
