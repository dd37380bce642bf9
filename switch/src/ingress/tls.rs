//! TLS for both ingresses: ISO 8583 over mutual TLS on its own listener, and
//! HTTPS for the JSON API.
//!
//! ```text
//! PEM files (config) -> rustls ServerConfig (ring, TLS 1.2 + 1.3 only)
//!   ISO:  -> AcquirerVerifier: WebPKI chain to `client_ca`, then the leaf's
//!            subject CN / DNS SANs -> a configured [acquirers.NAME]
//!         -> handshake (bounded by iso.tls.handshake_timeout_ms) -> Acquirer
//!   HTTP: -> no client certificate asked for; API keys authenticate
//! ```
//!
//! The acquirer is decided inside the handshake, by the certificate
//! verifier: a certificate that is missing, untrusted, expired or names no
//! configured acquirer fails the handshake with a TLS alert, so the ISO 8583
//! reader never starts and not one message byte is parsed. A refused
//! handshake is counted by [`RefusalReason`] and logged with the peer's
//! address and the reason only: a TLS handshake carries no card data.
//!
//! The ring provider is named explicitly (`builder_with_provider`) rather
//! than taken from a process default, so no other crate in the build can
//! change which primitives the switch uses, and so the build needs no C
//! toolchain or cmake (aws-lc-rs would).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    PeerIncompatible, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{AcquirerConfig, ConfigError, HttpTlsConfig, IsoTlsConfig};
use crate::engine::acquirer::Acquirer;

/// The crypto provider every TLS configuration of the switch is built on.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocol versions the switch speaks: TLS 1.3 and 1.2. TLS 1.0 and
/// 1.1 are not compiled into rustls at all; a client offering only them is
/// answered with a `protocol_version` alert.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Which listener a handshake happened on, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsListener {
    Iso,
    Http,
}

impl TlsListener {
    pub const ALL: [TlsListener; 2] = [TlsListener::Iso, TlsListener::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsListener::Iso => "iso",
            TlsListener::Http => "http",
        }
    }

    // A fieldless enum's discriminant is its place in `ALL`: nothing to lose.
    #[allow(clippy::as_conversions)]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a handshake was refused: the `reason` label of
/// `switch_tls_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The client sent no certificate (mutual TLS requires one).
    NoCertificate,
    /// The certificate does not chain to `client_ca`, or is otherwise invalid.
    Untrusted,
    /// The certificate's validity ended.
    Expired,
    /// The certificate's validity has not started.
    NotYetValid,
    /// A valid certificate whose subject names no configured acquirer.
    Unmapped,
    /// The client offered only TLS 1.1 or older (or SSL).
    ProtocolVersion,
    /// The handshake did not finish within its timeout.
    Timeout,
    /// Anything else: not TLS at all, no cipher suite in common, a reset.
    Other,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::NoCertificate,
        RefusalReason::Untrusted,
        RefusalReason::Expired,
        RefusalReason::NotYetValid,
        RefusalReason::Unmapped,
        RefusalReason::ProtocolVersion,
        RefusalReason::Timeout,
        RefusalReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoCertificate => "no_certificate",
            RefusalReason::Untrusted => "untrusted",
            RefusalReason::Expired => "expired",
            RefusalReason::NotYetValid => "not_yet_valid",
            RefusalReason::Unmapped => "unmapped",
            RefusalReason::ProtocolVersion => "protocol_version",
            RefusalReason::Timeout => "timeout",
            RefusalReason::Other => "other",
        }
    }

    // A fieldless enum's discriminant is its place in `ALL`: nothing to lose.
    #[allow(clippy::as_conversions)]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Classifies a failed handshake. tokio-rustls hands back the rustls
    /// error inside an `io::Error`; anything without one (a reset, an EOF
    /// mid-handshake) is `Other`.
    pub fn of(error: &std::io::Error) -> RefusalReason {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
        else {
            return RefusalReason::Other;
        };
        match tls {
            TlsError::NoCertificatesPresented => RefusalReason::NoCertificate,
            TlsError::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => RefusalReason::Expired,
            TlsError::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ) => RefusalReason::NotYetValid,
            TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                RefusalReason::Unmapped
            }
            TlsError::InvalidCertificate(_) => RefusalReason::Untrusted,
            // A hello without signature_algorithms is refused before its
            // version is looked at; every TLS 1.2 and 1.3 client sends the
            // extension, so its absence marks a TLS 1.0/1.1 client.
            TlsError::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::SignatureAlgorithmsExtensionRequired,
            ) => RefusalReason::ProtocolVersion,
            _ => RefusalReason::Other,
        }
    }
}

/// Every configured acquirer, by the certificate subject that names it
/// (ASCII lower case).
#[derive(Debug, Default)]
pub struct Acquirers {
    by_subject: HashMap<String, Arc<Acquirer>>,
}

impl Acquirers {
    pub fn new(configs: &[AcquirerConfig]) -> Acquirers {
        let by_subject = configs
            .iter()
            .map(|config| {
                (
                    config.certificate_subject.to_ascii_lowercase(),
                    Arc::new(
                        Acquirer::new(
                            config.name.clone(),
                            config.merchants.clone(),
                            config.terminals.clone(),
                        )
                        .with_deadline(config.deadline_ms.map(Duration::from_millis)),
                    ),
                )
            })
            .collect();
        Acquirers { by_subject }
    }

    /// The acquirer a verified leaf certificate names: its subject common
    /// names and DNS subject alternative names are looked up, and exactly
    /// one configured acquirer must match. `None` for no match, more than
    /// one, or a certificate that does not parse.
    pub fn identify(&self, leaf: &CertificateDer<'_>) -> Option<Arc<Acquirer>> {
        let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let mut names: Vec<&str> = certificate
            .subject()
            .iter_common_name()
            .filter_map(|attribute| attribute.as_str().ok())
            .collect();
        if let Ok(Some(alternatives)) = certificate.subject_alternative_name() {
            for name in &alternatives.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns);
                }
            }
        }
        let mut found: Option<&Arc<Acquirer>> = None;
        for name in names {
            if let Some(acquirer) = self.by_subject.get(&name.to_ascii_lowercase()) {
                match found {
                    Some(first) if first.name != acquirer.name => return None,
                    _ => found = Some(acquirer),
                }
            }
        }
        found.cloned()
    }
}

/// WebPKI chain verification against `client_ca`, then the mapping of the
/// leaf to a configured acquirer, so an unmapped certificate fails the
/// handshake itself (alert `access_denied`) like an untrusted one.
#[derive(Debug)]
struct AcquirerVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    acquirers: Arc<Acquirers>,
}

impl ClientCertVerifier for AcquirerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.acquirers.identify(end_entity).is_none() {
            return Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// What the ISO listener needs to run TLS.
#[derive(Clone)]
pub struct IsoTls {
    pub acceptor: TlsAcceptor,
    pub acquirers: Arc<Acquirers>,
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for IsoTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsoTls")
            .field("acquirers", &self.acquirers.by_subject.len())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds the ISO listener's mutual-TLS configuration from the files
/// `tls` names. Errors name `file` (the configuration) and the key.
pub fn iso_tls(
    file: &Path,
    tls: &IsoTlsConfig,
    acquirers: &[AcquirerConfig],
) -> Result<IsoTls, ConfigError> {
    let value_error = |key: &str, reason: String| ConfigError::Value {
        file: file.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(file, "iso.tls.client_ca", &tls.client_ca)? {
        roots.add(certificate).map_err(|error| {
            value_error(
                "iso.tls.client_ca",
                format!(
                    "{}: a certificate is not a usable CA: {error}",
                    tls.client_ca.display()
                ),
            )
        })?;
    }
    let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|error| {
            value_error(
                "iso.tls.client_ca",
                format!("{}: {error}", tls.client_ca.display()),
            )
        })?;
    let acquirers = Arc::new(Acquirers::new(acquirers));
    let verifier = Arc::new(AcquirerVerifier {
        chain,
        acquirers: Arc::clone(&acquirers),
    });
    let certificates = load_certificates(file, "iso.tls.certificate", &tls.certificate)?;
    let key = load_private_key(file, "iso.tls.private_key", &tls.private_key)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|error| value_error("iso.tls", error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates, key)
        .map_err(|error| {
            value_error(
                "iso.tls.private_key",
                format!(
                    "{} does not go with {}: {error}",
                    tls.private_key.display(),
                    tls.certificate.display()
                ),
            )
        })?;
    Ok(IsoTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        acquirers,
        handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
    })
}

/// Builds the HTTPS configuration: server authentication only, HTTP/1.1.
pub fn http_tls(file: &Path, tls: &HttpTlsConfig) -> Result<TlsAcceptor, ConfigError> {
    let certificates = load_certificates(file, "http.tls.certificate", &tls.certificate)?;
    let key = load_private_key(file, "http.tls.private_key", &tls.private_key)?;
    let value_error = |key: &str, reason: String| ConfigError::Value {
        file: file.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|error| value_error("http.tls", error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| {
            value_error(
                "http.tls.private_key",
                format!(
                    "{} does not go with {}: {error}",
                    tls.private_key.display(),
                    tls.certificate.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate in a PEM file; at least one.
fn load_certificates(
    file: &Path,
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let error = |reason: String| ConfigError::Value {
        file: file.to_owned(),
        key: key.to_owned(),
        reason: format!("{}: {reason}", path.display()),
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("holds no PEM CERTIFICATE".to_owned()));
    }
    Ok(certificates)
}

/// The first private key in a PEM file. The error never quotes the file.
fn load_private_key(
    file: &Path,
    key: &str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| ConfigError::Value {
        file: file.to_owned(),
        key: key.to_owned(),
        reason: format!("{}: no usable private key: {e}", path.display()),
    })
}

/// Runs a server handshake on `stream` within `timeout`.
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    timeout: Duration,
) -> Result<TlsStream<S>, (RefusalReason, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Err(_) => Err((
            RefusalReason::Timeout,
            format!("no handshake within {} ms", timeout.as_millis()),
        )),
        Ok(Err(error)) => Err((RefusalReason::of(&error), error.to_string())),
        Ok(Ok(stream)) => Ok(stream),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::domain::pad;

    fn config(name: &str, subject: &str) -> AcquirerConfig {
        AcquirerConfig {
            name: name.to_owned(),
            certificate_subject: subject.to_owned(),
            merchants: Some(vec![pad("ACME0000001").unwrap()]),
            terminals: None,
            deadline_ms: None,
        }
    }

    fn leaf(common_name: &str, dns: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_names_its_acquirer_by_common_name_or_dns_name() {
        let acquirers = Acquirers::new(&[
            config("north", "acq-north"),
            config("south", "south.acquirers.example"),
        ]);
        let north = acquirers.identify(&leaf("ACQ-NORTH", &[])).unwrap();
        assert_eq!(&*north.name, "north");
        let south = acquirers
            .identify(&leaf("someone", &["south.acquirers.example"]))
            .unwrap();
        assert_eq!(&*south.name, "south");
        assert!(acquirers.identify(&leaf("acq-west", &[])).is_none());
        // Two acquirers in one certificate: neither.
        assert!(
            acquirers
                .identify(&leaf("acq-north", &["south.acquirers.example"]))
                .is_none()
        );
        assert!(
            acquirers
                .identify(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]))
                .is_none()
        );
    }

    #[test]
    fn refusals_are_classified_from_the_rustls_error() {
        let io = |error: TlsError| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        assert_eq!(
            RefusalReason::of(&io(TlsError::NoCertificatesPresented)),
            RefusalReason::NoCertificate
        );
        assert_eq!(
            RefusalReason::of(&io(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            RefusalReason::Untrusted
        );
        assert_eq!(
            RefusalReason::of(&io(TlsError::InvalidCertificate(CertificateError::Expired))),
            RefusalReason::Expired
        );
        assert_eq!(
            RefusalReason::of(&io(TlsError::PeerIncompatible(
                PeerIncompatible::Tls12NotOfferedOrEnabled
            ))),
            RefusalReason::ProtocolVersion
        );
        assert_eq!(
            RefusalReason::of(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            RefusalReason::Other
        );
        for (i, reason) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
