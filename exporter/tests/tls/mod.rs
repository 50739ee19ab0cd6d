//! What the web config tests share: a throwaway PKI written to a temp dir,
//! a web config file, the exporter started with it, and an HTTPS client
//! (rustls) that sends raw requests as `podmeter_tests::http` does.

use std::{
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use podmeter_tests::{exporter::Exporter, http::Response};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls::{
    self,
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_podmeter-exporter");

/// A CA with its certificate in `dir/<name>-ca.crt`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert_file: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert_file = dir.join(format!("{name}-ca.crt"));
        fs::write(&cert_file, issuer.pem()).unwrap();
        Self { issuer, cert_file }
    }

    /// A leaf certificate for `names` (server: `127.0.0.1`, `localhost`),
    /// written to `dir/<file>.crt` and `dir/<file>.key`.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str], server: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert_file: dir.join(format!("{file}.crt")),
            key_file: dir.join(format!("{file}.key")),
        };
        fs::write(&leaf.cert_file, cert.pem()).unwrap();
        fs::write(&leaf.key_file, key.serialize_pem()).unwrap();
        leaf
    }
}

pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A server certificate from a fresh CA, and the web config file naming it
/// (with `extra` YAML appended), in `dir`.
pub struct Setup {
    pub ca: Ca,
    pub server: Leaf,
    pub web_config: PathBuf,
}

impl Setup {
    pub fn new(dir: &Path, tls_extra: &str, extra: &str) -> Self {
        let ca = Ca::new(dir, "server");
        let server = ca.issue(dir, "server", &["127.0.0.1", "localhost"], true);
        let web_config = dir.join("web.yml");
        // Relative paths: the exporter resolves them against the file's directory.
        fs::write(
            &web_config,
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls_extra}{extra}"
            ),
        )
        .unwrap();
        Self {
            ca,
            server,
            web_config,
        }
    }

    /// The exporter with this web config; no pins (health metrics only).
    pub fn start(&self, dir: &Path, args: &[&str]) -> Exporter {
        let flag = format!("--web.config.file={}", self.web_config.display());
        let mut all = vec![flag.as_str()];
        all.extend_from_slice(args);
        Exporter::start_command(Command::new(BIN), &dir.join("no-pins"), &all)
    }
}

/// `user: hash` lines for `basic_auth_users` (bcrypt cost 4: tests need
/// no slowness).
pub fn users(users: &[(&str, &str)]) -> String {
    let mut yaml = "basic_auth_users:\n".to_owned();
    for (user, password) in users {
        let hash = bcrypt::hash(password, 4).unwrap();
        yaml.push_str(&format!("  {user}: '{hash}'\n"));
    }
    yaml
}

/// An HTTPS client trusting `ca`, presenting `client` if given.
pub fn client(ca: &Path, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&leaf.cert_file)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&leaf.key_file).unwrap(),
            )
            .unwrap(),
    })
}

/// Sends `raw` over TLS to `addr` (as `127.0.0.1`) and reads the answer
/// until the server closes; an error if the handshake or the exchange fails.
pub fn request(addr: SocketAddr, config: &Arc<ClientConfig>, raw: &[u8]) -> io::Result<Response> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(raw)?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"));
    }
    Ok(Response::parse(&buf))
}

/// A `GET` with `Connection: close`, with basic auth if given.
pub fn get(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> io::Result<Response> {
    use base64::Engine as _;
    let auth = auth
        .map(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    request(
        addr,
        config,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
}
