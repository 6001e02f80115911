//! Finding 9: the control endpoint of `sluice run` accepted anyone (any
//! local process, or a web page through the browser), and slow clients or
//! withheld bodies could hold its slots and pin memory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline with one stage and the control endpoint on `port`, with
/// token files in `runtime` (a folder of the test's own).
fn start(s: &Scratch, port: u16) -> Child {
    s.mkdir("in");
    s.mkdir("runtime");
    s.write(
        "p.toml",
        &format!(
            "name = \"ctl\"\nbatch_interval = \"100ms\"\n\
             [[sources]]\ntype = \"directory\"\npath = \"in\"\n\
             [[stages]]\nname = \"case\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"null\"\n",
            plugin("uppercase").display()
        ),
    );
    let child = s
        .sluice(&["run", "p.toml", "--control", &format!("127.0.0.1:{port}")])
        .env("SLUICE_RUNTIME_DIR", s.path("runtime"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let token_file = s.path(&format!("runtime/control-127.0.0.1-{port}.token"));
    eventually(Duration::from_secs(20), "the token file", || {
        token_file.exists()
    });
    eventually(Duration::from_secs(20), "the endpoint", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// One raw request; returns the status code (0 if none came).
fn request(port: u16, head: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get_status(port: u16, headers: &str) -> u16 {
    request(
        port,
        &format!("GET /status HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"),
    )
}

#[test]
fn only_the_runs_token_from_outside_a_browser_reaches_the_endpoint() {
    let s = Scratch::new();
    let port = free_port();
    let child = start(&s, port);
    let token_file = s.path(&format!("runtime/control-127.0.0.1-{port}.token"));
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is the user's alone");

    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let auth = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(get_status(port, &host), 401, "no token");
    assert_eq!(
        get_status(port, &format!("{host}Authorization: Bearer nope\r\n")),
        401,
        "a wrong token"
    );
    assert_eq!(get_status(port, &format!("{host}{auth}")), 200);
    assert_eq!(
        get_status(
            port,
            &format!("{host}{auth}Origin: http://evil.example\r\n")
        ),
        403,
        "a web page"
    );
    assert_eq!(
        get_status(port, &format!("Host: evil.example:{port}\r\n{auth}")),
        403,
        "DNS rebinding: another host name"
    );
    // A deploy without the token changes nothing.
    let body = std::fs::read(plugin("lowercase")).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(
            format!(
                "POST /deploy/ctl/case HTTP/1.1\r\n{host}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let _ = stream.write_all(&body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");

    // The commands find the token themselves.
    let out = s
        .sluice(&[
            "status",
            "--json",
            "--control",
            &format!("127.0.0.1:{port}"),
        ])
        .env("SLUICE_RUNTIME_DIR", s.path("runtime"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("uppercase.wasm@"));
    // Without it, they say where they looked.
    let out = s
        .sluice(&["status", "--control", &format!("127.0.0.1:{port}")])
        .env("SLUICE_RUNTIME_DIR", s.path("elsewhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("asks for its token"), "{stderr}");

    let mut child = child;
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
    assert!(!token_file.exists(), "the token file goes with the run");
}

#[test]
fn stalled_clients_neither_block_the_endpoint_nor_pin_memory() {
    let s = Scratch::new();
    let port = free_port();
    let mut child = start(&s, port);
    let token = std::fs::read_to_string(s.path(&format!("runtime/control-127.0.0.1-{port}.token")))
        .unwrap()
        .trim()
        .to_string();
    let rss_before = current_rss(child.id());
    // Sixteen uploads that announce 60 MiB and send 1 KiB.
    let mut withheld = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /deploy/ctl/case HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            60 << 20
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&[0u8; 1024]).unwrap();
        withheld.push(stream);
    }
    // Eighty connections that send nothing at all.
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let grown = current_rss(child.id()).saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "withheld uploads pinned {} MiB",
        grown >> 20
    );
    // The stalled connections are dropped after 5 s; the endpoint answers.
    let started = Instant::now();
    let out = s
        .sluice(&["status", "--control", &format!("127.0.0.1:{port}")])
        .env("SLUICE_RUNTIME_DIR", s.path("runtime"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "status took {:?} behind stalled clients",
        started.elapsed()
    );
    drop((withheld, idle));
    terminate(&child);
    assert!(wait_deadline(&mut child, Duration::from_secs(30)).success());
}

fn current_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}
