//! TLS from the web config file: a rustls server config built from its
//! files, read again for every new connection (as the toolkit's
//! `GetConfigForClient` does), so renewed certificates and CAs apply
//! without a restart.

use std::{fs, io, path::Path, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{
        self,
        client::danger::HandshakeSignatureValid,
        crypto::{ring, CryptoProvider},
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, UnixTime},
        server::{
            danger::{ClientCertVerified, ClientCertVerifier},
            WebPkiClientVerifier,
        },
        DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
        SignatureScheme,
    },
    server::TlsStream,
    TlsAcceptor,
};

use crate::web::web_config::{ClientAuth, Curve, TlsServerConfig, TlsVersion, WebConfig};

/// Builds the server config: reads the certificate, key and client CA
/// files named in `tls`.
pub fn server_config(tls: &TlsServerConfig) -> Result<Arc<ServerConfig>, String> {
    let cert_file = tls
        .cert_file
        .as_deref()
        .expect("checked by WebConfig::load");
    let key_file = tls.key_file.as_deref().expect("checked by WebConfig::load");
    let chain = certificates("cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", key_file)?)
        .map_err(|e| format!("key_file {}: no private key ({e})", key_file.display()))?;

    let provider = Arc::new(provider(tls)?);
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.versions() {
        (_, TlsVersion::TLS12) => &[&rustls::version::TLS12],
        (TlsVersion::TLS13, _) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let verifier = client_verifier(tls, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "cert_file {} and key_file {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    // HTTP/1.1 only: the toolkit's `http2` is not implemented.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// ring's provider narrowed to the configured TLS 1.2 cipher suites and
/// curves, in the configured order.
fn provider(tls: &TlsServerConfig) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let mut suites: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in &tls.cipher_suites {
            let suite = provider
                .cipher_suites
                .iter()
                .find(|s| s.suite().as_str() == Some(name.as_str()))
                .ok_or_else(|| {
                    format!("tls_server_config: cipher suite {name} is unknown or not supported")
                })?;
            suites.push(*suite);
        }
        provider.cipher_suites = suites;
    }
    if !tls.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for curve in &tls.curve_preferences {
            let name = match curve {
                Curve::CurveP256 => NamedGroup::secp256r1,
                Curve::CurveP384 => NamedGroup::secp384r1,
                Curve::X25519 => NamedGroup::X25519,
                Curve::CurveP521 => {
                    return Err("tls_server_config: curve CurveP521 is not supported".into())
                }
            };
            groups.extend(provider.kx_groups.iter().find(|g| g.name() == name));
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

fn client_verifier(
    tls: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let path = tls
            .client_ca_file
            .as_deref()
            .expect("checked by WebConfig::load");
        let mut roots = RootCertStore::empty();
        for cert in certificates("client_ca_file", path)? {
            roots
                .add(cert)
                .map_err(|e| format!("client_ca_file {}: {e}", path.display()))?;
        }
        Ok(Arc::new(roots))
    };
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone());
        let builder = match optional {
            true => builder.allow_unauthenticated(),
            false => builder,
        };
        builder
            .build()
            .map_err(|e| format!("tls_server_config: client_ca_file: {e}"))
    };
    let unverified = |mandatory| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            provider: provider.clone(),
        })
    };
    Ok(match tls.client_auth() {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert => unverified(false),
        ClientAuth::RequireAnyClientCert => unverified(true),
        ClientAuth::VerifyClientCertIfGiven => verified(true)?,
        ClientAuth::RequireAndVerifyClientCert => verified(false)?,
    })
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: a client
/// certificate is asked for but not checked against any CA (the toolkit
/// calls these insecure). The handshake signature is still checked, so the
/// client holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Go's answer to plain HTTP on a TLS port: a client that got the scheme
/// wrong learns why instead of seeing the connection drop.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How long a plain HTTP client's further bytes are read and dropped.
const PLAIN_HTTP_DRAIN: Duration = Duration::from_secs(1);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts TLS connections with the config the web config file has when
/// each connection arrives.
#[derive(Debug, Clone)]
pub struct Acceptor {
    web_config: Arc<Path>,
}

impl Acceptor {
    pub fn new(web_config: &Path) -> Self {
        Self {
            web_config: web_config.into(),
        }
    }

    /// The TLS handshake on `stream`, with the web config file read anew.
    /// The caller bounds it in time.
    pub async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain_http(stream).await;
            return Err(HandshakeError::NotTls);
        }
        let path = self.web_config.clone();
        let config = tokio::task::spawn_blocking(move || reload(&path))
            .await
            .map_err(io::Error::other)?
            .map_err(HandshakeError::Reload)?;
        Ok(TlsAcceptor::from(config).accept(stream).await?)
    }
}

/// Best effort: the client is told, and the connection closes anyway.
/// Closing with unread data makes the kernel reset the connection, which
/// can discard the answer before the client reads it: so the request is
/// read first, and whatever follows is drained for a moment after.
async fn refuse_plain_http(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_ok() && stream.shutdown().await.is_ok() {
        let drain = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(PLAIN_HTTP_DRAIN, drain).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a TLS handshake (plain HTTP?)")]
    NotTls,
    /// The file is broken now: the operator must hear of it.
    #[error("{0}")]
    Reload(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Like the toolkit, a file that no longer configures TLS fails the
/// handshake: whether to speak TLS is decided at start.
fn reload(path: &Path) -> Result<Arc<ServerConfig>, String> {
    let config = WebConfig::load(path).map_err(|e| e.to_string())?;
    let tls = config
        .tls
        .ok_or_else(|| format!("web config file {}: TLS is no longer configured (it can only be turned off by a restart)", path.display()))?;
    server_config(&tls)
}
