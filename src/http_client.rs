//! A small HTTP/1.1 client on hyper and smol: one connection per request (a pull makes a
//! handful, a manifest source one per interval), TLS by rustls with the system trust store
//! (plus configured CA files), a timeout on connecting, on waiting for the response and on
//! every pause in a body. Shared by the image puller and the manifest URL sources.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use smol::io::{AsyncRead, AsyncWrite};
use smol_hyper::rt::FuturesIo;

/// Why a request failed. Messages are Go's (`dial tcp`, `lookup`), as the kubelet prints them.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The host name does not resolve.
    #[error("lookup {host}: {source}")]
    Resolve { host: String, source: std::io::Error },

    /// No TCP connection (refused, unreachable network...).
    #[error("dial tcp {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },

    /// The TLS handshake failed, e.g. the certificate is not trusted.
    #[error("tls handshake with {host}: {source}")]
    Tls { host: String, source: std::io::Error },

    /// The server did not answer (or stopped sending) within the timeout.
    #[error("{method} {url}: no answer within {after:?}")]
    Timeout { method: &'static str, url: String, after: Duration },

    /// The HTTP exchange broke (connection reset, malformed response).
    #[error("{method} {url}: {source}")]
    Http { method: &'static str, url: String, source: hyper::Error },

    /// A request to this URL cannot be built (e.g. a header value with a newline).
    #[error("invalid request for {url}: {reason}")]
    Request { authority: String, url: String, reason: &'static str },

    /// The body is longer than the caller accepts.
    #[error("{what}: larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },

    /// A configured CA file could not be read.
    #[error("{}: {source}", path.display())]
    CaFile { path: PathBuf, source: std::io::Error },
}

impl HttpError {
    /// Nothing (or nothing sane) answered.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HttpError::Resolve { .. }
                | HttpError::Connect { .. }
                | HttpError::Timeout { .. }
                | HttpError::Http { .. }
        )
    }
}

const USER_AGENT: &str = concat!("outpost/", env!("CARGO_PKG_VERSION"));

/// Where a request goes: parsed from a URL, or built for a registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Target {
    /// Parses an absolute `http(s)://host[:port]/path?query` URL.
    pub fn parse(url: &str) -> Result<Target, &'static str> {
        let uri: hyper::Uri = url.parse().map_err(|_| "not a URL")?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("scheme must be http or https"),
        };
        let authority = uri.authority().ok_or("no host")?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err("no host");
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
        Ok(Target { https, host, port, path })
    }

    /// Resolves a `Location` header against this target.
    pub fn join(&self, location: &str) -> Result<Target, &'static str> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(Target { path: location.to_string(), ..self.clone() });
        }
        Target::parse(location)
    }

    /// `host[:port]`, the port omitted when it is the scheme's default (the Host header).
    pub fn authority(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL without its query: enough to say what failed, and a redirect's query may
    /// hold a signature (S3, CDNs) that has no place in logs.
    pub fn url(&self) -> String {
        let path = self.path.split('?').next().unwrap_or(&self.path);
        format!("{}://{}{path}", if self.https { "https" } else { "http" }, self.authority())
    }

    /// Same scheme, host and port: where credentials may be sent again.
    pub fn same_origin(&self, other: &Target) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }
}

/// Where Go's crypto/x509 (so containerd and the kubelet) finds the system's trust store on
/// Linux: Debian/Ubuntu, Fedora/RHEL, openSUSE, OpenELEC, CentOS/RHEL 7, Alpine. `SSL_CERT_FILE`
/// overrides, as in Go and OpenSSL. Users add private CAs the distribution's way
/// (`update-ca-certificates`) or per pull with `--ca-file`.
const SYSTEM_CA_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

struct SystemRoots {
    file: Option<PathBuf>,
    certs: Vec<CertificateDer<'static>>,
}

/// The first readable trust store: `SSL_CERT_FILE`, else the first of [`SYSTEM_CA_FILES`].
fn system_roots() -> SystemRoots {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    first_trust_store(candidates)
}

/// The first file of `candidates` holding at least one PEM certificate.
fn first_trust_store(candidates: impl Iterator<Item = PathBuf>) -> SystemRoots {
    for file in candidates {
        let Ok(iter) = CertificateDer::pem_file_iter(&file) else { continue };
        let certs: Vec<CertificateDer<'static>> = iter.filter_map(Result::ok).collect();
        if !certs.is_empty() {
            return SystemRoots { file: Some(file), certs };
        }
    }
    SystemRoots { file: None, certs: Vec::new() }
}

pub struct Client {
    tls: TlsConnector,
    timeout: Duration,
}

/// A response whose body is still to be read; the connection lives as long as it does.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    body: Incoming,
    url: String,
    timeout: Duration,
    _conn: smol::Task<()>,
}

impl Client {
    pub fn new(ca_files: &[PathBuf], timeout: Duration) -> Result<Client, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        let system = system_roots();
        let (_, ignored) = roots.add_parsable_certificates(system.certs);
        match &system.file {
            Some(f) if ignored > 0 => log::debug!("{}: {ignored} certificates skipped", f.display()),
            Some(_) => {}
            None => log::warn!(
                "no system CA certificates ({}): HTTPS needs the ca-certificates package or a CA file (--ca-file, --manifest-url-ca)",
                SYSTEM_CA_FILES.join(", ")
            ),
        }
        for path in ca_files {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| HttpError::CaFile {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
            let (_, ignored) = roots.add_parsable_certificates(certs);
            if ignored > 0 {
                log::warn!("{}: {ignored} certificates could not be used", path.display());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls { host: String::new(), source: std::io::Error::other(e) })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client { tls: TlsConnector::from(Arc::new(config)), timeout })
    }

    /// Sends a GET and waits for the response head.
    pub async fn get(
        &self,
        target: &Target,
        headers: &[(HeaderName, String)],
    ) -> Result<Response, HttpError> {
        let url = target.url();
        let timeout =
            |_| HttpError::Timeout { method: "GET", url: url.clone(), after: self.timeout };
        let tcp = timed(self.timeout, self.connect(target)).await.map_err(timeout)??;
        let (mut sender, conn) = if target.https {
            let name = ServerName::try_from(target.host.clone()).map_err(|_| HttpError::Tls {
                host: target.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid host name"),
            })?;
            let tls = timed(self.timeout, self.tls.connect(name, tcp))
                .await
                .map_err(timeout)?
                .map_err(|source| HttpError::Tls { host: target.host.clone(), source })?;
            handshake(tls, &url).await?
        } else {
            handshake(tcp, &url).await?
        };
        let mut request = hyper::Request::get(target.path.as_str())
            .header(header::HOST, target.authority())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONNECTION, "close");
        for (name, value) in headers {
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| HttpError::Request {
                authority: target.authority(),
                url: url.clone(),
                reason: "header value is not valid",
            })?;
            request = request.header(name, value);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|_| HttpError::Request {
            authority: target.authority(),
            url: url.clone(),
            reason: "cannot build a request for it",
        })?;
        let response = timed(self.timeout, sender.send_request(request))
            .await
            .map_err(timeout)?
            .map_err(|source| HttpError::Http { method: "GET", url: url.clone(), source })?;
        let (parts, body) = response.into_parts();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            url,
            timeout: self.timeout,
            _conn: conn,
        })
    }

    async fn connect(&self, target: &Target) -> Result<smol::net::TcpStream, HttpError> {
        let addrs: Vec<SocketAddr> = smol::net::resolve((target.host.as_str(), target.port))
            .await
            .map_err(|source| HttpError::Resolve { host: target.host.clone(), source })?;
        let mut last = None;
        for addr in &addrs {
            match smol::net::TcpStream::connect(*addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some((addr, e)),
            }
        }
        let (addr, source) = match last {
            Some((addr, e)) => (addr.to_string(), e),
            None => (
                target.authority(),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            ),
        };
        Err(HttpError::Connect { addr, source })
    }
}

async fn handshake<S>(
    stream: S,
    url: &str,
) -> Result<(hyper::client::conn::http1::SendRequest<Empty<Bytes>>, smol::Task<()>), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|source| HttpError::Http { method: "GET", url: url.to_string(), source })?;
    // Dropping the Response drops this task, which closes the connection.
    let task = crate::tasks::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("http connection: {e}");
        }
    });
    Ok((sender, task))
}

/// `fut`'s output, or Err(()) when `after` passed first.
async fn timed<T>(after: Duration, fut: impl Future<Output = T>) -> Result<T, ()> {
    smol::future::or(async { Ok(fut.await) }, async {
        smol::Timer::after(after).await;
        Err(())
    })
    .await
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next piece of the body; None at its end. Each wait is bounded by the timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = timed(self.timeout, self.body.frame()).await.map_err(|()| {
                HttpError::Timeout { method: "GET", url: self.url.clone(), after: self.timeout }
            })?;
            match frame {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(HttpError::Http { method: "GET", url: self.url.clone(), source })
                }
                // Trailers carry nothing we use.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => return Ok(Some(data)),
                    Err(_) => continue,
                },
            }
        }
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: u64, what: &str) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while let Some(data) = self.chunk().await? {
            if (out.len() + data.len()) as u64 > limit {
                return Err(HttpError::TooLarge { what: what.to_string(), limit });
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_with_certificates_is_the_trust_store() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["registry.local".into()]).unwrap();
        let (empty, bundle) = (dir.path().join("empty.pem"), dir.path().join("bundle.pem"));
        std::fs::write(&empty, "").unwrap();
        std::fs::write(&bundle, cert.cert.pem().repeat(2)).unwrap();
        let missing = dir.path().join("missing.pem");
        let roots = first_trust_store([missing, empty, bundle.clone()].into_iter());
        assert_eq!(roots.file, Some(bundle));
        assert_eq!(roots.certs.len(), 2);
        assert_eq!(roots.certs[0].as_ref(), cert.cert.der().as_ref());
        let none = first_trust_store([dir.path().join("nothing.pem")].into_iter());
        assert_eq!((none.file, none.certs.len()), (None, 0));
    }
}
