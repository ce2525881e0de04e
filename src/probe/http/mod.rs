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
mod tests;
