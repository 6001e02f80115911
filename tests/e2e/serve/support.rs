//! A `sluice serve` of a test's own (a data folder in a scratch directory, a
//! free port, its admin token read from the file it writes), and a plain
//! HTTP client for its API that records every (method, path template,
//! status) it sees, so the OpenAPI test can compare them with the document.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Every (port, method, path template, status) a test saw, for the
/// OpenAPI test (which looks at its own server's port only).
pub static SEEN: Mutex<Vec<(u16, String, String, u16)>> = Mutex::new(Vec::new());

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running service.
pub struct Server {
    pub scratch: Scratch,
    pub port: u16,
    pub child: Option<Child>,
    pub admin: String,
    extra: Vec<String>,
    log_filter: Option<String>,
}

/// An answer: status, headers and body (JSON when it parses).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: Value,
    /// The body as text: read only through `Debug`, in failure messages
    /// about answers that are not JSON.
    #[allow(dead_code)]
    pub text: String,
}

impl Server {
    /// Starts a service with `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_logging(extra, None)
    }

    /// Starts a service with `extra` arguments, logging as `filter` says.
    pub fn start_logging(extra: &[&str], filter: Option<&str>) -> Server {
        let scratch = Scratch::new();
        let port = free_port();
        let mut server = Server {
            scratch,
            port,
            child: None,
            admin: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_filter: filter.map(str::to_string),
        };
        server.launch();
        server.admin = std::fs::read_to_string(server.data().join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        server
    }

    /// The data folder.
    pub fn data(&self) -> PathBuf {
        self.scratch.path("data")
    }

    /// A tenant's files root.
    pub fn files(&self, tenant: &str) -> PathBuf {
        self.data().join("tenants").join(tenant).join("files")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path("serve.log"))
            .unwrap();
        let mut args = vec![
            "serve".to_string(),
            "--data".into(),
            self.data().display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
        ];
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.scratch.sluice(&args);
        if let Some(filter) = &self.log_filter {
            command.env("RUST_LOG", filter);
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let port = self.port;
        if self.extra.iter().any(|a| a == "--tls-cert") {
            // HTTPS: it listens once its admin token is written.
            let token = self.data().join("admin-token");
            eventually(Duration::from_secs(30), "the service to listen", || {
                token.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            return;
        }
        eventually(Duration::from_secs(30), "the service to answer", || {
            raw(port, "GET", "/v1/health", None, None, &[]).is_some_and(|a| a.status == 200)
        });
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("serve.log")).unwrap_or_default()
    }

    /// `kill -9`, then a new process on the same data folder and port.
    pub fn kill_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.launch();
    }

    /// SIGTERM; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        terminate(&child);
        wait_deadline(&mut child, Duration::from_secs(60))
    }

    /// SIGTERM, then start again on the same data folder and port.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "{}", self.log());
        self.launch();
    }

    /// One request as `token` (or none), recorded for the OpenAPI test.
    pub fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let answer = raw(self.port, method, path, token, content_type, body)
            .unwrap_or_else(|| panic!("no answer to {method} {path}\n{}", self.log()));
        SEEN.lock()
            .unwrap()
            .push((self.port, method.to_string(), template(path), answer.status));
        answer
    }

    /// A JSON request.
    pub fn json(&self, token: Option<&str>, method: &str, path: &str, body: &Value) -> Answer {
        self.call(
            token,
            method,
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// Creates a tenant; returns its token.
    pub fn tenant(&self, name: &str, quotas: Value) -> String {
        let answer = self.json(
            Some(&self.admin),
            "POST",
            "/v1/tenants",
            &serde_json::json!({ "name": name, "quotas": quotas }),
        );
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["token"].as_str().unwrap().to_string()
    }

    /// Uploads a built plugin (by crate name) under `name`.
    pub fn push(&self, token: &str, name: &str, plugin_crate: &str) -> Answer {
        let bytes = std::fs::read(plugin(plugin_crate)).unwrap();
        self.call(
            Some(token),
            "PUT",
            &format!("/v1/plugins/{name}"),
            Some("application/wasm"),
            &bytes,
        )
    }

    /// Applies a pipeline file.
    pub fn apply(&self, token: &str, name: &str, text: &str) -> Answer {
        self.call(
            Some(token),
            "PUT",
            &format!("/v1/pipelines/{name}"),
            Some("application/toml"),
            text.as_bytes(),
        )
    }

    /// Sends lines to a pipeline's `http` source, waiting out `429`s.
    pub fn ingest(&self, token: &str, name: &str, lines: &str) {
        for _ in 0..600 {
            let answer = self.call(
                Some(token),
                "POST",
                &format!("/v1/pipelines/{name}/ingest"),
                Some("text/plain"),
                lines.as_bytes(),
            );
            match answer.status {
                200 => return,
                429 | 404 => std::thread::sleep(Duration::from_millis(100)),
                _ => panic!("ingest to {name}: {answer:?}"),
            }
        }
        panic!("ingest to {name} kept failing\n{}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The path template a path matches in the API (`/v1/pipelines/{name}`).
pub fn template(path: &str) -> String {
    let path = path.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let named: Vec<String> = match parts.as_slice() {
        ["v1", "tenants", _] => vec!["v1".into(), "tenants".into(), "{tenant}".into()],
        ["v1", "tenants", _, "token"] => {
            vec![
                "v1".into(),
                "tenants".into(),
                "{tenant}".into(),
                "token".into(),
            ]
        }
        ["v1", "plugins", _] => vec!["v1".into(), "plugins".into(), "{name}".into()],
        ["v1", "pipelines", _] => vec!["v1".into(), "pipelines".into(), "{name}".into()],
        ["ui", "api", "pipelines", _] => {
            vec![
                "ui".into(),
                "api".into(),
                "pipelines".into(),
                "{name}".into(),
            ]
        }
        ["v1", "pipelines", _, "stages", _, action] => vec![
            "v1".into(),
            "pipelines".into(),
            "{name}".into(),
            "stages".into(),
            "{stage}".into(),
            action.to_string(),
        ],
        ["v1", "pipelines", _, action] => vec![
            "v1".into(),
            "pipelines".into(),
            "{name}".into(),
            action.to_string(),
        ],
        other => other.iter().map(|s| s.to_string()).collect(),
    };
    format!("/{}", named.join("/"))
}

/// One request over a fresh connection; `None` if nothing answered.
pub fn raw(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).ok()?;
    // The body goes on its own thread: a server may answer (413, say)
    // before taking all of it.
    let mut writer = stream.try_clone().ok()?;
    let body = body.to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    if read.is_err() && raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n")?;
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some(Answer {
        status,
        headers: headers.to_string(),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        text: body,
    })
}

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

/// Word count for a tenant: `http` + `directory` sources, word-split and
/// word-count (stored as `split` and `count`), a directory sink in `out`.
pub fn wordcount(name: &str, extra_source: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\n\
         [[sources]]\ntype = \"http\"\n\
         [[sources]]\ntype = \"directory\"\npath = \"in\"\nsettle = \"200ms\"\n{extra_source}\n\
         [[stages]]\nname = \"split\"\nplugin = \"split\"\n\
         [[stages]]\nname = \"count\"\nplugin = \"count\"\n\
         [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"jsonl\"\n"
    )
}

/// Word totals from word-count's output files in `dir`.
pub fn counted(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    totals(&read_jsonl_dir(dir))
}
