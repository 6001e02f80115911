//! The client side, for the `sluice` commands that talk to a running
//! engine (`sluice run`'s control endpoint) or a service (`sluice serve`):
//! one request, one response, over plain TCP or TLS. For `https://`
//! servers the certificate is checked against `--ca-cert` (a PEM file) or
//! else the system's bundle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A response: status code, headers and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body (JSON, mostly).
    pub body: String,
}

/// Where requests go.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

/// Where the system keeps its trusted certificates (Debian and
/// derivatives; others via `--ca-cert`).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Client {
    /// A client of `url` (`http://host:port` or `https://host:port`),
    /// sending `token`; `ca` is the PEM file of the certificates to trust
    /// for `https` (else the system's).
    pub fn new(url: &str, token: Option<String>, ca: Option<&Path>) -> Result<Client, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            (false, url)
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host.to_string(),
                port.parse()
                    .map_err(|_| format!("`{url}`: the port `{port}` is not a number"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let tls = if tls { Some(tls_config(ca)?) } else { None };
        Ok(Client {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls,
            token,
        })
    }

    /// Sends one request; `content_type` for a body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let raw = match &self.tls {
            None => exchange(stream, head.as_bytes(), body)?,
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| std::io::Error::other(format!("`{}`: {e}", self.host)))?;
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                exchange(
                    rustls::StreamOwned::new(connection, stream),
                    head.as_bytes(),
                    body,
                )?
            }
        };
        parse(&raw)
    }
}

fn exchange(mut stream: impl Read + Write, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        // A TLS peer that closes without close_notify after the whole
        // response: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

/// The body of a chunked response.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A TLS client configuration (rustls on ring) trusting the certificates in
/// the PEM file `ca`, or the system's. Also the MQTT connectors' TLS.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let file = ca.unwrap_or(Path::new(SYSTEM_CAS));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| {
        format!(
            "cannot read the certificates to trust from {}: {e}",
            file.display()
        )
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends one request to the control endpoint at `address` (plain HTTP),
/// with `token` as its bearer token when there is one.
pub fn request(
    address: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let client =
        Client::new(address, token.map(str::to_string), None).map_err(std::io::Error::other)?;
    client.request(method, path, None, body)
}

/// `GET /status` as text: each pipeline, its stages' live versions, earlier
/// versions and recent events.
pub fn render_status(body: &str) -> Result<String, serde_json::Error> {
    use std::fmt::Write as _;
    let pipelines: Vec<serde_json::Value> = serde_json::from_str(body)?;
    let mut out = String::new();
    for p in &pipelines {
        let _ = writeln!(out, "pipeline {}", p["pipeline"].as_str().unwrap_or("?"));
        if let Some(tasks) = p.get("tasks") {
            let tasks: Vec<crate::tasks::TaskStatus> =
                serde_json::from_value(tasks.clone()).unwrap_or_default();
            let _ = writeln!(out, "  tasks: {}", crate::tasks::board::summary(&tasks));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses_are_read() {
        let c = Client::new("http://127.0.0.1:7070", None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 7070));
        let c = Client::new("localhost:9", None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 9));
        assert!(Client::new("http://:80", None, None).is_err());
        let r = parse(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{}"));
        let r = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
    }
}
