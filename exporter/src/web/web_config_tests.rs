//! The file format, without any TLS file being read.

use std::fs;

use super::*;

/// A well-formed bcrypt hash (cost 4); no test here verifies a password.
const HASH: &str = "$2b$04$kbxA1BEz3RHqr0TBbGEWQu9G5a5h8DvL7bNnbBP9i5TyP2v8BgoBq";

fn load(yaml: &str) -> Result<WebConfig, WebConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    fs::write(&path, yaml).unwrap();
    WebConfig::load(&path)
}

fn refused(yaml: &str) -> String {
    match load(yaml) {
        Ok(config) => panic!("accepted: {yaml}\n{config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_full_config_is_read_with_paths_relative_to_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    let yaml = format!(
        "tls_server_config:
  cert_file: tls.crt
  key_file: /abs/tls.key
  client_ca_file: ca.crt
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [X25519, CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: ''
basic_auth_users:
  prometheus: '{HASH}'
"
    );
    fs::write(&path, yaml).unwrap();
    let config = WebConfig::load(&path).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert_file, Some(dir.path().join("tls.crt")));
    assert_eq!(tls.key_file, Some(PathBuf::from("/abs/tls.key")));
    assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.crt")));
    assert_eq!(tls.client_auth(), ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(tls.versions(), (TlsVersion::TLS13, TlsVersion::TLS13));
    assert_eq!(tls.curve_preferences, [Curve::X25519, Curve::CurveP256]);
    assert!(!tls.prefer_server_cipher_suites);
    assert_eq!(
        config.users.get("prometheus").map(String::as_str),
        Some(HASH)
    );
    // The blank one is left out.
    let headers: Vec<_> = config
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [
            ("strict-transport-security", "max-age=31536000"),
            ("x-frame-options", "deny")
        ]
    );
}

#[test]
fn empty_files_and_sections_mean_plain_http_without_users() {
    for yaml in [
        "",
        "\n# nothing\n",
        "tls_server_config: {}\n",
        "basic_auth_users: {}\n",
        "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n",
        "http_server_config: {headers: }\n",
    ] {
        let config = load(yaml).unwrap();
        assert!(config.tls.is_none() && config.users.is_empty(), "{yaml:?}");
    }
    let only_users = load(&format!("basic_auth_users:\n  a: '{HASH}'\n")).unwrap();
    assert!(only_users.tls.is_none());
    assert_eq!(only_users.users.len(), 1);
    // The toolkit's old name of RequireAnyClientCert.
    let old =
        load("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireClientCert}")
            .unwrap();
    assert_eq!(
        old.tls.unwrap().client_auth(),
        ClientAuth::RequireAnyClientCert
    );
}

#[test]
fn mistakes_are_refused_naming_what_is_wrong() {
    let tls = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
    for (yaml, expected) in [
        ("tls_server_config: [", "parsing the web config file"),
        ("basic_auth_user: {}", "unknown field `basic_auth_user`"),
        (&format!("{tls}  certfile: x\n"), "unknown field `certfile`"),
        ("http_server_config: {http3: true}", "unknown field `http3`"),
        (
            &format!("{tls}  client_auth_type: Sometimes\n"),
            "unknown variant `Sometimes`",
        ),
        (
            &format!("{tls}  min_version: TLS14\n"),
            "unknown variant `TLS14`",
        ),
        (
            &format!("{tls}  curve_preferences: [P256]\n"),
            "unknown variant `P256`",
        ),
        (
            "basic_auth_users:\n  prometheus: secret\n",
            "the password of \"prometheus\" is not a bcrypt hash",
        ),
        (
            "basic_auth_users:\n  a: '$2b$04$short'\n",
            "the password of \"a\" is not a bcrypt hash",
        ),
        ("basic_auth_users: [a, b]\n", "basic_auth_users"),
        (
            &format!("basic_auth_users:\n  a: '{HASH}'\n  a: '{HASH}'\n"),
            "duplicate",
        ),
        ("tls_server_config: {cert_file: c}", "key_file is missing"),
        ("tls_server_config: {key_file: k}", "cert_file is missing"),
        (
            "tls_server_config: {cert: PEM, key: PEM}",
            "cert is not supported",
        ),
        (
            &format!("{tls}  client_allowed_sans: [a]\n"),
            "client_allowed_sans is not supported",
        ),
        (
            "rate_limit: {interval: 1s, burst: 2}",
            "rate_limit is not supported",
        ),
        (
            &format!("{tls}  client_ca_file: ca\n"),
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            &format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            &format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"),
            "VerifyClientCertIfGiven needs client_ca_file",
        ),
        (
            &format!("{tls}  max_version: TLS11\n"),
            "only TLS12 and TLS13",
        ),
        (
            &format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"),
            "min_version TLS13 is above max_version TLS12",
        ),
        (
            "tls_server_config: {min_version: TLS13}",
            "TLS would be off",
        ),
        (
            "http_server_config: {headers: {Server: podmeter}}",
            "\"Server\" can not be configured",
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow}}",
            "X-Frame-Options must be one of",
        ),
        (
            "http_server_config: {headers: {X-Content-Type-Options: sniff}}",
            "X-Content-Type-Options must be one of",
        ),
    ] {
        let message = refused(yaml);
        assert!(message.contains(expected), "{yaml:?}: {message}");
        assert!(message.contains("web.yml"), "names the file: {message}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("reading the web config file /nonexistent/web.yml: "),
        "{e}"
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("web-config.example.yml");
    let config = WebConfig::load(&path).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert_file, Some(path.parent().unwrap().join("tls.crt")));
    assert_eq!(tls.client_auth(), ClientAuth::NoClientCert);
    let hash = &config.users["prometheus"];
    assert!(bcrypt::verify("change-me", hash).unwrap());
}
