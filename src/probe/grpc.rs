//! gRPC probes: the standard health protocol (`grpc.health.v1.Health/Check`) over HTTP/2
//! without TLS, as the kubelet dials it. The two one-field protobuf messages are encoded by
//! hand; HTTP/2 is hyper's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use smol_hyper::rt::{FuturesIo, SmolExecutor};

const PATH: &str = "/grpc.health.v1.Health/Check";
/// A health answer is a few bytes; anything bigger is not one.
const MAX_BODY: usize = 64 * 1024;

/// `HealthCheckResponse.ServingStatus`.
fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// grpc-go's names of status codes, as the kubelet's messages print them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

/// Succeeds when `service` (empty: the whole server) answers SERVING within `timeout`; the
/// failures read as the kubelet's.
pub async fn grpc(
    addr: SocketAddr,
    service: &str,
    netns: Option<&Path>,
    timeout: Duration,
) -> Result<(), String> {
    let rpc = async {
        // hyper's HTTP/2 client spawns its connection tasks: a small executor of our own runs
        // them on this probe's task, so the probe stays one future on the agent's thread.
        let ex = Arc::new(smol::Executor::new());
        ex.run(check(addr, service, netns, ex.clone())).await
    };
    smol::future::or(rpc, async {
        crate::tasks::sleep(timeout).await;
        Err(format!("timeout: health rpc did not complete within {}", go_seconds(timeout)))
    })
    .await
}

/// Go's `time.Duration` text for whole and fractional seconds (`1s`, `1.5s`).
fn go_seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

async fn check(
    addr: SocketAddr,
    service: &str,
    netns: Option<&Path>,
    ex: Arc<smol::Executor<'static>>,
) -> Result<(), String> {
    let failed = |desc: String| format!("error: health rpc probe failed: rpc error: {desc}");
    let tcp = super::connect(addr, netns).await.map_err(|e| {
        failed(format!(
            "code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {addr}: connect: {}\"",
            super::io_message(&e)
        ))
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(SmolExecutor::new(ex.clone()), FuturesIo::new(tcp))
            .await
            .map_err(|e| failed(format!("code = Unavailable desc = {e}")))?;
    ex.spawn(async move {
        let _ = conn.await;
    })
    .detach();
    let request = hyper::Request::post(format!("http://{addr}{PATH}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .header(hyper::header::USER_AGENT, super::http::USER_AGENT)
        .body(Full::new(Bytes::from(frame(&request_message(service)))))
        .map_err(|e| failed(format!("code = Internal desc = {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(format!("code = Unavailable desc = {e}")))?;
    if response.status() != hyper::StatusCode::OK {
        let code = response.status().as_u16();
        return Err(failed(format!(
            "code = Unknown desc = unexpected HTTP status code received from server: {code}"
        )));
    }
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| failed(format!("code = Internal desc = {e}")))?;
    let trailers = body.trailers().cloned().unwrap_or_default();
    // A trailers-only answer carries the status in its headers.
    let (code, message) = grpc_status(&trailers)
        .or_else(|| grpc_status(&headers))
        .unwrap_or((2, "server closed the stream without sending trailers".into()));
    match code {
        0 => {}
        12 => {
            return Err(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
            ))
        }
        _ => return Err(failed(format!("code = {} desc = {message}", code_name(code)))),
    }
    let status = unframe(&body.to_bytes())
        .and_then(response_status)
        .ok_or_else(|| failed("code = Internal desc = malformed HealthCheckResponse".into()))?;
    if status == 1 {
        Ok(())
    } else {
        Err(format!("service unhealthy (responded with \"{}\")", status_name(status)))
    }
}

fn grpc_status(map: &HeaderMap) -> Option<(u32, String)> {
    let code = map.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = map
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `HealthCheckRequest { string service = 1; }`.
pub(crate) fn request_message(service: &str) -> Vec<u8> {
    let mut m = Vec::new();
    if !service.is_empty() {
        m.push(0x0a);
        put_varint(&mut m, service.len() as u64);
        m.extend_from_slice(service.as_bytes());
    }
    m
}

/// A gRPC message frame: uncompressed flag, big-endian length, message.
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + message.len());
    f.push(0);
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

/// The first frame's message.
pub(crate) fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    // Compressed answers would need the negotiated codec; we never offer one.
    (flag == 0).then(|| rest.get(4..4 + len)).flatten()
}

/// `HealthCheckResponse { ServingStatus status = 1; }`: field 1, unknown fields skipped.
pub(crate) fn response_status(mut m: &[u8]) -> Option<u64> {
    let mut status = 0; // proto3 default: UNKNOWN
    while !m.is_empty() {
        let key = get_varint(&mut m)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut m)?,
            (_, 0) => {
                get_varint(&mut m)?;
            }
            (_, 1) => m = m.get(8..)?,
            (_, 2) => {
                let len = get_varint(&mut m)? as usize;
                m = m.get(len..)?;
            }
            (_, 5) => m = m.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(m: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = m.split_first()?;
        *m = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use std::convert::Infallible;

    type Reply = hyper::Response<
        StreamBody<smol::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
    >;

    /// A health server: "" and "web" serve, "sick" does not, anything else is NOT_FOUND;
    /// with `implemented` false every call is UNIMPLEMENTED (trailers-only).
    fn health(path: &str, service: &str, implemented: bool) -> Reply {
        let reply = |frames: Vec<Result<Frame<Bytes>, Infallible>>| {
            hyper::Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(smol::stream::iter(frames)))
                .unwrap()
        };
        let trailers = |code: &str, msg: &str| {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", code.parse().unwrap());
            if !msg.is_empty() {
                t.insert("grpc-message", msg.parse().unwrap());
            }
            Ok(Frame::trailers(t))
        };
        if !implemented || path != PATH {
            return reply(vec![trailers("12", "unknown service grpc.health.v1.Health")]);
        }
        let status = match service {
            "" | "web" => 1u8,
            "sick" => 2,
            _ => return reply(vec![trailers("5", "unknown%20service")]),
        };
        // Field 1 = status, then an unknown field 7 (string) the client must skip.
        let message = [0x08, status, 0x3a, 0x02, b'h', b'i'];
        reply(vec![Ok(Frame::data(Bytes::from(frame(&message)))), trailers("0", "")])
    }

    fn server(implemented: bool) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let ex = Arc::new(smol::Executor::<'static>::new());
            smol::block_on(ex.run(async {
                let listener = smol::Async::new(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let msg = unframe(&body).unwrap_or_default();
                            // HealthCheckRequest: field 1 (len-delimited) or empty.
                            let service = msg
                                .get(2..)
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .unwrap_or_default();
                            Ok::<_, Infallible>(health(&path, &service, implemented))
                        },
                    );
                    let conn =
                        hyper::server::conn::http2::Builder::new(SmolExecutor::new(ex.clone()))
                            .serve_connection(FuturesIo::new(stream), service);
                    ex.spawn(async move {
                        let _ = conn.await;
                    })
                    .detach();
                }
            }));
        });
        addr
    }

    #[test]
    fn health_check_statuses_like_the_kubelet() {
        let addr = server(true);
        let t = Duration::from_secs(5);
        crate::probe::tests_support::run(async {
            assert_eq!(grpc(addr, "", None, t).await, Ok(()));
            assert_eq!(grpc(addr, "web", None, t).await, Ok(()));
            assert_eq!(
                grpc(addr, "sick", None, t).await,
                Err("service unhealthy (responded with \"NOT_SERVING\")".into())
            );
            assert_eq!(
                grpc(addr, "other", None, t).await,
                Err("error: health rpc probe failed: rpc error: code = NotFound desc = unknown service".into())
            );
        });
    }

    #[test]
    fn a_server_without_the_health_service() {
        let addr = server(false);
        let err = crate::probe::tests_support::run(grpc(addr, "", None, Duration::from_secs(5)))
            .unwrap_err();
        assert_eq!(
            err,
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
        );
    }

    #[test]
    fn refused_and_silent_servers() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = crate::probe::tests_support::run(grpc(closed, "", None, Duration::from_secs(2)))
            .unwrap_err();
        assert_eq!(
            err,
            format!("error: health rpc probe failed: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {closed}: connect: connection refused\"")
        );
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let err =
            crate::probe::tests_support::run(grpc(addr, "", None, Duration::from_millis(300)))
                .unwrap_err();
        assert_eq!(err, "timeout: health rpc did not complete within 0.3s");
    }

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(request_message(""), Vec::<u8>::new());
        assert_eq!(request_message("ab"), [0x0a, 2, b'a', b'b']);
        assert_eq!(frame(&[1, 2]), [0, 0, 0, 0, 2, 1, 2]);
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 8, 1]), Some(&[8u8, 1][..]));
        assert_eq!(unframe(&[1, 0, 0, 0, 2, 8, 1]), None, "compressed");
        assert_eq!(response_status(&[]), Some(0));
        assert_eq!(response_status(&[0x08, 0x02]), Some(2));
        assert_eq!(response_status(&[0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x01]), Some(1));
        assert_eq!(response_status(&[0x08]), None);
    }
}
