use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use smol_hyper::rt::FuturesIo;

/// The kubelet reads at most this much of a probe's body (for the event message).
const MAX_BODY: usize = 10 * 1024;
/// Like the kubelet's prober: at most 10 redirects, and only to the same host.
const MAX_REDIRECTS: usize = 10;
/// Apps match on the kubelet's User-Agent, `kube-probe/<major>.<minor>`.
const USER_AGENT: &str = "kube-probe/1.37";

/// One httpGet handler, resolved to an address.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpGet {
    pub addr: SocketAddr,
    /// The `Host` header: the handler's `host`, else the address.
    pub host: String,
    pub path: String,
    pub scheme: String,
    pub headers: Vec<(String, String)>,
}

/// Succeeds on a 200–399 answer within `timeout`, as the kubelet's `http.DoHTTPProbe`.
pub async fn http_get(probe: &HttpGet, timeout: Duration) -> Result<(), String> {
    let url = format!("{}://{}{}", probe.scheme.to_lowercase(), probe.addr, probe.path);
    let what = format!("Get \"{url}\"");
    super::with_timeout(timeout, &what, async {
        if !probe.scheme.eq_ignore_ascii_case("HTTP") {
            return Err(format!("Get \"{url}\": scheme {} is not supported yet", probe.scheme));
        }
        let mut path = probe.path.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (status, location) =
                get_once(probe, &path).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
            if !(300..400).contains(&status) || location.is_none() {
                return if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {status}"))
                };
            }
            let location = location.unwrap_or_default();
            match same_host_path(&location, probe) {
                Some(next) => path = next,
                // The kubelet treats a redirect elsewhere as success (with a warning).
                None => return Ok(()),
            }
        }
        Err(format!("Get \"{url}\": stopped after {MAX_REDIRECTS} redirects"))
    })
    .await
}

/// The redirect target's path when it stays on the probed host.
fn same_host_path(location: &str, probe: &HttpGet) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix("http://")?;
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    (authority == probe.addr.to_string() || authority == probe.host).then_some(path)
}

async fn get_once(probe: &HttpGet, path: &str) -> Result<(u16, Option<String>), String> {
    let stream = smol::net::TcpStream::connect(probe.addr)
        .await
        .map_err(|e| format!("dial tcp {}: connect: {e}", probe.addr))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends with this probe: it is polled alongside the request.
    let mut builder = hyper::Request::get(path)
        .header(hyper::header::HOST, &probe.host)
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close");
    for (k, v) in &probe.headers {
        let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str()))
        else {
            return Err(format!("invalid header {k:?}"));
        };
        // User-provided headers replace the defaults, as in the kubelet.
        builder = builder.header(k, v);
    }
    let request = builder.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
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
    let conn = async {
        let _ = conn.await;
        std::future::pending::<Result<(u16, Option<String>), String>>().await
    };
    smol::future::or(exchange, conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot-per-connection HTTP server answering each request from `answer(path)`.
    fn server(answer: fn(&str) -> String) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                smol::block_on(async {
                    let mut s = smol::Async::new(stream).unwrap();
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let _ = s.write_all(answer(&path).as_bytes()).await;
                });
            }
        });
        addr
    }

    fn probe(addr: SocketAddr, path: &str) -> HttpGet {
        HttpGet {
            addr,
            host: addr.ip().to_string(),
            path: path.into(),
            scheme: "HTTP".into(),
            headers: vec![],
        }
    }

    fn reply(status: &str, extra: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n{extra}\r\nok")
    }

    #[test]
    fn status_codes_decide_like_the_kubelet() {
        let addr = server(|path| match path {
            "/ok" => reply("200 OK", ""),
            "/moved" => reply("302 Found", "location: /ok\r\n"),
            "/away" => reply("302 Found", "location: http://192.0.2.1/x\r\n"),
            "/loop" => reply("302 Found", "location: /loop\r\n"),
            "/teapot" => reply("399 Whatever", ""),
            _ => reply("404 Not Found", ""),
        });
        let t = Duration::from_secs(2);
        smol::block_on(async {
            assert_eq!(http_get(&probe(addr, "/ok"), t).await, Ok(()));
            assert_eq!(http_get(&probe(addr, "/moved"), t).await, Ok(()));
            assert_eq!(
                http_get(&probe(addr, "/away"), t).await,
                Ok(()),
                "a redirect elsewhere is not followed"
            );
            assert_eq!(http_get(&probe(addr, "/teapot"), t).await, Ok(()));
            assert_eq!(
                http_get(&probe(addr, "/missing"), t).await,
                Err("HTTP probe failed with statuscode: 404".into())
            );
            let err = http_get(&probe(addr, "/loop"), t).await.unwrap_err();
            assert!(err.ends_with("stopped after 10 redirects"), "{err}");
        });
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

    #[test]
    fn refused_connection_is_reported() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = smol::block_on(http_get(&probe(addr, "/"), Duration::from_secs(1))).unwrap_err();
        assert!(
            err.starts_with(&format!("Get \"http://{addr}/\": dial tcp {addr}: connect: ")),
            "{err}"
        );
    }
}
