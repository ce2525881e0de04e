//! Calls to a plugin's `DevicePlugin` service on its unix socket: a connection per call
//! (Allocate is rare; ListAndWatch holds its own for as long as the plugin streams).

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use smol_hyper::rt::{FuturesIo, SmolExecutor};

use super::proto;

/// Answers are a few KB; anything bigger is not one.
const MAX_BODY: usize = 1 << 20;

/// Sends one request message to `path` and returns the response, the HTTP and a
/// trailers-only gRPC status checked.
async fn call(
    ex: &Arc<smol::Executor<'static>>,
    socket: &Path,
    path: &str,
    message: &[u8],
) -> Result<hyper::Response<Incoming>, String> {
    let stream = smol::net::unix::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("dial unix {}: {e}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        SmolExecutor::new(ex.clone()),
        FuturesIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    ex.spawn(async move {
        let _ = conn.await;
    })
    .detach();
    let request = hyper::Request::post(format!("http://localhost{path}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .body(Full::new(Bytes::from(proto::frame(message))))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("unexpected HTTP status code {}", response.status().as_u16()));
    }
    check_status(response.headers())?;
    Ok(response)
}

/// A gRPC error status in `map` (headers of a trailers-only answer, or trailers).
fn check_status(map: &HeaderMap) -> Result<(), String> {
    let Some(code) = map.get("grpc-status").and_then(|c| c.to_str().ok()) else { return Ok(()) };
    if code.trim() == "0" {
        return Ok(());
    }
    let message = map
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(crate::probe::grpc::percent_decode)
        .unwrap_or_default();
    Err(format!("rpc error: code = {code} desc = {message}"))
}

/// A unary call: the answer's message.
pub(super) async fn unary(
    ex: &Arc<smol::Executor<'static>>,
    socket: &Path,
    path: &str,
    message: &[u8],
) -> Result<Vec<u8>, String> {
    let response = call(ex, socket, path, message).await?;
    let body =
        Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| e.to_string())?;
    if let Some(trailers) = body.trailers() {
        check_status(trailers)?;
    }
    let mut bytes = body.to_bytes().to_vec();
    proto::split_frame(&mut bytes)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no answer message".to_string())
}

/// A server stream: calls `each` with every message until the stream ends (`Ok`) or
/// `each` returns false.
pub(super) async fn stream(
    ex: &Arc<smol::Executor<'static>>,
    socket: &Path,
    path: &str,
    message: &[u8],
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    let mut body = call(ex, socket, path, message).await?.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(trailers) = frame.trailers_ref() {
            return check_status(trailers);
        }
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > MAX_BODY {
                return Err("message too large".into());
            }
            while let Some(m) = proto::split_frame(&mut buf).map_err(|e| e.to_string())? {
                if !each(m) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
