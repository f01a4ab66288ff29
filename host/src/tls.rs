//! TLS for stream sockets and listeners, on rustls: the host's identities and trust roots,
//! client and server configurations, a certificate verifier that records (and, when the guest
//! asks, ignores) certificate errors, and the mapping of TLS failures to statuses.
//!
//! Private keys live here and never enter guest memory: guests name an identity.

use crate::bindings::types::{
    Certificate, ChainValidationResult, SocketError, SocketErrorStatus, SocketProtectionLevel,
    SocketSslErrorSeverity,
};
use crate::conv::{error, invalid_argument};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// An identity: a certificate chain and its private key.
#[derive(Debug)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The host's TLS material: named identities, extra trust roots, revocation lists.
#[derive(Default)]
pub struct TlsConfig {
    identities: HashMap<String, Identity>,
    extra_roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    no_system_roots: bool,
    roots: OnceLock<Arc<RootCertStore>>,
    /// Built once: it depends only on the roots and revocation lists.
    server_verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    /// The resuming client configurations, one per set of settings that shape what a
    /// handshake accepts and proves (see [`TlsConfig::client_config`]): a handful, since the
    /// levels are few and the identities are the host's.
    resuming: Mutex<HashMap<SessionKey, Arc<ClientConfig>>>,
}

/// The client settings a resumed session must share with the one that made it. ALPN is not
/// among them: it is offered per connection, so guests cannot grow this set.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    /// The protection levels, as their WIT case numbers.
    level: u8,
    min_level: u8,
    client_certificate: Option<String>,
}

/// Sessions kept per set of settings (keyed by server name within it).
const SESSIONS_PER_SETTINGS: usize = 256;

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identities", &self.identities.keys().collect::<Vec<_>>())
            .field("extra_roots", &self.extra_roots.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

/// A TLS file the host could not use.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TlsFileError {
    path: String,
    why: String,
}

fn file_error(path: &Path, why: impl fmt::Display) -> TlsFileError {
    TlsFileError {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

impl TlsConfig {
    /// Adds an identity from PEM files: the certificate chain (end entity first) and its key.
    pub fn add_identity(
        &mut self,
        name: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<(), TlsFileError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_error(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(cert, e))?;
        if chain.is_empty() {
            return Err(file_error(cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
        self.add_identity_der(name, chain, key);
        Ok(())
    }

    /// Adds an identity from DER.
    pub fn add_identity_der(
        &mut self,
        name: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) {
        self.identities
            .insert(name.to_string(), Identity { chain, key });
    }

    /// Trusts the certificates of a PEM file as roots, beside the system's.
    pub fn add_ca(&mut self, path: &Path) -> Result<(), TlsFileError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_error(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))?;
        if certs.is_empty() {
            return Err(file_error(path, "no certificate in the file"));
        }
        self.extra_roots.extend(certs);
        Ok(())
    }

    /// Trusts a root given as DER.
    pub fn add_ca_der(&mut self, cert: CertificateDer<'static>) {
        self.extra_roots.push(cert);
    }

    /// Checks certificates against the revocation lists of a PEM file.
    pub fn add_crl(&mut self, path: &Path) -> Result<(), TlsFileError> {
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| file_error(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))?;
        if crls.is_empty() {
            return Err(file_error(path, "no revocation list in the file"));
        }
        self.crls.extend(crls);
        Ok(())
    }

    /// Adds a revocation list given as DER.
    pub fn add_crl_der(&mut self, crl: CertificateRevocationListDer<'static>) {
        self.crls.push(crl);
    }

    /// Trusts only the roots added with `add_ca`, not the system's.
    pub fn without_system_roots(&mut self) {
        self.no_system_roots = true;
    }

    /// Whether an identity of that name exists.
    pub fn has_identity(&self, name: &str) -> bool {
        self.identities.contains_key(name)
    }

    fn provider() -> Arc<CryptoProvider> {
        static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
        PROVIDER
            .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
            .clone()
    }

    fn server_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, SocketError> {
        self.server_verifier
            .get_or_init(|| {
                WebPkiServerVerifier::builder_with_provider(self.roots(), Self::provider())
                    .with_crls(self.crls.clone())
                    .allow_unknown_revocation_status()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| {
                error(
                    SocketErrorStatus::CertificateIsInvalid,
                    format!("trust roots: {e}"),
                )
            })
    }

    /// The system's roots (loaded once, on first use) and the added ones.
    fn roots(&self) -> Arc<RootCertStore> {
        self.roots
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                if !self.no_system_roots {
                    let native = rustls_native_certs::load_native_certs();
                    let (added, ignored) = roots.add_parsable_certificates(native.certs);
                    tracing::debug!(
                        added,
                        ignored,
                        errors = native.errors.len(),
                        "system trust roots"
                    );
                }
                for cert in &self.extra_roots {
                    if let Err(e) = roots.add(cert.clone()) {
                        tracing::warn!(error = %e, "a --tls-ca certificate is not a usable root");
                    }
                }
                Arc::new(roots)
            })
            .clone()
    }

    /// A client configuration for one handshake; `recorder` collects certificate errors. The
    /// connection offers the ALPN protocols itself (`ClientConnection::new_with_alpn`).
    ///
    /// A connection that ignores no certificate error gets a configuration shared by every
    /// connection with the same levels and client identity, which resumes TLS sessions:
    /// rustls resumes only with the very verifier and client credentials that made the
    /// session, and a resumed handshake checks no certificate, so sessions are shared only
    /// among connections that verify fully (and report no errors, as a resumed connection
    /// does). A connection that ignores errors gets a configuration of its own whose verifier
    /// records what it found.
    pub fn client_config(
        &self,
        settings: &ClientTls,
        recorder: Arc<CertificateErrors>,
    ) -> Result<Arc<ClientConfig>, SocketError> {
        if settings.ignorable.is_empty() {
            return self.resuming_client_config(settings);
        }
        let verifier = RecordingVerifier {
            inner: self.server_verifier()?,
            ignorable: settings.ignorable.clone(),
            recorder,
        };
        let mut config = self.build_client_config(settings, Arc::new(verifier))?;
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// The shared, resuming configuration for connections with these settings.
    fn resuming_client_config(
        &self,
        settings: &ClientTls,
    ) -> Result<Arc<ClientConfig>, SocketError> {
        let key = SessionKey {
            level: settings.level as u8,
            min_level: settings.min_level as u8,
            client_certificate: settings.client_certificate.clone(),
        };
        let lock = || self.resuming.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = lock().get(&key) {
            return Ok(config.clone());
        }
        // Built unlocked: the first build may load the system's trust roots.
        let mut config = self.build_client_config(settings, self.server_verifier()?)?;
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(
            SESSIONS_PER_SETTINGS,
        )));
        // A racing build of the same key loses to the first, whose sessions others share.
        Ok(lock()
            .entry(key)
            .or_insert_with(|| Arc::new(config))
            .clone())
    }

    fn build_client_config(
        &self,
        settings: &ClientTls,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<ClientConfig, SocketError> {
        let builder = ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&versions(settings.level, settings.min_level)?)
            .map_err(|e| error(SocketErrorStatus::NotSupported, e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &settings.client_certificate {
            Some(name) => {
                let identity = self.identity(name)?;
                builder
                    .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                    .map_err(|e| invalid_argument(format!("identity {name:?}: {e}")))
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// A server configuration for a TLS listener.
    pub fn server_config(
        &self,
        level: SocketProtectionLevel,
        identity: &str,
        require_client_certificate: bool,
    ) -> Result<Arc<ServerConfig>, SocketError> {
        let provider = Self::provider();
        let identity = self.identity(identity)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(level, SocketProtectionLevel::Tls12)?)
            .map_err(|e| error(SocketErrorStatus::NotSupported, e))?;
        let builder = if require_client_certificate {
            let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider)
                .with_crls(self.crls.clone())
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| {
                    error(
                        SocketErrorStatus::CertificateIsInvalid,
                        format!("client trust roots: {e}"),
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| invalid_argument(format!("server identity: {e}")))?;
        Ok(Arc::new(config))
    }

    fn identity(&self, name: &str) -> Result<&Identity, SocketError> {
        self.identities.get(name).ok_or_else(|| {
            invalid_argument(format!(
                "the host has no TLS identity named {name:?} (see --tls-identity)"
            ))
        })
    }
}

/// A stream socket's TLS control settings.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The protection level asked for.
    pub level: SocketProtectionLevel,
    /// `MinProtectionLevel`.
    pub min_level: SocketProtectionLevel,
    /// `ClientCertificate`: an identity name.
    pub client_certificate: Option<String>,
    /// `IgnorableServerCertificateErrors`.
    pub ignorable: Vec<ChainValidationResult>,
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
}

impl Default for ClientTls {
    fn default() -> Self {
        Self {
            level: SocketProtectionLevel::PlainSocket,
            min_level: SocketProtectionLevel::Tls12,
            client_certificate: None,
            ignorable: Vec::new(),
            alpn: Vec::new(),
        }
    }
}

/// Whether a protection level asks for TLS; refuses the levels rustls rightly does not speak.
pub fn is_tls(level: SocketProtectionLevel) -> Result<bool, SocketError> {
    use SocketProtectionLevel as L;
    match level {
        L::PlainSocket => Ok(false),
        L::Tls12 | L::Tls13 | L::Unspecified => Ok(true),
        other => Err(error(
            SocketErrorStatus::NotSupported,
            format!(
                "protection level {other:?} is not supported: only TLS 1.2 and 1.3 are (SSL, TLS 1.0/1.1 and Bluetooth levels are refused, not downgraded)"
            ),
        )),
    }
}

/// The TLS versions a level (and a minimum) allows.
fn versions(
    level: SocketProtectionLevel,
    min: SocketProtectionLevel,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, SocketError> {
    use SocketProtectionLevel as L;
    let mut versions = match level {
        L::Tls12 => vec![&rustls::version::TLS12],
        L::Tls13 => vec![&rustls::version::TLS13],
        _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    if min == L::Tls13 {
        versions.retain(|v| v.version == rustls::ProtocolVersion::TLSv1_3);
    }
    if versions.is_empty() {
        return Err(error(
            SocketErrorStatus::NotSupported,
            format!("{level:?} is below the minimum protection level {min:?}"),
        ));
    }
    Ok(versions)
}

/// Whether a guest may list this error as ignorable (UWP's ignorable severity).
pub fn is_ignorable(result: ChainValidationResult) -> bool {
    severity_of(result) == SocketSslErrorSeverity::Ignorable
}

fn severity_of(result: ChainValidationResult) -> SocketSslErrorSeverity {
    use ChainValidationResult as C;
    match result {
        C::Success => SocketSslErrorSeverity::None,
        C::Untrusted
        | C::Expired
        | C::IncompleteChain
        | C::WrongUsage
        | C::InvalidName
        | C::RevocationInformationMissing
        | C::RevocationFailure => SocketSslErrorSeverity::Ignorable,
        _ => SocketSslErrorSeverity::Fatal,
    }
}

/// The worst severity among errors.
pub fn severity(errors: &[ChainValidationResult]) -> SocketSslErrorSeverity {
    errors
        .iter()
        .map(|e| severity_of(*e))
        .max_by_key(|s| *s as u8)
        .unwrap_or(SocketSslErrorSeverity::None)
}

/// The chain result and status for a certificate error.
fn classify(error: &CertificateError) -> (ChainValidationResult, SocketErrorStatus) {
    use ChainValidationResult as C;
    use SocketErrorStatus as S;
    match error {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => (C::Expired, S::CertificateExpired),
        CertificateError::UnknownIssuer => (C::Untrusted, S::CertificateUntrustedRoot),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            (C::InvalidName, S::CertificateCommonNameIsIncorrect)
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            (C::WrongUsage, S::CertificateWrongUsage)
        }
        CertificateError::Revoked => (C::Revoked, S::CertificateRevoked),
        CertificateError::UnknownRevocationStatus => (
            C::RevocationInformationMissing,
            S::CertificateNoRevocationCheck,
        ),
        CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => {
            (C::RevocationFailure, S::CertificateNoRevocationCheck)
        }
        CertificateError::BadSignature => (C::InvalidSignature, S::CertificateIsInvalid),
        CertificateError::UnhandledCriticalExtension => {
            (C::UnknownCriticalExtension, S::CertificateIsInvalid)
        }
        _ => (C::OtherErrors, S::CertificateIsInvalid),
    }
}

/// Converts a failed handshake to a status: certificate errors to their statuses, the rest to
/// `unknown` with rustls's message.
pub fn handshake_error(err: &rustls::Error, peer: impl fmt::Display) -> SocketError {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            let (_, status) = classify(cert);
            error(
                status,
                format!("TLS handshake with {peer}: invalid certificate: {cert:?}"),
            )
        }
        other => error(
            SocketErrorStatus::Unknown,
            format!("TLS handshake with {peer}: {other}"),
        ),
    }
}

/// The certificate errors seen in one handshake, shared with its verifier.
#[derive(Debug, Default)]
pub struct CertificateErrors(Mutex<Vec<ChainValidationResult>>);

impl CertificateErrors {
    fn push(&self, result: ChainValidationResult) {
        let mut errors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !errors.contains(&result) {
            errors.push(result);
        }
    }

    /// The errors, in the order found.
    pub fn take(&self) -> Vec<ChainValidationResult> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Verifies server certificates with webpki, recording every error and letting the ones the
/// guest listed as ignorable through. The name is still checked after an ignored chain error.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ignorable: Vec<ChainValidationResult>,
    recorder: Arc<CertificateErrors>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut failure = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(rustls::Error::InvalidCertificate(e)) => e,
            Err(other) => return Err(other),
        };
        loop {
            let (result, _) = classify(&failure);
            self.recorder.push(result);
            if !self.ignorable.contains(&result) {
                return Err(rustls::Error::InvalidCertificate(failure));
            }
            if result == ChainValidationResult::InvalidName {
                return Ok(ServerCertVerified::assertion());
            }
            // webpki stops at the first chain error; the name is checked separately.
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            match rustls::client::verify_server_name(&parsed, server_name) {
                Ok(()) => return Ok(ServerCertVerified::assertion()),
                Err(rustls::Error::InvalidCertificate(e)) => failure = e,
                Err(other) => return Err(other),
            }
        }
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

/// The parts of a certificate a guest sees.
pub fn certificate_info(der: &CertificateDer<'_>) -> Certificate {
    let (subject, issuer, valid_from, valid_to) = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (
            cert.subject().to_string(),
            cert.issuer().to_string(),
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        ),
        Err(_) => (String::new(), String::new(), 0, 0),
    };
    Certificate {
        der: der.to_vec(),
        subject,
        issuer,
        valid_from,
        valid_to,
    }
}

/// The name a server certificate must be valid for.
pub fn server_name(host: &crate::host_name::HostName) -> Result<ServerName<'static>, SocketError> {
    ServerName::try_from(host.canonical_name().to_string()).map_err(|e| {
        invalid_argument(format!(
            "{} cannot be validated by TLS: {e}",
            host.raw_name()
        ))
    })
}
