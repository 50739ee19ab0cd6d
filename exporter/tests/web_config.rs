//! `--web.config.file`: TLS, client certificates, basic auth and headers on
//! the real binary over loopback; changes to the file without a restart;
//! files refused at start; a real Prometheus scraping over TLS. No pins are needed: the exporter then serves
//! its health metrics.

mod tls;

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use podmeter_tests::{exporter::sample, http, prometheus::Prometheus};
use tls::{client, get, users, Ca, Setup, BIN};

const PROMETHEUS: (&str, &str) = ("prometheus", "s3cret:with colon");

#[test]
fn tls_and_basic_auth_guard_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        dir.path(),
        "",
        &format!(
            "{}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            users(&[PROMETHEUS, ("other", "pw")])
        ),
    );
    let mut exporter = setup.start(dir.path(), &[]);
    assert!(exporter.log().contains("tls=true"), "{}", exporter.log());
    let https = client(&setup.ca.cert_file, None);

    let ok = get(exporter.addr, &https, "/metrics", Some(PROMETHEUS)).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(sample(&ok.body, "podmeter_exporter_scrape_duration_seconds").is_some());
    assert!(
        ok.head.contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );
    assert_eq!(
        get(exporter.addr, &https, "/", Some(("other", "pw")))
            .unwrap()
            .status,
        200
    );

    for auth in [
        None,
        Some((PROMETHEUS.0, "wrong")),
        Some(("nobody", PROMETHEUS.1)),
        Some((PROMETHEUS.0, "")),
    ] {
        for path in ["/metrics", "/", "/nope"] {
            let denied = get(exporter.addr, &https, path, auth).unwrap();
            assert_eq!(denied.status, 401, "{path} {auth:?}");
            assert!(
                denied.head.contains("www-authenticate: basic"),
                "{}",
                denied.head
            );
            assert!(denied.head.contains("x-content-type-options: nosniff"));
            assert!(!denied.body.contains("podmeter_"), "{}", denied.body);
        }
    }
    // The same answers again come from the cache of verifications.
    assert_eq!(
        get(exporter.addr, &https, "/metrics", Some(PROMETHEUS))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(
            exporter.addr,
            &https,
            "/metrics",
            Some((PROMETHEUS.0, "wrong"))
        )
        .unwrap()
        .status,
        401
    );

    // Plain HTTP to the TLS port is told so and gets no metrics.
    let plain = http::get(exporter.addr, "/metrics", None);
    assert_eq!(plain.status, 400);
    assert!(
        plain.body.contains("HTTP request to an HTTPS server"),
        "{}",
        plain.body
    );

    // A client that does not trust the server's CA gives up.
    let other_ca = Ca::new(dir.path(), "other");
    assert!(get(
        exporter.addr,
        &client(&other_ca.cert_file, None),
        "/metrics",
        Some(PROMETHEUS)
    )
    .is_err());

    // An idle TLS keep-alive connection does not hold up the shutdown.
    let mut idle = tls_keep_alive(&exporter, &https);
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 401");
    exporter.terminate();
}

/// A TLS connection that sent one request without `Connection: close`.
fn tls_keep_alive(
    exporter: &podmeter_tests::exporter::Exporter,
    config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(exporter.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = tokio_rustls::rustls::ClientConnection::new(
        config.clone(),
        "127.0.0.1".try_into().unwrap(),
    )
    .unwrap();
    let mut stream = tokio_rustls::rustls::StreamOwned::new(conn, tcp);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream
}

/// Every `client_auth_type`, with no client certificate, one signed by
/// `client_ca_file`, and one of a CA the server does not know.
#[test]
fn client_auth_types_behave_as_in_go() {
    let dir = tempfile::tempdir().unwrap();
    let clients = Ca::new(dir.path(), "clients");
    let signed = clients.issue(dir.path(), "prometheus", &["prometheus"], false);
    let stranger = Ca::new(dir.path(), "stranger").issue(dir.path(), "stranger", &["x"], false);
    let ca = "  client_ca_file: clients-ca.crt\n";
    for (auth_type, ca, [none, by_ca, by_stranger]) in [
        ("NoClientCert", "", [true, true, true]),
        ("RequestClientCert", "", [true, true, true]),
        ("RequireAnyClientCert", "", [false, true, true]),
        ("VerifyClientCertIfGiven", ca, [true, true, false]),
        ("RequireAndVerifyClientCert", ca, [false, true, false]),
    ] {
        let setup = Setup::new(
            dir.path(),
            &format!("  client_auth_type: {auth_type}\n{ca}"),
            "",
        );
        let exporter = setup.start(dir.path(), &[]);
        for (client_name, leaf, expected) in [
            ("no certificate", None, none),
            ("a certificate of client_ca_file", Some(&signed), by_ca),
            ("a certificate of another CA", Some(&stranger), by_stranger),
        ] {
            let result = get(
                exporter.addr,
                &client(&setup.ca.cert_file, leaf),
                "/metrics",
                None,
            );
            match expected {
                true => assert_eq!(result.unwrap().status, 200, "{auth_type}, {client_name}"),
                false => assert!(
                    result.is_err(),
                    "{auth_type}, {client_name}: {:?}",
                    result.map(|r| r.status)
                ),
            }
        }
    }
}

/// As the toolkit: the file is read for each connection and request, so a
/// new password and a new certificate apply without a restart, and a broken
/// edit is refused loudly until it is fixed.
#[test]
fn changes_to_the_file_and_certificates_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), "", &users(&[PROMETHEUS]));
    let exporter = setup.start(dir.path(), &[]);
    let https = client(&setup.ca.cert_file, None);
    assert_eq!(
        get(exporter.addr, &https, "/metrics", Some(PROMETHEUS))
            .unwrap()
            .status,
        200
    );

    let tls_part = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    fs::write(
        &setup.web_config,
        format!("{tls_part}{}", users(&[("prometheus", "new")])),
    )
    .unwrap();
    assert_eq!(
        get(exporter.addr, &https, "/metrics", Some(PROMETHEUS))
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        get(
            exporter.addr,
            &https,
            "/metrics",
            Some(("prometheus", "new"))
        )
        .unwrap()
        .status,
        200
    );

    // A renewed certificate from another CA: new connections get it.
    let renewed = Ca::new(dir.path(), "renewed");
    let leaf = renewed.issue(dir.path(), "server-next", &["127.0.0.1"], true);
    fs::rename(&leaf.cert_file, &setup.server.cert_file).unwrap();
    fs::rename(&leaf.key_file, &setup.server.key_file).unwrap();
    assert!(get(
        exporter.addr,
        &https,
        "/metrics",
        Some(("prometheus", "new"))
    )
    .is_err());
    let renewed_client = client(&renewed.cert_file, None);
    assert_eq!(
        get(
            exporter.addr,
            &renewed_client,
            "/metrics",
            Some(("prometheus", "new"))
        )
        .unwrap()
        .status,
        200
    );

    // Broken: handshakes are refused and logged as errors; fixed: served again.
    fs::write(&setup.web_config, format!("{tls_part}  bogus: 1\n")).unwrap();
    assert!(get(exporter.addr, &renewed_client, "/metrics", None).is_err());
    let log = exporter.log_with("level=error");
    assert!(log.contains("unknown field `bogus`"), "{log}");
    fs::write(&setup.web_config, tls_part).unwrap();
    assert_eq!(
        get(exporter.addr, &renewed_client, "/metrics", None)
            .unwrap()
            .status,
        200
    );
}

/// Without TLS a broken edit is answered 500 (the toolkit's answer).
#[test]
fn basic_auth_without_tls_and_a_broken_edit_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    fs::write(&path, users(&[PROMETHEUS])).unwrap();
    let flag = format!("--web.config.file={}", path.display());
    let exporter = podmeter_tests::exporter::Exporter::start_command(
        Command::new(BIN),
        &dir.path().join("no-pins"),
        &[&flag],
    );
    assert!(exporter.log().contains("tls=false"), "{}", exporter.log());
    assert_eq!(exporter.get("/metrics", None).status, 401);
    fs::write(&path, "basic_auth_users: [\n").unwrap();
    assert_eq!(exporter.get("/metrics", None).status, 500);
    assert!(exporter.log_with("level=error").contains("web config file"));
}

/// The connection cap and the time limits hold for TLS too: a client that
/// never completes its handshake holds its slot for at most 10 s, and one
/// beyond the cap is answered 503 over TLS.
#[test]
fn tls_handshakes_are_time_bounded_and_count_against_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), "", "");
    let exporter = setup.start(dir.path(), &["--web.max-connections=2"]);
    let https = client(&setup.ca.cert_file, None);
    // One says nothing, one starts a TLS record and stalls.
    let silent = TcpStream::connect(exporter.addr).unwrap();
    let mut stalled = TcpStream::connect(exporter.addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();

    let over = get(exporter.addr, &https, "/metrics", None).unwrap();
    assert_eq!(over.status, 503, "{}", over.body);
    assert_eq!(over.body, "Too many open connections, try again later.\n");

    for stream in [silent, stalled] {
        closed_by_server(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(exporter.addr, &https, "/metrics", None).unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "still 503 after the stalled handshakes closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn closed_by_server(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed (Ok) or reset: either way not left open until the read timeout.
    if let Err(e) = stream.read_to_end(&mut rest) {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "still open after 30 s"
        );
    }
}

/// Runs the exporter with `web_config` and returns its stderr once it
/// exited, asserting it failed before listening.
fn refused_at_start(web_config: &std::path::Path) -> String {
    let mut child = Command::new(BIN)
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--bpf.pin-path=/nonexistent",
        ])
        .arg(format!("--web.config.file={}", web_config.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running 10 s after start with {}",
                web_config.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("message=listening"), "{stderr}");
    stderr
}

#[test]
fn malformed_web_config_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), "", "");
    let other = Ca::new(dir.path(), "other").issue(dir.path(), "other", &["x"], true);
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let cases = [
        ("tls_server_config:\n  cert_file: [\n".to_owned(), "parsing the web config file"),
        (format!("{tls}  cert_fle: x\n"), "unknown field `cert_fle`"),
        ("tls_server_config: {cert_file: missing.crt, key_file: server.key}".to_owned(), "missing.crt: No such file"),
        ("tls_server_config: {cert_file: server.crt, key_file: missing.key}".to_owned(), "missing.key: No such file"),
        (format!("tls_server_config: {{cert_file: server.crt, key_file: {}}}", other.key_file.display()), "cert_file"),
        ("tls_server_config: {cert_file: web.yml, key_file: server.key}".to_owned(), "no PEM certificate"),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: missing-ca.crt\n"), "missing-ca.crt"),
        (format!("{tls}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"), "cipher suite TLS_RSA_WITH_RC4_128_SHA is unknown or not supported"),
        ("basic_auth_users:\n  prometheus: plaintext\n".to_owned(), "the password of \\\"prometheus\\\" is not a bcrypt hash"),
    ];
    for (yaml, expected) in cases {
        let path = dir.path().join("bad.yml");
        fs::write(&path, &yaml).unwrap();
        let stderr = refused_at_start(&path);
        assert!(
            stderr.contains(expected),
            "{yaml}\nexpected {expected:?} in:\n{stderr}"
        );
        assert!(stderr.contains("level=error"), "{stderr}");
    }
    let stderr = refused_at_start(&dir.path().join("absent.yml"));
    assert!(stderr.contains("reading the web config file"), "{stderr}");
    drop(setup);
}

/// A real Prometheus (Debian's, on loopback) scrapes the exporter over TLS
/// with basic auth: the shipped `prometheus.yml` with the `scheme`,
/// `tls_config` and `basic_auth` of the Kubernetes job added.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let password = "scrape-secret";
    let setup = Setup::new(dir.path(), "", &users(&[("prometheus", password)]));
    let exporter = setup.start(dir.path(), &[]);
    let password_file = dir.path().join("password");
    fs::write(&password_file, password).unwrap();

    let auth = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password_file: {}\n",
        setup.ca.cert_file.display(),
        password_file.display()
    );
    let prometheus = Prometheus::start_with(exporter.addr, |config| {
        let edited = config.replace(
            "    metrics_path: /metrics\n",
            &format!("    metrics_path: /metrics\n{auth}"),
        );
        assert_ne!(edited, config, "metrics_path not found in prometheus.yml");
        edited
    });

    let up = prometheus.wait_for(r#"up{job="podmeter"} == 1"#, Duration::from_secs(30));
    assert_eq!(up.len(), 1, "{up:?}");
    let build = prometheus.wait_for("podmeter_exporter_build_info", Duration::from_secs(30));
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
    let pods = prometheus.wait_for("podmeter_pods", Duration::from_secs(30));
    assert_eq!(pods[0]["value"][1], "0", "{pods:?}");
}

/// The same Prometheus without the password is refused: `up` is 0.
#[test]
fn prometheus_without_credentials_sees_the_target_down() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), "", &users(&[("prometheus", "pw")]));
    let exporter = setup.start(dir.path(), &[]);
    let ca = setup.ca.cert_file.display().to_string();
    let prometheus = Prometheus::start_with(exporter.addr, |config| {
        config.replace(
            "    metrics_path: /metrics\n",
            &format!("    metrics_path: /metrics\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n"),
        )
    });
    let down = prometheus.wait_for(r#"up{job="podmeter"} == 0"#, Duration::from_secs(30));
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(prometheus.query("podmeter_exporter_build_info")["result"]
        .as_array()
        .unwrap()
        .is_empty());
}
