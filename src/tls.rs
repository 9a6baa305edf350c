//! TLS for the MQTT links, with rustls (ring provider, TLS 1.2 and 1.3).
//!
//! One set of options (a `tls` table: `ca_file`, `cert_file`, `key_file`,
//! `server_name`) serves the uplink and the site broker as a client and the
//! embedded LAN broker as a server. Loading checks what an installer gets
//! wrong: files that do not parse, a key that is not the certificate's, an
//! expired certificate, a private key others can read. [`explain`] turns a
//! failed handshake into its cause: unknown CA, name mismatch, expired, no
//! client certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::secret::{self, SecretError};

/// A certificate that expires sooner than this is worth a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The files of one `tls` table, paths resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsFiles {
    /// CA certificates (PEM) that sign the peer's certificate; the system's
    /// roots when absent (client side).
    pub ca_file: Option<PathBuf>,
    /// Our certificate chain (PEM): the client certificate for mutual TLS,
    /// or the embedded broker's server certificate.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM), a secret file (mode 0600).
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry, when it is not the
    /// host connected to (e.g. connecting by address).
    pub server_name: Option<String>,
}

/// What a TLS file is wrong with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("private key {}: {source}", path.display())]
    Secret { path: PathBuf, source: SecretError },
    #[error("the key in {} is not the key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} expired on {at}", path.display())]
    Expired { path: PathBuf, at: String },
    #[error("the certificate in {} is not valid before {at}", path.display())]
    NotYetValid { path: PathBuf, at: String },
    #[error("no CA certificates: {reason}")]
    NoRoots { reason: String },
    #[error("cert_file and key_file go together; only {given} is set")]
    HalfPair { given: &'static str },
    #[error("server_name \"{0}\" is not a host name or address")]
    BadServerName(String),
    #[error("a TLS listener needs cert_file and key_file")]
    NoServerCertificate,
    #[error("TLS setup: {0}")]
    Rustls(String),
}

impl TlsError {
    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            TlsError::Secret { path, source } => source.fix(path),
            TlsError::Unreadable { .. } | TlsError::NoCertificate { .. } => {
                "name a PEM file (-----BEGIN CERTIFICATE-----) readable by the gateway".into()
            }
            TlsError::BadKey { .. } => {
                "name the PEM private key (PKCS#8, PKCS#1 or SEC1) of cert_file".into()
            }
            TlsError::KeyMismatch { .. } => {
                "use the key the certificate was issued for (openssl x509 -noout -pubkey -in CERT, openssl pkey -pubout -in KEY must match)".into()
            }
            TlsError::Expired { .. } => "install a renewed certificate".into(),
            TlsError::NotYetValid { .. } => {
                "check this box's clock (timedatectl), or install a certificate valid now".into()
            }
            TlsError::NoRoots { .. } => {
                "set ca_file to the CA that signs the broker's certificate, or install ca-certificates".into()
            }
            TlsError::HalfPair { .. } => {
                "set both for a client certificate (mutual TLS), or neither".into()
            }
            TlsError::BadServerName(_) => "the name in the broker's certificate, e.g. \"mqtt.platform.example\"".into(),
            TlsError::NoServerCertificate => {
                "set cert_file and key_file in [lan.tls]".into()
            }
            TlsError::Rustls(_) => "check the certificate and key files".into(),
        }
    }
}

/// A certificate's validity, from its first (end-entity) certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    fn of(der: &[u8]) -> Option<Validity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Validity {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Days from `now` (unix seconds) until it expires; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client side ready to connect: the uplink or the site broker.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Our certificate's validity, with mutual TLS.
    pub client_cert: Option<Validity>,
    /// The expiry (unix seconds) of the last broker certificate that passed
    /// verification; 0 before one did.
    pub server_expiry: Arc<AtomicI64>,
}

impl ClientTls {
    /// Loads and checks `files`. Warnings (a certificate that expires soon)
    /// go to `warnings`.
    pub fn load(files: &TlsFiles, warnings: &mut Vec<String>) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let roots = match &files.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Unreadable {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                roots
            }
            None => system_roots()?,
        };
        let server_name = match &files.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::BadServerName(name.clone()))?,
            ),
            None => None,
        };
        let server_expiry = Arc::new(AtomicI64::new(0));
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let verifier = Arc::new(Verifier {
            inner,
            server_name,
            seen: server_expiry.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (config, client_cert) = match (&files.cert_file, &files.key_file) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(_), None) => return Err(TlsError::HalfPair { given: "cert_file" }),
            (None, Some(_)) => return Err(TlsError::HalfPair { given: "key_file" }),
            (Some(cert), Some(key)) => {
                let pair = KeyPair::load(cert, key, &provider, warnings)?;
                let validity = pair.validity;
                let config = builder
                    .with_client_auth_cert(pair.chain, pair.key)
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                (config, Some(validity))
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            client_cert,
            server_expiry,
        })
    }

    /// The rumqttc transport that connects with this configuration.
    pub fn transport(&self) -> rumqttc::Transport {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(self.config.clone()))
    }

    /// The broker certificate's expiry seen at the last handshake.
    pub fn server_expiry(&self) -> Option<i64> {
        Some(self.server_expiry.load(Relaxed)).filter(|t| *t != 0)
    }
}

/// The embedded broker's TLS listener: files checked here, read again by
/// the broker when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub validity: Validity,
}

impl ServerTls {
    pub fn load(files: &TlsFiles, warnings: &mut Vec<String>) -> Result<ServerTls, TlsError> {
        let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) else {
            return Err(TlsError::NoServerCertificate);
        };
        let pair = KeyPair::load(cert, key, &provider(), warnings)?;
        Ok(ServerTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            validity: pair.validity,
        })
    }

    /// The rustls server side for these files (read again: the broker
    /// starts after `check` has vetted them). TLS 1.2 and 1.3, no client
    /// certificates.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let pair = KeyPair::load(&self.cert_file, &self.key_file, &provider, &mut Vec::new())?;
        let unreadable = |e: rustls::Error| TlsError::Unreadable {
            path: self.cert_file.clone(),
            reason: e.to_string(),
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(unreadable)?
            .with_no_client_auth()
            .with_single_cert(pair.chain, pair.key)
            .map_err(unreadable)?;
        Ok(Arc::new(config))
    }
}

/// A certificate chain with its private key, checked to belong together.
struct KeyPair {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    validity: Validity,
}

impl KeyPair {
    fn load(
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
        warnings: &mut Vec<String>,
    ) -> Result<KeyPair, TlsError> {
        let chain = read_certs(cert)?;
        let validity = check_validity(cert, &chain[0], warnings)?;
        let bytes = secret::read(key).map_err(|source| TlsError::Secret {
            path: key.to_path_buf(),
            source,
        })?;
        let bad_key = |reason: String| TlsError::BadKey {
            path: key.to_path_buf(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| bad_key(e.to_string()))?;
        let signing = provider
            .key_provider
            .load_private_key(der.clone_key())
            .map_err(|e| bad_key(e.to_string()))?;
        match CertifiedKey::new(chain.clone(), signing).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(TlsError::Unreadable {
                    path: cert.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
        Ok(KeyPair {
            chain,
            key: der,
            validity,
        })
    }
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_public(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The largest certificate file read (a CA bundle of a few hundred).
const MAX_CERT_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A certificate file: a regular file, bounded in size, readable by anyone.
fn read_public(path: &Path) -> Result<Vec<u8>, TlsError> {
    secret::read_regular(path, MAX_CERT_FILE_BYTES, |_, _| true).map_err(|e| {
        let reason = match e {
            SecretError::Unreadable(why) => why,
            other => other.to_string(),
        };
        TlsError::Unreadable {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Refuses an expired or not yet valid certificate; warns of one that
/// expires within [`EXPIRY_WARNING_DAYS`].
fn check_validity(
    path: &Path,
    cert: &CertificateDer<'_>,
    warnings: &mut Vec<String>,
) -> Result<Validity, TlsError> {
    let validity = Validity::of(cert).ok_or_else(|| TlsError::Unreadable {
        path: path.to_path_buf(),
        reason: "the certificate does not parse as X.509".into(),
    })?;
    let now = now_unix();
    if validity.not_after < now {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            at: rfc3339(validity.not_after),
        });
    }
    if validity.not_before > now && crate::clock::is_synchronized() {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            at: rfc3339(validity.not_before),
        });
    }
    let days = validity.days_left(now);
    if days < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "the certificate in {} expires in {days} days ({}); renew it",
            path.display(),
            rfc3339(validity.not_after)
        ));
    }
    Ok(validity)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = match found.errors.first() {
            Some(e) => format!("the system's CA store cannot be read ({e})"),
            None => "the system's CA store is empty".into(),
        };
        return Err(TlsError::NoRoots { reason });
    }
    Ok(roots)
}

/// webpki's verification, against the configured server name when there is
/// one, remembering the broker certificate's expiry for the status.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    server_name: Option<ServerName<'static>>,
    seen: Arc<AtomicI64>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.server_name.as_ref().unwrap_or(server_name);
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)?;
        if let Some(validity) = Validity::of(end_entity) {
            self.seen.store(validity.not_after, Relaxed);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `error`'s chain (rumqttc and tokio-rustls
/// wrap it in `io::Error`s, whose `source` skips the wrapped error).
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = find_rustls(inner) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

/// A failed connection as the log and the status say it: its TLS cause
/// ([`explain`]) when the link is TLS and that is why, else the error.
pub fn describe(
    error: &(dyn std::error::Error + 'static),
    tls: Option<&ClientTls>,
    section: &str,
) -> String {
    tls.and_then(|t| explain(error, section, t.client_cert.is_some()))
        .unwrap_or_else(|| error.to_string())
}

/// What a failed connection means when TLS is why, with what to do;
/// `None` when it failed for another reason. `section` names the table
/// to edit (`[upstream.tls]`), `client_cert` whether we sent one.
pub fn explain(
    error: &(dyn std::error::Error + 'static),
    section: &str,
    client_cert: bool,
) -> Option<String> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    let tls = find_rustls(error)?;
    Some(match tls {
        E::InvalidCertificate(Cert::UnknownIssuer) => format!("TLS: unknown CA: the broker's certificate is not signed by a CA this gateway trusts; set {section} ca_file to the CA that signed it"),
        E::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => format!("TLS: name mismatch: the broker's certificate is not issued for this host name; connect by the name in the certificate, or set {section} server_name to it"),
        E::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => "TLS: expired: the broker's certificate has expired; the broker's operator must renew it (or this box's clock is wrong)".into(),
        E::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => "TLS: the broker's certificate is not valid yet: this box's clock is probably wrong (no real-time clock, time not synchronized yet)".into(),
        E::AlertReceived(Alert::CertificateRequired) => format!("TLS: no client certificate: the broker requires one; set {section} cert_file and key_file"),
        // TLS 1.2 brokers refuse a missing client certificate this way.
        E::AlertReceived(Alert::HandshakeFailure) if !client_cert => format!("TLS: no client certificate? the broker refused the handshake, as brokers that require one do; set {section} cert_file and key_file"),
        E::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::AccessDenied
            | Alert::HandshakeFailure),
        ) if client_cert => format!("TLS: the broker refused this gateway's client certificate ({alert:?}); check that the broker trusts its CA and that it has not expired"),
        other => format!("TLS: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_is_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let text = explain(&io, "[upstream.tls]", false).expect("a TLS cause");
        assert!(text.contains("unknown CA"), "{text}");
        assert!(text.contains("[upstream.tls] ca_file"), "{text}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(&plain, "[upstream.tls]", false), None);
        // A TLS 1.2 broker that requires a client certificate.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let text = explain(&io, "[lan.tls]", false).unwrap();
        assert!(text.starts_with("TLS: no client certificate"), "{text}");
        assert!(text.contains("[lan.tls] cert_file"), "{text}");
    }

    #[test]
    fn validity_counts_whole_days_left() {
        let v = Validity {
            not_before: 0,
            not_after: 10 * 86_400,
        };
        assert_eq!(v.days_left(0), 10);
        assert_eq!(v.days_left(86_400 + 1), 8);
        assert_eq!(v.days_left(11 * 86_400), -1);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
