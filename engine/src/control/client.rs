//! The client side of the control endpoint, for the `sluice` commands that
//! talk to a running process: one request, one response.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body (JSON).
    pub body: String,
}

/// Sends one request to the control endpoint at `address`, with `token`
/// as its bearer token when there is one.
pub fn request(
    address: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// `GET /status` as text: each pipeline, its stages' live versions, earlier
/// versions and recent events.
pub fn render_status(body: &str) -> Result<String, serde_json::Error> {
    use std::fmt::Write as _;
    let pipelines: Vec<serde_json::Value> = serde_json::from_str(body)?;
    let mut out = String::new();
    for p in &pipelines {
        let _ = writeln!(out, "pipeline {}", p["pipeline"].as_str().unwrap_or("?"));
        for s in p["stages"].as_array().into_iter().flatten() {
            let probation = if s["probation"].as_bool() == Some(true) {
                " (on probation)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  stage {}: {}{probation}",
                s["stage"].as_str().unwrap_or("?"),
                s["current"]["label"].as_str().unwrap_or("?")
            );
            let previous: Vec<&str> = s["previous"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["label"].as_str())
                .collect();
            if !previous.is_empty() {
                let _ = writeln!(out, "    earlier: {}", previous.join(", "));
            }
            for event in s["events"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "    {}", event.as_str().unwrap_or(""));
            }
        }
    }
    Ok(out)
}
