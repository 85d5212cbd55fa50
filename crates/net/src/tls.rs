//! TLS on the client URLs (`https://`), with etcd's flags: a certificate and key,
//! optionally a trusted CA and required client certificates (`--client-cert-auth`),
//! a certificate revocation list, or a self-signed certificate made at start
//! (`--auto-tls`). rustls only, no OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{Error, Result};

/// The error for `what`, caused by `error`, as one line.
fn fail(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {error}"))
}

/// The client TLS flags.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `--cert-file`: the server's certificate (PEM), chain included.
    pub cert_file: String,
    /// `--key-file`: its private key (PEM).
    pub key_file: String,
    /// `--trusted-ca-file`: the CAs client certificates are verified against.
    pub trusted_ca_file: String,
    /// `--client-cert-auth`: refuse clients without a verified certificate.
    pub client_cert_auth: bool,
    /// `--client-crl-file`: revoked certificates, PEM or DER.
    pub crl_file: String,
    /// `--auto-tls`: a self-signed certificate made at start when none is given.
    pub auto_tls: bool,
}

/// etcd's client TLS flags (and their `ETCD_*` variables), for a `clap` command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", default_value = "")]
    cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", default_value = "")]
    key_file: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", default_value = "")]
    trusted_ca_file: String,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE", default_value = "")]
    client_crl_file: String,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    auto_tls: bool,
}

/// etcd's peer TLS flags (and their `ETCD_*` variables), for a `clap` command.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerTlsFlags {
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", default_value = "")]
    peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", default_value = "")]
    peer_key_file: String,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", default_value = "")]
    peer_trusted_ca_file: String,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    peer_client_cert_auth: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE", default_value = "")]
    peer_crl_file: String,
    /// Peer TLS using self-generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    peer_auto_tls: bool,
}

impl ClientTlsFlags {
    /// The files and switches the flags name.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            crl_file: self.client_crl_file.clone(),
            auto_tls: self.auto_tls,
        }
    }
}

impl PeerTlsFlags {
    /// The files and switches the flags name.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            crl_file: self.peer_crl_file.clone(),
            auto_tls: self.peer_auto_tls,
        }
    }
}

impl TlsFiles {
    /// Whether any TLS flag is set.
    pub fn any(&self) -> bool {
        !self.cert_file.is_empty()
            || !self.key_file.is_empty()
            || !self.trusted_ca_file.is_empty()
            || !self.crl_file.is_empty()
            || self.client_cert_auth
            || self.auto_tls
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(file: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|error| fail(format!("cannot read certificate file {file}"), error))?
        .collect::<Result<_, _>>()
        .map_err(|error| fail(format!("cannot parse certificate file {file}"), error))?;
    if certificates.is_empty() {
        return Err(Error::Tls(format!("no certificate in {file}")));
    }
    Ok(certificates)
}

/// The server's TLS configuration, or `None` when no TLS flag is set. `--auto-tls`
/// certificates are kept in `auto_dir`.
pub fn server_config(files: &TlsFiles, auto_dir: &Path) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if !files.any() {
        return Ok(None);
    }
    let (cert_file, key_file) = if files.cert_file.is_empty() && files.auto_tls {
        let (cert, key) = self_signed(auto_dir)?;
        (cert.display().to_string(), key.display().to_string())
    } else {
        (files.cert_file.clone(), files.key_file.clone())
    };
    if cert_file.is_empty() || key_file.is_empty() {
        return Err(Error::Tls("TLS needs both --cert-file and --key-file (or --auto-tls)".into()));
    }
    let certificates = read_certificates(&cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|error| fail(format!("cannot read key file {key_file}"), error))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| fail("TLS protocol versions", error))?;
    let builder = if files.trusted_ca_file.is_empty() {
        if files.client_cert_auth {
            return Err(Error::Tls("--client-cert-auth needs --trusted-ca-file".into()));
        }
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let anchors = read_certificates(&files.trusted_ca_file)?;
        for certificate in anchors.clone() {
            roots
                .add(certificate)
                .map_err(|error| fail(format!("bad CA certificate in {}", files.trusted_ca_file), error))?;
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        if !files.crl_file.is_empty() {
            verifier = verifier.with_crls(read_crls(&files.crl_file)?);
        }
        if !files.client_cert_auth {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|error| {
            let what = format!(
                "client certificate verifier (CA {}, CRL {:?})",
                files.trusted_ca_file, files.crl_file
            );
            fail(what, error)
        })?;
        let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
            Arc::new(TrustAnchorClients { inner: verifier, anchors });
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(certificates, key).map_err(|error| {
        fail(format!("key file {key_file} does not fit certificate file {cert_file}"), error)
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The CRLs in `path`: PEM `X509 CRL` blocks, or else the whole file as one DER CRL,
/// as etcd (Go's `x509.ParseCRL`) reads either. Reading a DER file as PEM would find
/// no CRL and check no revocation at all; a file that is neither stops the start when
/// the verifier parses it.
fn read_crls(path: &str) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|error| fail(format!("cannot read CRL file {path}"), error))?;
    let pem: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|error| fail(format!("cannot parse CRL file {path}"), error))?;
    Ok(if pem.is_empty() { vec![CertificateRevocationListDer::from(bytes)] } else { pem })
}

/// What a member presents to its peers and trusts them by, for `https://` peer URLs:
/// its peer certificate (as a client certificate) and the peer CA.
pub fn peer_client_config(files: &TlsFiles) -> Result<Option<crate::peer::PeerTls>> {
    if files.cert_file.is_empty() && files.auto_tls {
        return Ok(Some(crate::peer::PeerTls::Unverified(UnverifiedTls::new()?)));
    }
    if files.cert_file.is_empty() || files.trusted_ca_file.is_empty() {
        return Ok(None);
    }
    let read = |file: &str| std::fs::read(file).map_err(|error| fail(format!("cannot read {file}"), error));
    let identity = tonic::transport::Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?);
    let ca = tonic::transport::Certificate::from_pem(read(&files.trusted_ca_file)?);
    Ok(Some(crate::peer::PeerTls::Verified(
        tonic::transport::ClientTlsConfig::new().ca_certificate(ca).identity(identity),
    )))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 in `dir`, made once.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|error| fail(format!("cannot create {}", dir.display()), error))?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|error| fail("cannot generate a certificate", error))?;
    let written = |error| fail(format!("cannot write the certificate in {}", dir.display()), error);
    std::fs::write(&cert_path, certified.cert.pem()).map_err(written)?;
    // As etcd writes it: readable by the owner alone.
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(written)?;
        key.write_all(certified.signing_key.serialize_pem().as_bytes()).map_err(written)?;
    }
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate (--auto-tls)");
    Ok((cert_path, key_path))
}

/// TLS connections accepted on `listener`, handshakes done off the accept loop.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = Result<TlsStream<tokio::net::TcpStream>, std::io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // Small raft and gRPC frames must not wait for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                // A client that fails or stalls the handshake is dropped.
                if let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                {
                    let _ = sender.send(Ok(stream)).await;
                }
            });
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// The common name of a client certificate.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(name)
}

/// Accepts any server certificate: for `--peer-auto-tls`, where every member's
/// certificate is self-signed, as etcd's members skip verification there too. The
/// connection is encrypted but not authenticated.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connector for tonic that speaks TLS without verifying the peer (`--peer-auto-tls`).
#[derive(Clone)]
pub struct UnverifiedTls {
    connector: tokio_rustls::TlsConnector,
}

impl UnverifiedTls {
    /// A connector that accepts any server certificate.
    pub fn new() -> Result<Self> {
        let provider = provider();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| fail("TLS protocol versions", error))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { connector: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }
}

type Connected = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<tonic::codegen::http::Uri> for UnverifiedTls {
    type Response = Connected;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connected, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let connector = self.connector.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("peer URL without {what}"))
            };
            let host = uri.host().ok_or_else(|| invalid("a host"))?.to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("a port"))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad peer host"))?;
            let stream = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// The client verifier, accepting too a client certificate that is itself one of the
/// trusted CAs (a self-signed certificate used as CA, server and client certificate
/// at once, as etcd's test fixtures and some small deployments do). webpki refuses a
/// CA certificate as an end entity; Go, and so etcd, trusts a leaf found among its
/// roots while it is within its validity. The handshake's signature check, which still
/// applies, proves the client holds that certificate's key.
#[derive(Debug)]
struct TrustAnchorClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    anchors: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl rustls::server::danger::ClientCertVerifier for TrustAnchorClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Err(error) if self.anchors.iter().any(|anchor| anchor.as_ref() == end_entity.as_ref()) => {
                let valid =
                    x509_parser::parse_x509_certificate(end_entity.as_ref()).is_ok_and(|(_, parsed)| {
                        let now = now.as_secs() as i64;
                        parsed.validity().not_before.timestamp() <= now
                            && now <= parsed.validity().not_after.timestamp()
                    });
                if valid { Ok(rustls::server::danger::ClientCertVerified::assertion()) } else { Err(error) }
            }
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
