//! `--web.config.file`: Prometheus exporter-toolkit's web-config.yml, with
//! its keys and their meaning (TLS, response headers, basic auth), read
//! strictly: an unknown or misspelt key is an error that names it.
//!
//! Relative file names in it are relative to the file's own directory, as
//! exporter-toolkit resolves them.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use axum::http::{HeaderName, HeaderValue, header};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are in the messages, not chained: the same line reads
    // whole at start (through anyhow) and in the reload log.
    #[error("reading {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Syntax {
        path: PathBuf,
        reason: serde_yaml_ng::Error,
    },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    /// User name → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The certificate chain inline (PEM), instead of `cert_file`.
    pub cert: Option<String>,
    /// The private key inline (PEM), instead of `key_file`.
    pub key: Option<String>,
    pub client_auth_type: Option<ClientAuthType>,
    pub client_ca_file: Option<PathBuf>,
    pub client_ca: Option<String>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    pub cipher_suites: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Option<Vec<String>>,
}

/// exporter-toolkit's (Go's) names for what a client must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuthType {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    pub fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted for compatibility: the daemon speaks HTTP/1.1 only.
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WebConfigFile {
    /// Reads and parses `path`, and makes its relative file names
    /// relative to `path`'s directory.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            path: path.to_owned(),
            reason,
        })?;
        // An empty file is a valid, empty configuration (plain HTTP, no auth).
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|reason| ConfigError::Syntax {
                path: path.to_owned(),
                reason,
            })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut config.tls_server_config {
            for file in [
                &mut tls.cert_file,
                &mut tls.key_file,
                &mut tls.client_ca_file,
            ] {
                if let Some(name) = file.as_mut().filter(|name| name.is_relative()) {
                    *name = base.join(&*name);
                }
            }
        }
        Ok(config)
    }

    /// TLS is on when any certificate or key is given, as in exporter-toolkit.
    pub fn tls(&self) -> Option<&TlsServerConfig> {
        self.tls_server_config.as_ref().filter(|tls| {
            tls.cert_file.is_some()
                || tls.key_file.is_some()
                || tls.cert.is_some()
                || tls.key.is_some()
        })
    }

    /// Every file the configuration reads: a change to any of them is a
    /// change to the configuration.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls_server_config else {
            return Vec::new();
        };
        [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Response headers exporter-toolkit lets a site set, with the values it
/// accepts (None: any value).
const ALLOWED_HEADERS: [(HeaderName, Option<&[&str]>); 5] = [
    (header::STRICT_TRANSPORT_SECURITY, None),
    (header::X_CONTENT_TYPE_OPTIONS, Some(&["nosniff"])),
    (header::X_FRAME_OPTIONS, Some(&["deny", "sameorigin"])),
    (header::X_XSS_PROTECTION, None),
    (header::CONTENT_SECURITY_POLICY, None),
];

/// `http_server_config.headers`, checked as exporter-toolkit checks them.
pub fn response_headers(
    path: &Path,
    config: &WebConfigFile,
) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let Some(http) = &config.http_server_config else {
        return Ok(Vec::new());
    };
    let invalid = |name: &str, reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("http_server_config.headers.{name}"),
        reason,
    };
    let mut headers = Vec::new();
    for (name, value) in &http.headers {
        let Some((known, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(known, _)| known.as_str().eq_ignore_ascii_case(name))
        else {
            let known: Vec<_> = ALLOWED_HEADERS
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            return Err(invalid(
                name,
                format!("not a header that can be set (one of {})", known.join(", ")),
            ));
        };
        if let Some(allowed) = allowed
            && !allowed.iter().any(|v| v.eq_ignore_ascii_case(value))
        {
            return Err(invalid(
                name,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(name, "not a valid header value".into()))?;
        headers.push((known.clone(), value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfigFile, ConfigError> {
        let dir = std::env::temp_dir().join(format!("web-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.yml",
            text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, text).unwrap();
        let parsed = WebConfigFile::read(&path);
        std::fs::remove_file(&path).unwrap();
        parsed
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = parse("tls_server_config:\n  cert_fil: a.pem\n").unwrap_err();
        assert!(error.to_string().contains("cert_fil"), "{error}");
        let error = parse("basic_auth_user:\n  a: b\n").unwrap_err();
        assert!(error.to_string().contains("basic_auth_user"), "{error}");
    }

    #[test]
    fn relative_files_are_relative_to_the_config_file() {
        let config =
            parse("tls_server_config:\n  cert_file: c.pem\n  key_file: /etc/k.pem\n").unwrap();
        let tls = config.tls().unwrap();
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(
                &*std::env::temp_dir()
                    .join(format!("web-config-test-{}", std::process::id()))
                    .join("c.pem")
            )
        );
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/etc/k.pem")));
    }

    #[test]
    fn empty_file_and_empty_tls_section_mean_plain_http() {
        assert!(parse("").unwrap().tls().is_none());
        assert!(parse("tls_server_config: {}\n").unwrap().tls().is_none());
    }

    #[test]
    fn client_auth_types_are_go_names() {
        let config = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n").unwrap();
        assert_eq!(
            config.tls().unwrap().client_auth_type,
            Some(ClientAuthType::RequireAndVerifyClientCert)
        );
        let error = parse("tls_server_config:\n  client_auth_type: Always\n").unwrap_err();
        assert!(error.to_string().contains("Always"), "{error}");
    }

    #[test]
    fn headers_are_checked_like_exporter_toolkit() {
        let path = Path::new("web.yml");
        let config = parse("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    strict-transport-security: max-age=31536000\n").unwrap();
        let headers = response_headers(path, &config).unwrap();
        assert_eq!(headers.len(), 2);
        let config =
            parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap();
        let error = response_headers(path, &config).unwrap_err().to_string();
        assert!(
            error.contains("http_server_config.headers.X-Frame-Options"),
            "{error}"
        );
        let config = parse("http_server_config:\n  headers:\n    Set-Cookie: a\n").unwrap();
        let error = response_headers(path, &config).unwrap_err().to_string();
        assert!(error.contains("Set-Cookie"), "{error}");
    }
}
