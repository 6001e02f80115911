//! `sluice serve --tls-cert --tls-key`: the API over HTTPS, reached by the
//! command-line client with the certificate to trust, refused without it,
//! and not spoken in plain HTTP.

use std::process::Command;

use super::support::*;
use crate::support::*;

#[test]
fn the_api_over_tls_with_the_cli_client() {
    let keys = Scratch::new();
    let (ca, cert, key) = (
        keys.path("ca.pem"),
        keys.path("cert.pem"),
        keys.path("key.pem"),
    );
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(keys.dir.path())
            .output()
            .expect("running openssl (tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // A certificate authority of the test's own, and a server certificate
    // it signs for localhost.
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=sluice test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    keys.write(
        "ext.cnf",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}", server.port);
    let token_file = server.data().join("admin-token");
    let cli = |extra: &[&str]| {
        let mut args = vec!["tenant", "create", "acme", "--server", &url, "--token-file"];
        let file = token_file.to_str().unwrap();
        args.push(file);
        args.extend_from_slice(extra);
        server.scratch.sluice(&args).output().unwrap()
    };
    // Without the certificate to trust, the client refuses the server.
    let refused = cli(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot reach the service"), "{stderr}");
    // With it, the call goes through.
    let made = cli(&["--ca-cert", ca.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&made.stderr),
        server.log()
    );
    let answer: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(answer["name"], "acme");
    assert!(answer["token"].as_str().unwrap().starts_with("sl_"));
    // Plain HTTP gets no answer from the TLS port.
    let plain = raw(server.port, "GET", "/v1/health", None, None, b"");
    assert!(plain.as_ref().is_none_or(|a| a.status != 200), "{plain:?}");
}
