//! `--secure-listen`: the whole API over HTTPS (rustls, ring), with client certificates
//! verified against the device's CA when offered. Each connection's handshake runs in its own
//! task; then it is served like any other, its requests authenticated by [`Authenticator`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use smol::net::TcpListener;

use super::auth::{Authenticator, Identity, Peer};
use super::pki::{self, Ca};
use super::server::{spawn_connection, ApiError};
use super::{x509, ApiConfig, Published};
use crate::store::Tokens;

/// How the secure listener is set up (`outpost run`'s flags).
#[derive(Clone, Debug)]
pub struct SecureConfig {
    /// `--secure-listen`.
    pub listen: SocketAddr,
    /// `--tls-cert-file` and `--tls-private-key-file`: the operator's serving certificate
    /// (chain) and key, instead of one the device's CA signs.
    pub cert_files: Option<(PathBuf, PathBuf)>,
    /// `--tls-san`: more names for the generated serving certificate.
    pub extra_names: Vec<String>,
}

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings: the serving certificate (made or the operator's) and client
/// certificates verified against the CA, optional (tokens work without one).
pub fn server_config(
    secure: &SecureConfig,
    state_dir: &Path,
) -> Result<rustls::ServerConfig, ApiError> {
    let dir = pki::dir(state_dir);
    let ca = Ca::ensure(&dir, crate::format::now().as_second())?;
    let tls = |message: String| ApiError::Tls { message };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der().to_vec())).map_err(|e| tls(e.to_string()))?;
    let resolver: Arc<dyn ResolvesServerCert> = match &secure.cert_files {
        Some((cert, key)) => {
            let err = |path: &Path, message: String| ApiError::TlsFile {
                path: path.to_path_buf(),
                message,
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err(cert, e.to_string()))?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e.to_string()))?;
            let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
                err(key, format!("does not fit --tls-cert-file {}: {e}", cert.display()))
            })?;
            Arc::new(Fixed(Arc::new(certified)))
        }
        None => {
            let extra = secure.extra_names.clone();
            let names = Box::new(move || pki::device_names(&extra));
            Arc::new(Rotating::new(dir, ca, names, provider.clone(), RECHECK)?)
        }
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    // hyper serves HTTP/1.1 here (and its upgrades).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The operator's certificate (`--tls-cert-file`), as given.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// How often, at most, the device's names are compared with the serving certificate's.
const RECHECK: Duration = Duration::from_secs(60);

/// The generated serving certificate, checked against the device's names at most every
/// `recheck` (on a handshake): an address from DHCP or a renamed host gets a new certificate
/// without a restart, as does one nearing its end ([`Ca::serving`] decides).
struct Rotating {
    dir: PathBuf,
    ca: Ca,
    names: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    provider: Arc<CryptoProvider>,
    recheck: Duration,
    current: Mutex<(Instant, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for Rotating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotating").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Rotating {
    fn new(
        dir: PathBuf,
        ca: Ca,
        names: Box<dyn Fn() -> Vec<String> + Send + Sync>,
        provider: Arc<CryptoProvider>,
        recheck: Duration,
    ) -> Result<Self, ApiError> {
        let key = Self::load(&dir, &ca, &names(), &provider)?;
        Ok(Self { dir, ca, names, provider, recheck, current: Mutex::new((Instant::now(), key)) })
    }

    fn load(
        dir: &Path,
        ca: &Ca,
        names: &[String],
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, ApiError> {
        let (cert, key) = ca.serving(dir, names, crate::format::now().as_second())?;
        let invalid = |message: String| ApiError::TlsFile { path: dir.to_path_buf(), message };
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).flatten().collect();
        let key =
            PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let key =
            CertifiedKey::from_der(chain, key, provider).map_err(|e| invalid(e.to_string()))?;
        Ok(Arc::new(key))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0.elapsed() >= self.recheck {
            current.0 = Instant::now();
            match Self::load(&self.dir, &self.ca, &(self.names)(), &self.provider) {
                Ok(key) => current.1 = key,
                Err(e) => log::warn!("api: keeping the serving certificate: {e}"),
            }
        }
        current.1.clone()
    }
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The bound secure listener, ready to accept.
pub struct SecureListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    auth: Arc<Authenticator>,
}

impl SecureListener {
    /// Makes or loads the certificates, opens the token table and binds.
    pub async fn bind(secure: &SecureConfig, config: &ApiConfig) -> Result<Self, ApiError> {
        let tls = server_config(secure, &config.state_dir)?;
        let tokens = Tokens::open(&config.state_dir.join(crate::store::DATABASE))?;
        let auth = Arc::new(Authenticator::new(tokens, config.token.clone()));
        let addr = secure.listen;
        let tcp =
            TcpListener::bind(addr).await.map_err(|source| ApiError::Bind { addr, source })?;
        log::info!("api: listening securely on https://{}", tcp.local_addr().unwrap_or(addr));
        Ok(Self { tcp, acceptor: TlsAcceptor::from(Arc::new(tls)), auth })
    }

    /// Accepts TLS connections until dropped.
    pub async fn run(
        self,
        ex: Arc<smol::Executor<'static>>,
        published: Arc<Published>,
        config: Arc<ApiConfig>,
    ) {
        let Self { tcp, acceptor, auth } = self;
        accept_loop(tcp, acceptor, auth, ex, published, config).await
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    auth: Arc<Authenticator>,
    ex: Arc<smol::Executor<'static>>,
    published: Arc<Published>,
    config: Arc<ApiConfig>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("api: accept on the secure listener failed: {e}");
                continue;
            }
        };
        let (acceptor, auth, published, config) =
            (acceptor.clone(), auth.clone(), published.clone(), config.clone());
        let tasks = ex.clone();
        ex.spawn(async move {
            let handshake = async { Some(acceptor.accept(stream).await) };
            let timeout = async {
                smol::Timer::after(HANDSHAKE_TIMEOUT).await;
                None
            };
            let stream = match smol::future::or(handshake, timeout).await {
                Some(Ok(stream)) => stream,
                Some(Err(e)) => return handshake_failed(addr, &e),
                None => return log::debug!("api: TLS handshake with {addr} timed out"),
            };
            let certificate = client_identity(&stream, addr);
            let peer = Peer::Secure { auth, ip: addr.ip(), certificate };
            spawn_connection(&tasks, stream, &published, &config, peer);
        })
        .detach();
    }
}

/// A client certificate the CA did not sign is a failed authentication: logged. Other
/// failures (scanners, clients that do not trust the CA) only at debug.
fn handshake_failed(addr: SocketAddr, e: &std::io::Error) {
    let rustls_error = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(why)) => {
            log::warn!(
                "api: authentication failed from {}: client certificate refused: {why:?}",
                addr.ip()
            )
        }
        _ => log::debug!("api: TLS handshake with {addr} failed: {e}"),
    }
}

/// The verified client certificate's caller, if one was offered and names a role.
fn client_identity(
    stream: &futures_rustls::server::TlsStream<smol::net::TcpStream>,
    addr: SocketAddr,
) -> Option<Identity> {
    let cert = stream.get_ref().1.peer_certificates()?.first()?;
    let subject = x509::subject(cert)?;
    let identity = Identity::from_certificate(&subject);
    if identity.is_none() {
        log::warn!(
            "api: authentication failed from {}: client certificate CN={:?} names no role (O=view or O=admin)",
            addr.ip(),
            subject.common_name.unwrap_or_default()
        );
    }
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_certificate_follows_the_devices_names_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::ensure(dir.path(), crate::format::now().as_second()).unwrap();
        let names = Arc::new(Mutex::new(vec!["edge".to_string(), "10.0.0.5".to_string()]));
        let source = names.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let lookup = Box::new(move || source.lock().unwrap().clone());
        let rotating =
            Rotating::new(dir.path().into(), ca, lookup, provider, Duration::ZERO).unwrap();
        let first = rotating.current().cert[0].clone();
        assert_eq!(rotating.current().cert[0], first, "same names, same certificate");
        names.lock().unwrap()[1] = "10.0.0.6".into();
        let second = rotating.current().cert[0].clone();
        assert_ne!(second, first, "a new address, a new certificate");
        assert_eq!(pki::serving_names(dir.path()).unwrap(), ["edge", "10.0.0.6"]);
    }

    #[test]
    fn the_operators_certificate_is_served_and_a_key_that_does_not_fit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = rcgen::generate_simple_self_signed(vec!["edge.example".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let (cert, key, wrong) =
            (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("wrong.key"));
        std::fs::write(&cert, theirs.cert.pem()).unwrap();
        std::fs::write(&key, theirs.signing_key.serialize_pem()).unwrap();
        std::fs::write(&wrong, other.serialize_pem()).unwrap();
        let secure = |key: &Path| SecureConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_files: Some((cert.clone(), key.to_path_buf())),
            extra_names: vec![],
        };
        server_config(&secure(&key), dir.path()).unwrap();
        assert!(!dir.path().join("pki/server.crt").exists(), "no serving certificate made");
        let e = server_config(&secure(&wrong), dir.path()).unwrap_err().to_string();
        assert!(e.contains("wrong.key") && e.contains("does not fit --tls-cert-file"), "{e}");
        let e = server_config(&secure(&dir.path().join("missing.key")), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.key"), "{e}");
    }
}
