//! web-config.yml's `tls_server_config` as a rustls server configuration.
//! Go's names map onto rustls' where rustls has the feature; where it has
//! not (TLS 1.0/1.1, CBC suites, P-521), the file is refused with the key
//! named rather than served with something weaker or different.
use std::{path::Path, sync::Arc};

use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    server::{
        NoClientAuth, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use super::config::{ClientAuthType, ConfigError, TlsServerConfig, TlsVersion};

/// What the daemon offers over HTTP: 1.1 only (see `http_server_config.http2`).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Go's TLS 1.3 suite names: accepted in `cipher_suites` and, as in Go,
/// without effect (TLS 1.3 suites are not configurable).
const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

pub fn server_config(path: &Path, tls: &TlsServerConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("tls_server_config.{key}"),
        reason,
    };
    let chain = certificate_chain(tls).map_err(|(key, reason)| invalid(key, reason))?;
    let key = private_key(tls).map_err(|(key, reason)| invalid(key, reason))?;
    let provider = Arc::new(provider(tls).map_err(|(key, reason)| invalid(key, reason))?);
    let versions = versions(tls).map_err(|(key, reason)| invalid(key, reason))?;
    let verifier = client_verifier(tls, &provider).map_err(|(key, reason)| invalid(key, reason))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            invalid(
                "cipher_suites",
                format!("no suite left for the versions: {e}"),
            )
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid("key_file", format!("does not match the certificate: {e}")))?;
    // Go ignores the client's preference order by default too.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

type KeyError = (&'static str, String);

fn certificate_chain(tls: &TlsServerConfig) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let chain: Result<Vec<_>, _> = match (&tls.cert_file, &tls.cert) {
        (Some(_), Some(_)) => return Err(("cert", "give cert_file or cert, not both".into())),
        (None, None) => return Err(("cert_file", "missing: TLS needs a certificate".into())),
        (Some(file), None) => CertificateDer::pem_file_iter(file)
            .map_err(|e| ("cert_file", format!("{}: {e}", file.display())))?
            .collect(),
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes()).collect(),
    };
    let key = if tls.cert_file.is_some() {
        "cert_file"
    } else {
        "cert"
    };
    match chain {
        Ok(chain) if chain.is_empty() => Err((key, "no PEM certificate in it".into())),
        Ok(chain) => Ok(chain),
        Err(e) => Err((key, format!("not a PEM certificate chain: {e}"))),
    }
}

fn private_key(tls: &TlsServerConfig) -> Result<PrivateKeyDer<'static>, KeyError> {
    match (&tls.key_file, &tls.key) {
        (Some(_), Some(_)) => Err(("key", "give key_file or key, not both".into())),
        (None, None) => Err((
            "key_file",
            "missing: TLS needs the certificate's key".into(),
        )),
        (Some(file), None) => PrivateKeyDer::from_pem_file(file).map_err(|e| {
            (
                "key_file",
                format!("{}: no PEM private key read: {e}", file.display()),
            )
        }),
        (None, Some(pem)) => PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| ("key", format!("no PEM private key read: {e}"))),
    }
}

fn versions(tls: &TlsServerConfig) -> Result<Vec<&'static SupportedProtocolVersion>, KeyError> {
    let min = tls.min_version.unwrap_or(TlsVersion::TLS12);
    let max = tls.max_version.unwrap_or(TlsVersion::TLS13);
    if max < TlsVersion::TLS12 {
        return Err((
            "max_version",
            "TLS 1.0 and 1.1 are not offered (rustls has TLS 1.2 and 1.3)".into(),
        ));
    }
    if min > max {
        return Err((
            "min_version",
            format!("{min:?} is above max_version {max:?}"),
        ));
    }
    if min < TlsVersion::TLS12 {
        log::warn!(
            "tls_server_config.min_version {min:?}: TLS 1.0 and 1.1 are not offered; the minimum is TLS 1.2"
        );
    }
    let mut versions = Vec::new();
    if max >= TlsVersion::TLS13 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::TLS12 {
        versions.push(&rustls::version::TLS12);
    }
    Ok(versions)
}

/// The ring provider, its TLS 1.2 suites and key exchange groups cut to
/// `cipher_suites` and `curve_preferences` when given.
fn provider(tls: &TlsServerConfig) -> Result<CryptoProvider, KeyError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &tls.cipher_suites {
        let available: Vec<_> = provider.cipher_suites.clone();
        let mut chosen: Vec<_> = available
            .iter()
            .filter(|suite| suite.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in names {
            if TLS13_SUITE_NAMES.contains(&name.as_str()) {
                continue;
            }
            let wanted = go_suite_name(name);
            let Some(suite) = available
                .iter()
                .find(|suite| suite_name(suite.suite()) == wanted)
            else {
                let offered: Vec<_> = available
                    .iter()
                    .filter(|suite| suite.version() == &rustls::version::TLS12)
                    .map(|suite| suite_name(suite.suite()))
                    .collect();
                return Err((
                    "cipher_suites",
                    format!("{name} is not offered; one of {}", offered.join(", ")),
                ));
            };
            chosen.push(*suite);
        }
        provider.cipher_suites = chosen;
    }
    if let Some(names) = &tls.curve_preferences {
        let mut groups = Vec::new();
        for name in names {
            let group = match name.as_str() {
                "X25519" => NamedGroup::X25519,
                "CurveP256" => NamedGroup::secp256r1,
                "CurveP384" => NamedGroup::secp384r1,
                _ => {
                    return Err((
                        "curve_preferences",
                        format!("{name} is not offered; one of X25519, CurveP256, CurveP384"),
                    ));
                }
            };
            if let Some(kx) = provider.kx_groups.iter().find(|kx| kx.name() == group) {
                groups.push(*kx);
            }
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// Go writes the CHACHA20 suites both with and without `_SHA256`.
fn go_suite_name(name: &str) -> String {
    if name.ends_with("_CHACHA20_POLY1305") {
        format!("{name}_SHA256")
    } else {
        name.to_owned()
    }
}

fn suite_name(suite: CipherSuite) -> String {
    format!("{suite:?}")
}

fn client_verifier(
    tls: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, KeyError> {
    let auth = tls.client_auth_type.unwrap_or(ClientAuthType::NoClientCert);
    let has_ca = tls.client_ca_file.is_some() || tls.client_ca.is_some();
    if has_ca && !auth.verifies() {
        return Err((
            "client_auth_type",
            "client CAs are given but not used: set VerifyClientCertIfGiven or RequireAndVerifyClientCert".into(),
        ));
    }
    if tls.client_allowed_sans.is_some() && auth != ClientAuthType::RequireAndVerifyClientCert {
        return Err((
            "client_allowed_sans",
            "needs client_auth_type: RequireAndVerifyClientCert".into(),
        ));
    }
    let algorithms = provider.signature_verification_algorithms;
    match auth {
        ClientAuthType::NoClientCert => Ok(Arc::new(NoClientAuth)),
        ClientAuthType::RequestClientCert => Ok(Arc::new(AnyClientCert {
            mandatory: false,
            algorithms,
        })),
        ClientAuthType::RequireAnyClientCert => Ok(Arc::new(AnyClientCert {
            mandatory: true,
            algorithms,
        })),
        ClientAuthType::VerifyClientCertIfGiven | ClientAuthType::RequireAndVerifyClientCert => {
            let roots = Arc::new(client_roots(tls)?);
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if auth == ClientAuthType::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            let verifier = builder.build().map_err(|e| {
                (
                    "client_ca_file",
                    format!("cannot verify clients with it: {e}"),
                )
            })?;
            match &tls.client_allowed_sans {
                None => Ok(verifier),
                Some(sans) => Ok(Arc::new(AllowedSans::new(verifier, sans)?)),
            }
        }
    }
}

fn client_roots(tls: &TlsServerConfig) -> Result<RootCertStore, KeyError> {
    let (key, certs): (_, Result<Vec<_>, _>) = match (&tls.client_ca_file, &tls.client_ca) {
        (Some(_), Some(_)) => {
            return Err((
                "client_ca",
                "give client_ca_file or client_ca, not both".into(),
            ));
        }
        (None, None) => {
            return Err((
                "client_ca_file",
                "missing: verifying client certificates needs the CAs".into(),
            ));
        }
        (Some(file), None) => (
            "client_ca_file",
            CertificateDer::pem_file_iter(file)
                .map_err(|e| ("client_ca_file", format!("{}: {e}", file.display())))?
                .collect(),
        ),
        (None, Some(pem)) => (
            "client_ca",
            CertificateDer::pem_slice_iter(pem.as_bytes()).collect(),
        ),
    };
    let certs = certs.map_err(|e| (key, format!("not PEM certificates: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err((key, "no usable CA certificate in it".into()));
    }
    Ok(roots)
}

/// Go's RequestClientCert and RequireAnyClientCert: a client certificate
/// is asked for (or required) but not checked against any CA; the client
/// still proves it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: a verified client certificate must also name one
/// of these (DNS names and IP addresses; Go also matches e-mail and URI
/// SANs, which rustls' certificate parser does not expose).
#[derive(Debug)]
struct AllowedSans {
    verified: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl AllowedSans {
    fn new(verified: Arc<dyn ClientCertVerifier>, sans: &[String]) -> Result<Self, KeyError> {
        let allowed = sans
            .iter()
            .map(|san| {
                ServerName::try_from(san.clone()).map_err(|_| {
                    ("client_allowed_sans", format!("{san:?} is neither a DNS name nor an IP address (the only SANs matched here)"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { verified, allowed })
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.verified.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.verified.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.verified.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .verified
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .allowed
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verified.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verified.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verified.supported_verify_schemes()
    }
}
