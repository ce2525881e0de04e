use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use smol::io::{AsyncRead, AsyncWrite};
use smol_hyper::rt::FuturesIo;

/// The kubelet reads at most this much of a probe's body (for the event message).
const MAX_BODY: usize = 10 * 1024;
/// Like Go's HTTP client under the kubelet's prober: at most 10 redirects, and only to the
/// same host.
const MAX_REDIRECTS: usize = 10;
/// Apps match on the kubelet's User-Agent, `kube-probe/<major>.<minor>`.
pub(super) const USER_AGENT: &str = "kube-probe/1.37";

/// One httpGet handler, resolved to an address.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpGet {
    pub addr: SocketAddr,
    /// The URL's host: the handler's `host`, else the pod IP. Also the TLS server name.
    pub url_host: String,
    /// A `Host` header from `httpHeaders`; else the URL's `host:port`, as Go sends it.
    pub host_header: Option<String>,
    pub path: String,
    /// `HTTP` or `HTTPS` (case-insensitive).
    pub scheme: String,
    pub headers: Vec<(String, String)>,
    /// Connect from inside this network namespace (a pod without a reachable IP).
    pub netns: Option<PathBuf>,
}

/// Where one request goes; redirects change it.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    https: bool,
    port: u16,
    path: String,
}

impl Target {
    fn url(&self, probe: &HttpGet) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", join_host_port(&probe.url_host, self.port), self.path)
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Succeeds on a 200–399 answer within `timeout`, as the kubelet's `http.DoHTTPProbe`.
pub async fn http_get(probe: &HttpGet, timeout: Duration) -> Result<(), String> {
    let status = fetch(probe, timeout).await?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// Succeeds on any HTTP answer: the kubelet's lifecycle hooks fail only on transport errors.
pub async fn http_get_any(probe: &HttpGet, timeout: Duration) -> Result<(), String> {
    fetch(probe, timeout).await.map(drop)
}

/// The final status code, after same-host redirects.
async fn fetch(probe: &HttpGet, timeout: Duration) -> Result<u16, String> {
    let path =
        if probe.path.starts_with('/') { probe.path.clone() } else { format!("/{}", probe.path) };
    let scheme = probe.scheme.to_ascii_lowercase();
    let mut target = Target { https: scheme == "https", port: probe.addr.port(), path };
    let url = target.url(probe);
    if scheme != "http" && scheme != "https" {
        let host = join_host_port(&probe.url_host, target.port);
        let url = format!("{scheme}://{host}{}", target.path);
        return Err(format!("Get \"{url}\": unsupported protocol scheme \"{scheme}\""));
    }
    let what = format!("Get \"{url}\"");
    super::with_timeout(timeout, &what, async {
        for _ in 0..=MAX_REDIRECTS {
            let (status, location) = get_once(probe, &target)
                .await
                .map_err(|e| format!("Get \"{}\": {e}", target.url(probe)))?;
            let followed = matches!(status, 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| followed) else { return Ok(status) };
            match follow(&location, &target, probe) {
                Some(next) => target = next,
                // The kubelet does not follow a redirect to another host: the 3xx is the
                // answer (a success with a warning).
                None => return Ok(status),
            }
        }
        Err(format!("Get \"{}\": stopped after {MAX_REDIRECTS} redirects", target.url(probe)))
    })
    .await
}

/// The redirect's target when it stays on the probed host (Go's `Hostname()` comparison:
/// another port or scheme on the same host is followed).
fn follow(location: &str, current: &Target, probe: &HttpGet) -> Option<Target> {
    let absolute = location
        .strip_prefix("http://")
        .map(|r| (false, r))
        .or_else(|| location.strip_prefix("https://").map(|r| (true, r)));
    let Some((https, rest)) = absolute else {
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            // Relative to the current path's directory.
            let dir = current.path.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{location}")
        };
        return Some(Target { path, ..current.clone() });
    };
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = split_host_port(authority);
    let same =
        host.eq_ignore_ascii_case(probe.url_host.trim_start_matches('[').trim_end_matches(']'));
    let port = match port {
        Some(p) => p.parse().ok()?,
        None if https => 443,
        None => 80,
    };
    same.then_some(Target { https, port, path })
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    }
}

/// A probe connection: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn get_once(probe: &HttpGet, target: &Target) -> Result<(u16, Option<String>), String> {
    let addr = SocketAddr::new(probe.addr.ip(), target.port);
    let tcp = super::connect(addr, probe.netns.as_deref())
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", super::io_message(&e)))?;
    let stream: Box<dyn Io> = if target.https {
        Box::new(super::tls::connect(tcp, &probe.url_host).await?)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let host =
        probe.host_header.clone().unwrap_or_else(|| join_host_port(&probe.url_host, target.port));
    let request = request(&probe.headers, &host, &target.path)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        // Read (bounded) so the server is not cut off mid-write; the content is not needed.
        let _ = Limited::new(response.into_body(), MAX_BODY).collect().await;
        Ok::<_, String>((status, location))
    };
    // The connection task ends with this probe: it is polled alongside the request.
    let conn = async {
        let _ = conn.await;
        std::future::pending::<Result<(u16, Option<String>), String>>().await
    };
    smol::future::or(exchange, conn).await
}

/// The request: the handler's headers, then the kubelet's defaults for those it left out.
fn request(
    headers: &[(String, String)],
    host: &str,
    path: &str,
) -> Result<hyper::Request<Empty<Bytes>>, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let (Ok(name), Ok(value)) =
            (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str()))
        else {
            return Err(format!("invalid header {k:?}: {v:?}"));
        };
        map.append(name, value);
    }
    for (name, value) in [(header::USER_AGENT, USER_AGENT), (header::ACCEPT, "*/*")] {
        if !map.contains_key(&name) {
            map.insert(name, HeaderValue::from_static(value));
        }
    }
    map.insert(
        header::HOST,
        HeaderValue::try_from(host).map_err(|e| format!("host {host:?}: {e}"))?,
    );
    // The kubelet's prober disables keep-alive.
    map.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut request =
        hyper::Request::get(path).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    *request.headers_mut() = map;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<String>>>;

    async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        answer: &(dyn Fn(&str) -> String + Send + Sync),
        seen: &Seen,
    ) {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
        seen.lock().unwrap().push(req);
        let _ = s.write_all(answer(&path).as_bytes()).await;
        let _ = s.close().await;
    }

    /// A server answering each connection's request from `answer(path)`, over TLS with a
    /// self-signed certificate when `tls`; it records the requests.
    fn server(
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
        tls: bool,
    ) -> (SocketAddr, Seen) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["example.invalid".into()]).unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap();
            futures_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                smol::block_on(async {
                    let mut s = smol::Async::new(stream).unwrap();
                    match &acceptor {
                        Some(a) => {
                            if let Ok(mut t) = a.accept(s).await {
                                answer_one(&mut t, &answer, &log).await;
                            }
                        }
                        None => answer_one(&mut s, &answer, &log).await,
                    }
                });
            }
        });
        (addr, seen)
    }

    fn probe(addr: SocketAddr, path: &str) -> HttpGet {
        HttpGet {
            addr,
            url_host: addr.ip().to_string(),
            host_header: None,
            path: path.into(),
            scheme: "HTTP".into(),
            headers: vec![],
            netns: None,
        }
    }

    fn reply(status: &str, extra: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n{extra}\r\nok")
    }

    fn answers(path: &str) -> String {
        match path {
            "/ok" => reply("200 OK", ""),
            "/moved" => reply("302 Found", "location: /ok\r\n"),
            "/relative/x" => reply("301 Moved Permanently", "location: y\r\n"),
            "/relative/y" => reply("204 No Content", ""),
            "/away" => reply("302 Found", "location: http://192.0.2.1/x\r\n"),
            "/loop" => reply("302 Found", "location: /loop\r\n"),
            "/teapot" => reply("399 Whatever", ""),
            "/error" => reply("500 Internal Server Error", ""),
            _ => reply("404 Not Found", ""),
        }
    }

    #[test]
    fn status_codes_decide_like_the_kubelet() {
        let (addr, seen) = server(answers, false);
        let t = Duration::from_secs(2);
        smol::block_on(async {
            assert_eq!(http_get(&probe(addr, "/ok"), t).await, Ok(()));
            assert_eq!(http_get(&probe(addr, "/moved"), t).await, Ok(()));
            assert_eq!(http_get(&probe(addr, "relative/x"), t).await, Ok(()));
            assert_eq!(
                http_get(&probe(addr, "/away"), t).await,
                Ok(()),
                "a redirect elsewhere is not followed: the 3xx counts as success"
            );
            assert_eq!(http_get(&probe(addr, "/teapot"), t).await, Ok(()));
            assert_eq!(
                http_get(&probe(addr, "/missing"), t).await,
                Err("HTTP probe failed with statuscode: 404".into())
            );
            let err = http_get(&probe(addr, "/loop"), t).await.unwrap_err();
            assert_eq!(err, format!("Get \"http://{addr}/loop\": stopped after 10 redirects"));
        });
        let paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.split_whitespace().nth(1).unwrap().to_string())
            .take(6)
            .collect();
        assert_eq!(paths, ["/ok", "/moved", "/ok", "/relative/x", "/relative/y", "/away"]);
    }

    /// Same host, other port: followed (Go compares host names only).
    #[test]
    fn redirect_to_another_port_of_the_same_host_is_followed() {
        let (target, _) = server(answers, false);
        let port = target.port();
        let (addr, seen) = server(
            move |_| {
                let to = format!("location: http://127.0.0.1:{port}/error\r\n");
                reply("307 Temporary Redirect", &to)
            },
            false,
        );
        let err = smol::block_on(http_get(&probe(addr, "/"), Duration::from_secs(2)));
        assert_eq!(err, Err("HTTP probe failed with statuscode: 500".into()));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn handler_headers_replace_the_defaults() {
        let (addr, seen) = server(answers, false);
        let mut p = probe(addr, "/ok");
        p.headers = vec![
            ("User-Agent".into(), "mine".into()),
            ("X-Two".into(), "a".into()),
            ("X-Two".into(), "b".into()),
        ];
        assert_eq!(smol::block_on(http_get(&p, Duration::from_secs(2))), Ok(()));
        p.host_header = Some("example.test".into());
        assert_eq!(smol::block_on(http_get(&p, Duration::from_secs(2))), Ok(()));
        let seen = seen.lock().unwrap();
        let lines = |r: &str| -> Vec<String> {
            let mut l: Vec<String> =
                r.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.to_lowercase()).collect();
            l.sort();
            l
        };
        assert_eq!(
            lines(&seen[0]),
            [
                "accept: */*".to_string(),
                "connection: close".into(),
                format!("host: {addr}"),
                "user-agent: mine".into(),
                "x-two: a".into(),
                "x-two: b".into(),
            ]
        );
        assert!(lines(&seen[1]).contains(&"host: example.test".to_string()), "{:?}", seen[1]);
    }

    /// HTTPS without certificate verification, as the kubelet's prober does.
    #[test]
    fn https_accepts_a_self_signed_certificate() {
        let (addr, seen) = server(answers, true);
        let t = Duration::from_secs(5);
        let mut p = probe(addr, "/ok");
        p.scheme = "HTTPS".into();
        assert_eq!(smol::block_on(http_get(&p, t)), Ok(()));
        p.path = "/error".into();
        assert_eq!(
            smol::block_on(http_get(&p, t)),
            Err("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn https_to_a_plain_server_fails() {
        let (addr, _) = server(answers, false);
        let mut p = probe(addr, "/ok");
        p.scheme = "HTTPS".into();
        let err = smol::block_on(http_get(&p, Duration::from_secs(5))).unwrap_err();
        assert!(err.starts_with(&format!("Get \"https://{addr}/ok\": tls: ")), "{err}");
    }

    /// Hooks succeed on any answer; only transport errors fail them.
    #[test]
    fn hooks_accept_any_status() {
        let (addr, _) = server(answers, false);
        let t = Duration::from_secs(2);
        assert_eq!(smol::block_on(http_get_any(&probe(addr, "/error"), t)), Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = smol::block_on(http_get_any(&probe(closed, "/"), t)).unwrap_err();
        assert_eq!(
            err,
            format!("Get \"http://{closed}/\": dial tcp {closed}: connect: connection refused")
        );
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let mut p = probe("127.0.0.1:1".parse().unwrap(), "/");
        p.scheme = "FTP".into();
        let err = smol::block_on(http_get(&p, Duration::from_secs(1))).unwrap_err();
        assert_eq!(err, "Get \"ftp://127.0.0.1:1/\": unsupported protocol scheme \"ftp\"");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err =
            smol::block_on(http_get(&probe(addr, "/"), Duration::from_millis(200))).unwrap_err();
        assert_eq!(
            err,
            format!("Get \"http://{addr}/\": context deadline exceeded (timeout 0.2s)")
        );
        drop(listener);
    }
}
