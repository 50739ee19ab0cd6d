//! The web configuration file of the Prometheus exporter-toolkit
//! (`--web.config.file`): TLS, basic auth users and response headers, in the
//! format every exporter user already knows. Parsed as strictly as the
//! toolkit does (unknown keys are errors), and checked whole at every load:
//! the file is read again for each connection and each request, so a bad
//! edit must fail loudly rather than half apply.

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    path::{Path, PathBuf},
};

use axum::http::{HeaderName, HeaderValue};
use serde::{de::IgnoredAny, Deserialize};

/// The cause is part of the message (not a `source`), so that it shows
/// once wherever the error is printed.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("reading the web config file {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("parsing the web config file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: serde_norway::Error,
    },
    #[error("web config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A checked web configuration.
#[derive(Debug)]
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<TlsServerConfig>,
    /// Username → bcrypt hash; empty: no authentication.
    pub users: HashMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `tls_server_config`, with file paths resolved against the config file's
/// directory (as the toolkit does).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<ClientAuth>,
    #[serde(default)]
    pub min_version: Option<TlsVersion>,
    #[serde(default)]
    pub max_version: Option<TlsVersion>,
    /// IANA names (Go's), for TLS 1.2; TLS 1.3 suites are always offered.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<Curve>,
    #[serde(default = "default_true")]
    pub prefer_server_cipher_suites: bool,
    // The toolkit's keys this exporter does not implement: refused by name.
    #[serde(default)]
    cert: Option<IgnoredAny>,
    #[serde(default)]
    key: Option<IgnoredAny>,
    #[serde(default)]
    client_ca: Option<IgnoredAny>,
    #[serde(default)]
    client_allowed_sans: Option<IgnoredAny>,
}

/// The toolkit's names (Go's `tls.ClientAuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    /// `RequireClientCert` is the toolkit's old name for it.
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Curve {
    CurveP256,
    CurveP384,
    CurveP521,
    X25519,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default, deserialize_with = "unique_keys")]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    rate_limit: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Accepted for compatibility; the exporter speaks HTTP/1.1 only.
    #[serde(default, rename = "http2")]
    _http2: Option<bool>,
    #[serde(default, deserialize_with = "unique_keys")]
    headers: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

/// A map that refuses a key given twice, as the toolkit's strict YAML
/// parser does (serde_norway would keep the last silently).
fn unique_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings")
        }

        /// `basic_auth_users:` with nothing after it, as Go reads it.
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut unique = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if unique.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
                unique.insert(key, value);
            }
            Ok(unique)
        }
    }
    deserializer.deserialize_map(Unique)
}

/// The headers the toolkit lets a config set, with their allowed values
/// (empty: any value).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and checks `path`. TLS files are named, not read: see
    /// `tls::server_config`.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = fs::read_to_string(path).map_err(|error| WebConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        // An empty file is the toolkit's empty config: plain HTTP, no users.
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(&text).map_err(|error| WebConfigError::Parse {
                path: path.to_owned(),
                error,
            })?
        };
        if file.rate_limit.is_some() {
            return Err(invalid(
                "rate_limit is not supported (--web.max-requests caps concurrent scrapes)".into(),
            ));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(tls) => tls.check(dir).map_err(invalid)?,
            None => None,
        };
        let users = file
            .basic_auth_users
            .into_iter()
            .map(|(user, hash)| match hash.parse::<bcrypt::HashParts>() {
                Ok(_) => Ok((user, hash)),
                Err(e) => Err(invalid(format!(
                    "basic_auth_users: the password of {user:?} is not a bcrypt hash ({e})"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let headers = match &file.http_server_config {
            Some(http) => check_headers(&http.headers).map_err(invalid)?,
            None => Vec::new(),
        };
        Ok(Self {
            tls,
            users,
            headers,
        })
    }
}

impl TlsServerConfig {
    /// `None` when no key turns TLS on. As in the toolkit, a certificate,
    /// key, client CA or client auth type does; unlike it, tuning keys
    /// without those are refused instead of ignored, as the server would
    /// then speak plain HTTP.
    fn check(mut self, dir: &Path) -> Result<Option<Self>, String> {
        for (key, value) in [
            ("cert", &self.cert),
            ("key", &self.key),
            ("client_ca", &self.client_ca),
            ("client_allowed_sans", &self.client_allowed_sans),
        ] {
            if value.is_some() {
                return Err(format!(
                    "tls_server_config: {key} is not supported (use cert_file, key_file, client_ca_file)"
                ));
            }
        }
        for path in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ] {
            match path {
                // Go's empty string: not set.
                Some(p) if p.as_os_str().is_empty() => *path = None,
                Some(p) => *p = dir.join(&*p),
                None => {}
            }
        }
        let enabled = self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some();
        if !enabled {
            let tuned = self.min_version.is_some()
                || self.max_version.is_some()
                || !self.cipher_suites.is_empty()
                || !self.curve_preferences.is_empty();
            return match tuned {
                true => {
                    Err("tls_server_config without cert_file and key_file: TLS would be off".into())
                }
                false => Ok(None),
            };
        }
        if self.cert_file.is_none() {
            return Err("tls_server_config: cert_file is missing".into());
        }
        if self.key_file.is_none() {
            return Err("tls_server_config: key_file is missing".into());
        }
        let auth = self.client_auth();
        if self.client_ca_file.is_some() && auth == ClientAuth::NoClientCert {
            return Err("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert (or unset)".into());
        }
        if matches!(
            auth,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        ) && self.client_ca_file.is_none()
        {
            return Err(format!(
                "tls_server_config: client_auth_type {auth:?} needs client_ca_file"
            ));
        }
        let (min, max) = self.versions();
        if max < TlsVersion::TLS12 {
            return Err(format!(
                "tls_server_config: max_version {max:?}: only TLS12 and TLS13 are supported"
            ));
        }
        if min > max {
            return Err(format!(
                "tls_server_config: min_version {min:?} is above max_version {max:?}"
            ));
        }
        Ok(Some(self))
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth_type.unwrap_or(ClientAuth::NoClientCert)
    }

    /// (min, max) with the toolkit's defaults, TLS12 and TLS13.
    pub fn versions(&self) -> (TlsVersion, TlsVersion) {
        (
            self.min_version.unwrap_or(TlsVersion::TLS12),
            self.max_version.unwrap_or(TlsVersion::TLS13),
        )
    }
}

fn check_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut checked = Vec::new();
    for (name, value) in headers {
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "http_server_config.headers: {name:?} can not be configured"
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers: {name} must be one of {allowed:?}, not {value:?}"
            ));
        }
        // "Unset if blank", as the toolkit documents.
        if value.is_empty() {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("http_server_config.headers: {name}: invalid value {value:?}"))?;
        checked.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a listed name"),
            value,
        ));
    }
    Ok(checked)
}

#[cfg(test)]
#[path = "web_config_tests.rs"]
mod tests;
