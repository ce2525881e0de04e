//! The httpGet probe: one HTTP/1.1 GET per connection (`Connection: close`, as the kubelet's
//! prober disables keep-alive), written and read directly on the socket. A probe is a single
//! request and a bounded read of the answer, so a general client's machinery (hyper's
//! dispatcher, boxed streams, header maps) cost more CPU than the exchange itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The kubelet reads at most this much of a probe's body (for the event message).
const MAX_BODY: usize = 10 * 1024;
/// A response head larger than this is refused (Go's limit is 1 MiB; a probe needs little).
const MAX_HEAD: usize = 64 * 1024;
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
    /// The handler's own target, before any redirect.
    fn first(probe: &HttpGet) -> Self {
        let path = match probe.path.starts_with('/') {
            true => probe.path.clone(),
            false => format!("/{}", probe.path),
        };
        let https = probe.scheme.eq_ignore_ascii_case("https");
        Target { https, port: probe.addr.port(), path }
    }

    fn url(&self, probe: &HttpGet) -> String {
        self.url_with(if self.https { "https" } else { "http" }, probe)
    }

    fn url_with(&self, scheme: &str, probe: &HttpGet) -> String {
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

/// Succeeds on a 200–399 answer within `timeout`, as the kubelet's `http.DoHTTPProbe`. A 3xx
/// that was not followed (a redirect to another host, or none to follow) succeeds with the
/// kubelet's warning, `Probe terminated redirects, Response body: <body>`, which becomes a
/// `ProbeWarning` event.
pub async fn http_get(probe: &HttpGet, timeout: Duration) -> Result<Option<String>, String> {
    let answer = fetch(probe, timeout).await?;
    match answer.status {
        200..=299 => Ok(None),
        300..=399 => Ok(Some(format!(
            "Probe terminated redirects, Response body: {}",
            String::from_utf8_lossy(&answer.body)
        ))),
        status => Err(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// Succeeds on any HTTP answer: the kubelet's lifecycle hooks fail only on transport errors.
pub async fn http_get_any(probe: &HttpGet, timeout: Duration) -> Result<(), String> {
    fetch(probe, timeout).await.map(drop)
}

/// The final answer, after same-host redirects.
async fn fetch(probe: &HttpGet, timeout: Duration) -> Result<Answer, String> {
    if !["http", "https"].iter().any(|s| probe.scheme.eq_ignore_ascii_case(s)) {
        let scheme = probe.scheme.to_ascii_lowercase();
        let url = Target::first(probe).url_with(&scheme, probe);
        return Err(format!("Get \"{url}\": unsupported protocol scheme \"{scheme}\""));
    }
    let mut target = Target::first(probe);
    let first = || format!("Get \"{}\"", Target::first(probe).url(probe));
    super::with_timeout(timeout, first, async {
        for _ in 0..=MAX_REDIRECTS {
            let answer = get_once(probe, &target)
                .await
                .map_err(|e| format!("Get \"{}\": {e}", target.url(probe)))?;
            let followed = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
            let Some(location) = answer.location.as_ref().filter(|_| followed) else {
                return Ok(answer);
            };
            match follow(location, &target, probe) {
                Some(next) => target = next,
                // The kubelet does not follow a redirect to another host: the 3xx is the
                // answer (a success with a warning).
                None => return Ok(answer),
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

async fn get_once(probe: &HttpGet, target: &Target) -> Result<Answer, String> {
    let host =
        probe.host_header.clone().unwrap_or_else(|| join_host_port(&probe.url_host, target.port));
    let request = request(&probe.headers, &host, &target.path)?;
    let addr = SocketAddr::new(probe.addr.ip(), target.port);
    let mut tcp = super::connect(addr, probe.netns.as_deref())
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", super::io_message(&e)))?;
    if target.https {
        let mut tls = super::tls::connect(tcp, &probe.url_host).await?;
        exchange(&mut tls, &request).await
    } else {
        let answer = exchange(&mut tcp, &request).await;
        reset_if_closed(&tcp);
        answer
    }
}

/// When the server has already closed its side (it answers `Connection: close` by closing),
/// our close is sent as a reset: nobody reads it any more, and the server's socket is
/// released at once instead of exchanging FIN and ACK and waiting out TIME_WAIT in the pod,
/// one per probe (the kubelet's prober lingers for the same reason). A server still open
/// gets the ordinary FIN.
fn reset_if_closed(tcp: &crate::tasks::TcpStream) {
    use nix::sys::socket::{recv, setsockopt, sockopt::Linger, MsgFlags};
    use std::os::fd::{AsFd, AsRawFd};
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK;
    if let Ok(0) = recv(tcp.as_fd().as_raw_fd(), &mut byte, flags) {
        let _ = setsockopt(&tcp.as_fd(), Linger, &libc::linger { l_onoff: 1, l_linger: 0 });
    }
}

/// The request's bytes: the handler's headers in order, then the kubelet's defaults for those
/// it left out.
fn request(headers: &[(String, String)], host: &str, path: &str) -> Result<Vec<u8>, String> {
    // The path goes on the request line as it is: it must be a valid request target.
    hyper::Uri::try_from(path).map_err(|e| format!("parse {path:?}: {e}"))?;
    HeaderValue::try_from(host).map_err(|e| format!("host {host:?}: {e}"))?;
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    let given = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let defaults = [("User-Agent", USER_AGENT), ("Accept", "*/*")];
    let defaults: Vec<_> = defaults.into_iter().filter(|(k, _)| !given(k)).collect();
    let handler = headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (k, v) in handler.filter(|(k, _)| !k.eq_ignore_ascii_case("connection")).chain(defaults) {
        if HeaderName::try_from(k).is_err() || HeaderValue::try_from(v).is_err() {
            return Err(format!("invalid header {k:?}: {v:?}"));
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    // The kubelet's prober disables keep-alive.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(out)
}

/// What a probe learns of an answer.
struct Answer {
    status: u16,
    location: Option<String>,
    /// At most [`MAX_BODY`] bytes of it, for the warning of a redirect not followed.
    body: Vec<u8>,
}

/// Sends `request` and reads the answer's status and `Location`, skipping 1xx interim
/// answers as Go does; the body is read (bounded) so the server is not cut off mid-write.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
) -> Result<Answer, String> {
    s.write_all(request).await.map_err(|e| super::io_message(&e))?;
    s.flush().await.map_err(|e| super::io_message(&e))?;
    let mut buf = Vec::with_capacity(2048);
    loop {
        let head = match parse_head(&buf)? {
            Some(head) => head,
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err(format!(
                        "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
                    ));
                }
                if read_more(s, &mut buf).await? == 0 {
                    return Err(if buf.is_empty() { "EOF" } else { "unexpected EOF" }.into());
                }
                continue;
            }
        };
        buf.drain(..head.len);
        if (100..200).contains(&head.status) && head.status != 101 {
            continue;
        }
        let body = read_body(s, buf, &head).await;
        return Ok(Answer { status: head.status, location: head.location, body });
    }
}

/// What a probe needs of a response head.
struct Head {
    status: u16,
    location: Option<String>,
    /// `None`: until the server closes (or chunked: the same, as the request said close).
    content_length: Option<usize>,
    chunked: bool,
    /// Bytes of `buf` the head took.
    len: usize,
}

/// The head at the start of `buf`, `None` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("net/http: malformed HTTP response: {e}")),
    };
    let status = response.code.unwrap_or_default();
    let value = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let transfer_encoding = value("transfer-encoding");
    let content_length = if no_body {
        Some(0)
    } else if transfer_encoding.is_some() {
        None
    } else {
        value("content-length").and_then(|v| v.trim().parse().ok())
    };
    let chunked = !no_body
        && transfer_encoding
            .is_some_and(|t| t.to_ascii_lowercase().trim_end().ends_with("chunked"));
    let location = value("location").map(String::from);
    Ok(Some(Head { status, location, content_length, chunked, len }))
}

/// Reads what the socket has into `buf`'s spare room (growing it); 0 at the end.
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let len = buf.len();
    if buf.capacity() - len < 1024 {
        buf.reserve(4096);
    }
    buf.resize(buf.capacity(), 0);
    let n = s.read(&mut buf[len..]).await;
    buf.truncate(len + *n.as_ref().unwrap_or(&0));
    n.map_err(|e| super::io_message(&e))
}

/// Reads up to [`MAX_BODY`] of the body (its bytes on the wire; decoded when chunked); read
/// errors are not the probe's concern.
async fn read_body<S: AsyncRead + Unpin>(s: &mut S, mut buf: Vec<u8>, head: &Head) -> Vec<u8> {
    let want = head.content_length.unwrap_or(usize::MAX).min(MAX_BODY);
    while buf.len() < want {
        match read_more(s, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    buf.truncate(want);
    if head.chunked {
        dechunk(&buf)
    } else {
        buf
    }
}

/// The data of a chunked body, as far as `raw` holds whole chunk headers.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&raw[..end]);
        // Chunk extensions (`;name=value`) are ignored.
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else { break };
        raw = &raw[end + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            break;
        }
        raw = &raw[size + 2..];
    }
    out
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

    /// Sockets in TIME_WAIT whose local port is `port` (IPv4, /proc/net/tcp).
    fn time_waits_on(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let local = format!(":{port:04X}");
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
            })
            .count()
    }

    /// One connection accepted on a fresh listener; `serve` runs on it in a thread.
    fn one_connection<T: Send + 'static>(
        serve: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<T>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, std::thread::spawn(move || serve(listener.accept().unwrap().0)))
    }

    #[test]
    fn a_server_that_closed_first_is_reset_and_keeps_no_time_wait() {
        use std::io::{Read, Write};
        let (addr, server) = one_connection(|mut s| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // No length: the body ends where the server closes, so the probe sees the EOF.
            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok").unwrap();
        });
        let t = Duration::from_secs(2);
        assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/"), t)), Ok(None));
        server.join().unwrap();
        // An ordinary close would leave the server's side in TIME_WAIT for a minute.
        assert_eq!(time_waits_on(addr.port()), 0, "the server's socket was released");
    }

    #[test]
    fn a_server_still_open_gets_an_orderly_close() {
        use std::io::{Read, Write};
        let (addr, server) = one_connection(|mut s| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
            // Keeps its side open and waits for the client's end: EOF, not a reset.
            s.read(&mut buf).map_err(|e| e.kind())
        });
        let t = Duration::from_secs(2);
        assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/"), t)), Ok(None));
        assert_eq!(server.join().unwrap(), Ok(0));
    }

    #[test]
    fn status_codes_decide_like_the_kubelet() {
        let (addr, seen) = server(answers, false);
        let t = Duration::from_secs(2);
        crate::probe::tests_support::run(async {
            assert_eq!(http_get(&probe(addr, "/ok"), t).await, Ok(None));
            assert_eq!(http_get(&probe(addr, "/moved"), t).await, Ok(None));
            assert_eq!(http_get(&probe(addr, "relative/x"), t).await, Ok(None));
            // The kubelet's DoHTTPProbe: a 3xx it did not follow is a success with a warning.
            let warning = Some("Probe terminated redirects, Response body: ok".to_string());
            assert_eq!(
                http_get(&probe(addr, "/away"), t).await,
                Ok(warning.clone()),
                "a redirect elsewhere is not followed: the 3xx counts as success"
            );
            assert_eq!(http_get(&probe(addr, "/teapot"), t).await, Ok(warning));
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
        let err =
            crate::probe::tests_support::run(http_get(&probe(addr, "/"), Duration::from_secs(2)));
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
        assert_eq!(
            crate::probe::tests_support::run(http_get(&p, Duration::from_secs(2))),
            Ok(None)
        );
        p.host_header = Some("example.test".into());
        assert_eq!(
            crate::probe::tests_support::run(http_get(&p, Duration::from_secs(2))),
            Ok(None)
        );
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
        assert_eq!(crate::probe::tests_support::run(http_get(&p, t)), Ok(None));
        p.path = "/error".into();
        assert_eq!(
            crate::probe::tests_support::run(http_get(&p, t)),
            Err("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn https_to_a_plain_server_fails() {
        let (addr, _) = server(answers, false);
        let mut p = probe(addr, "/ok");
        p.scheme = "HTTPS".into();
        let err =
            crate::probe::tests_support::run(http_get(&p, Duration::from_secs(5))).unwrap_err();
        assert!(err.starts_with(&format!("Get \"https://{addr}/ok\": tls: ")), "{err}");
    }

    /// Hooks succeed on any answer; only transport errors fail them.
    #[test]
    fn hooks_accept_any_status() {
        let (addr, _) = server(answers, false);
        let t = Duration::from_secs(2);
        assert_eq!(
            crate::probe::tests_support::run(http_get_any(&probe(addr, "/error"), t)),
            Ok(())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err =
            crate::probe::tests_support::run(http_get_any(&probe(closed, "/"), t)).unwrap_err();
        assert_eq!(
            err,
            format!("Get \"http://{closed}/\": dial tcp {closed}: connect: connection refused")
        );
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let mut p = probe("127.0.0.1:1".parse().unwrap(), "/");
        p.scheme = "FTP".into();
        let err =
            crate::probe::tests_support::run(http_get(&p, Duration::from_secs(1))).unwrap_err();
        assert_eq!(err, "Get \"ftp://127.0.0.1:1/\": unsupported protocol scheme \"ftp\"");
    }

    /// Interim 1xx answers are skipped as Go's client does; the final answer decides.
    #[test]
    fn interim_answers_are_skipped() {
        let (addr, _) = server(
            |path| match path {
                "/continue" => format!("HTTP/1.1 100 Continue\r\n\r\n{}", reply("503 No", "")),
                _ => {
                    format!("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n{}", reply("200 OK", ""))
                }
            },
            false,
        );
        let t = Duration::from_secs(2);
        assert_eq!(
            crate::probe::tests_support::run(http_get(&probe(addr, "/continue"), t)),
            Err("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/hints"), t)), Ok(None));
    }

    /// The warning carries the body as Go's client hands it over: decoded, at most 10 KiB.
    #[test]
    fn a_redirect_to_another_host_warns_with_the_body() {
        let (addr, _) = server(
            |path| {
                match path {
                // Go's http.Redirect, chunked.
                "/chunked" => "HTTP/1.1 302 Found\r\nlocation: http://0.0.0.0/\r\ntransfer-encoding: chunked\r\n\r\n1a\r\n<a href=\"http://0.0.0.0/\">\r\n8;x=y\r\nFound</a\r\n3\r\n>.\n\r\n0\r\n\r\n".into(),
                "/empty" => "HTTP/1.1 308 Permanent Redirect\r\nlocation: https://example.test/\r\ncontent-length: 0\r\n\r\n".into(),
                _ => format!(
                    "HTTP/1.1 301 Moved\r\nlocation: http://192.0.2.1/\r\ncontent-length: 20000\r\n\r\n{}",
                    "z".repeat(20_000)
                ),
            }
            },
            false,
        );
        let t = Duration::from_secs(2);
        let get = |path| crate::probe::tests_support::run(http_get(&probe(addr, path), t));
        let prefix = "Probe terminated redirects, Response body: ";
        assert_eq!(
            get("/chunked"),
            Ok(Some(format!("{prefix}<a href=\"http://0.0.0.0/\">Found</a>.\n")))
        );
        assert_eq!(get("/empty"), Ok(Some(prefix.to_string())));
        assert_eq!(get("/long"), Ok(Some(format!("{prefix}{}", "z".repeat(MAX_BODY)))));
    }

    #[test]
    fn dechunk_stops_at_what_is_missing() {
        assert_eq!(dechunk(b"2\r\nok\r\n0\r\n\r\n"), b"ok");
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
        assert_eq!(dechunk(b"zz\r\nok"), b"");
        assert_eq!(dechunk(b""), b"");
    }

    /// Bodies without a length (chunked, or until close) and larger than the kubelet reads
    /// do not hold the probe.
    #[test]
    fn bodies_of_any_framing_are_read_bounded() {
        let (addr, _) = server(
            |path| match path {
                "/chunked" => {
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                        .into()
                }
                "/close" => format!("HTTP/1.1 201 Created\r\n\r\n{}", "x".repeat(50_000)),
                _ => format!(
                    "HTTP/1.1 202 OK\r\ncontent-length: 50000\r\n\r\n{}",
                    "y".repeat(50_000)
                ),
            },
            false,
        );
        let t = Duration::from_secs(2);
        for path in ["/chunked", "/close", "/long"] {
            assert_eq!(
                crate::probe::tests_support::run(http_get(&probe(addr, path), t)),
                Ok(None),
                "{path}"
            );
        }
    }

    /// Go's messages for a server that closes early or answers garbage.
    #[test]
    fn broken_answers_fail_with_gos_messages() {
        let (addr, _) = server(
            |path| match path {
                "/nothing" => String::new(),
                "/half" => "HTTP/1.1 200 OK\r\ncontent-".into(),
                _ => "SSH-2.0-OpenSSH_9.2\r\n\r\n".into(),
            },
            false,
        );
        let t = Duration::from_secs(2);
        let get = |path: &str| {
            crate::probe::tests_support::run(http_get(&probe(addr, path), t)).unwrap_err()
        };
        assert_eq!(get("/nothing"), format!("Get \"http://{addr}/nothing\": EOF"));
        assert_eq!(get("/half"), format!("Get \"http://{addr}/half\": unexpected EOF"));
        assert!(get("/ssh").contains("malformed HTTP response"), "{}", get("/ssh"));
        let long = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let long_addr = long.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = long.accept().unwrap();
            let _ = s.read(&mut [0; 4096]);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
            let _ = s.write_all(format!("x: {}\r\n", "a".repeat(100_000)).as_bytes());
        });
        let err =
            crate::probe::tests_support::run(http_get(&probe(long_addr, "/"), t)).unwrap_err();
        assert!(err.ends_with("server response headers exceeded 65536 bytes; aborted"), "{err}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = crate::probe::tests_support::run(http_get(
            &probe(addr, "/"),
            Duration::from_millis(200),
        ))
        .unwrap_err();
        assert_eq!(
            err,
            format!("Get \"http://{addr}/\": context deadline exceeded (timeout 0.2s)")
        );
        drop(listener);
    }
}
