//! Certificates made at test time with rcgen: a CA, good and deliberately bad server
//! certificates, client certificates, and revocation lists; and native rustls peers.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
}

/// A certificate and its key.
pub struct Leaf {
    /// The certificate chain, end entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The serial number.
    pub serial: u64,
}

impl Leaf {
    /// A copy of the key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// What a leaf certificate should be like.
pub struct LeafSpec<'a> {
    /// Common name.
    pub name: &'a str,
    /// Subject alternative names.
    pub sans: &'a [&'a str],
    /// Extended key usage.
    pub usage: ExtendedKeyUsagePurpose,
    /// Already expired.
    pub expired: bool,
    /// Serial number.
    pub serial: u64,
}

impl Ca {
    /// A new CA.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// A leaf certificate signed by this CA.
    pub fn leaf(&self, spec: LeafSpec<'_>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(spec.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name);
        params.extended_key_usages = vec![spec.usage];
        params.serial_number = Some(SerialNumber::from(spec.serial));
        params.use_authority_key_identifier_extension = true;
        if spec.expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = date_time_ymd(2024, 1, 1);
            params.not_after = date_time_ymd(2099, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            serial: spec.serial,
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self, serial: u64) -> Leaf {
        self.leaf(LeafSpec {
            name: "localhost",
            sans: &["localhost", "127.0.0.1"],
            usage: ExtendedKeyUsagePurpose::ServerAuth,
            expired: false,
            serial,
        })
    }

    /// A client certificate.
    pub fn client(&self, name: &str, serial: u64) -> Leaf {
        self.leaf(LeafSpec {
            name,
            sans: &[],
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            expired: false,
            serial,
        })
    }

    /// A revocation list naming these serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> CertificateRevocationListDer<'static> {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(2024, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().der().clone()
    }
}

/// A copy of a certificate whose signature no longer verifies (one bit of it flipped).
pub fn tampered(cert: &CertificateDer<'static>) -> CertificateDer<'static> {
    let mut der = cert.to_vec();
    let last = der.len() - 1;
    der[last - 4] ^= 0x01;
    CertificateDer::from(der)
}

/// A native rustls server configuration, optionally requiring client certificates from `ca`.
pub fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain.clone(), leaf.key())
        .unwrap();
    config.alpn_protocols = vec![b"echo/1".to_vec()];
    Arc::new(config)
}

/// A native rustls client configuration trusting `ca`, with an optional client certificate.
pub fn client_config(ca: &Ca, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain.clone(), leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A native TLS line-echo server on 127.0.0.1. With `starttls`, each connection first
/// answers `STARTTLS` with `OK` in plain text, then switches to TLS.
pub async fn native_tls_echo(config: Arc<ServerConfig>, starttls: bool) -> SocketAddr {
    native_tls_echo_counting(config, starttls).await.0
}

/// How many full and resumed handshakes a native TLS server completed.
#[derive(Clone, Default)]
pub struct Handshakes {
    full: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
}

impl Handshakes {
    /// (full, resumed) so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.full.load(Ordering::SeqCst),
            self.resumed.load(Ordering::SeqCst),
        )
    }
}

/// [`native_tls_echo`], counting full and resumed handshakes.
pub async fn native_tls_echo_counting(
    config: Arc<ServerConfig>,
    starttls: bool,
) -> (SocketAddr, Handshakes) {
    let handshakes = Handshakes::default();
    let counts = handshakes.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Nagle would hold the echo behind the session ticket until the peer's delayed ACK.
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                if starttls {
                    let mut line = [0u8; 9];
                    if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut line)
                        .await
                        .is_err()
                        || &line != b"STARTTLS\n"
                    {
                        return;
                    }
                    if stream.write_all(b"OK\n").await.is_err() {
                        return;
                    }
                }
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let counter = match tls.get_ref().1.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => &counts.resumed,
                    _ => &counts.full,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = write.shutdown().await;
            });
        }
    });
    (addr, handshakes)
}
