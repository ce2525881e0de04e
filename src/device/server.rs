//! The Registration service (`/v1beta1.Registration/Register`) on `kubelet.sock`, and the
//! task that follows a registered plugin's ListAndWatch stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::HeaderMap;
use smol_hyper::rt::{FuturesIo, SmolExecutor};

use super::{proto, DeviceError, Devices, KUBELET_SOCKET};

/// A gRPC answer: its message frame (if any) and the status trailers.
pub type Reply = hyper::Response<
    StreamBody<smol::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

/// A unary gRPC answer: the message, or an error status code and message.
pub fn reply(result: Result<Vec<u8>, (u32, String)>) -> Reply {
    let mut frames = Vec::new();
    let mut trailers = HeaderMap::new();
    match result {
        Ok(message) => {
            frames.push(Ok(Frame::data(Bytes::from(proto::frame(&message)))));
            trailers.insert("grpc-status", 0.into());
        }
        Err((code, message)) => {
            trailers.insert("grpc-status", code.into());
            if let Ok(v) = percent_encode(&message).parse() {
                trailers.insert("grpc-message", v);
            }
        }
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = hyper::Response::new(StreamBody::new(smol::stream::iter(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// `grpc-message` is percent-encoded (printable ASCII but `%` as is).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Binds `kubelet.sock` (replacing a stale one: plugins re-register when it is made anew)
/// and serves registrations on the manager's executor. A socket someone still answers on is
/// another kubelet's (k3s beside outpost uses the same default directory): never taken over.
pub fn serve(devices: &Arc<Devices>) -> Result<(), DeviceError> {
    let dir = devices.dir().to_path_buf();
    let err = |source| DeviceError::Dir { path: dir.clone(), source };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let socket = dir.join(KUBELET_SOCKET);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(DeviceError::InUse { socket });
    }
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = smol::net::unix::UnixListener::bind(&socket).map_err(err)?;
    log::info!("device plugins: registration on {}", socket.display());
    let d = devices.clone();
    devices
        .ex
        .spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        log::warn!("device plugins: accept on {}: {e}", socket.display());
                        crate::tasks::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let d2 = d.clone();
                let service = hyper::service::service_fn(move |req| {
                    let d = d2.clone();
                    async move { Ok::<_, Infallible>(handle(&d, req).await) }
                });
                let conn =
                    hyper::server::conn::http2::Builder::new(SmolExecutor::new(d.ex.clone()))
                        .serve_connection(FuturesIo::new(stream), service);
                d.ex.spawn(async move {
                    let _ = conn.await;
                })
                .detach();
            }
        })
        .detach();
    Ok(())
}

async fn handle(devices: &Arc<Devices>, req: hyper::Request<hyper::body::Incoming>) -> Reply {
    if req.uri().path() != proto::REGISTER {
        return reply(Err((12, format!("unknown method {}", req.uri().path()))));
    }
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => return reply(Err((13, e.to_string()))),
    };
    let request = proto::split_frame(&mut body.clone())
        .ok()
        .flatten()
        .and_then(|m| proto::RegisterRequest::decode(&m).ok());
    let Some(r) = request else {
        return reply(Err((13, "malformed RegisterRequest".into())));
    };
    match register(devices, r) {
        Ok(()) => reply(Ok(Vec::new())),
        // grpc-go's status for a plain error: Unknown.
        Err(message) => reply(Err((2, message))),
    }
}

/// The kubelet's checks (`validateRegistration`), then the plugin is followed.
fn register(devices: &Arc<Devices>, r: proto::RegisterRequest) -> Result<(), String> {
    if r.version != proto::VERSION {
        let message = format!(
            "requested API version {:?} is not supported by kubelet. Supported versions are [{:?}]",
            r.version,
            proto::VERSION
        );
        log::warn!("device plugins: {} refused: {message}", r.resource_name);
        return Err(message);
    }
    if !crate::engine::is_extended_resource(&r.resource_name) {
        return Err(format!("the ResourceName {:?} is invalid", r.resource_name));
    }
    // A bare file name: the plugin's socket is in our directory.
    if r.endpoint.is_empty() || r.endpoint.contains('/') {
        return Err(format!(
            "invalid endpoint {:?}: a socket file name in the device plugin directory",
            r.endpoint
        ));
    }
    let endpoint = devices.dir().join(&r.endpoint);
    let options = r.options.unwrap_or_default();
    let generation = devices.register(&r.resource_name, endpoint.clone(), options);
    log::info!("device plugins: {} registered at {}", r.resource_name, endpoint.display());
    let d = devices.clone();
    devices
        .ex
        .spawn(async move { follow(&d, &r.resource_name, &endpoint, generation).await })
        .detach();
    Ok(())
}

/// GetDevicePluginOptions, then ListAndWatch until it ends; its devices then turn
/// unhealthy (capacity stays, allocatable goes), as the kubelet marks them.
async fn follow(devices: &Arc<Devices>, resource: &str, endpoint: &Path, generation: u64) {
    let ex = devices.ex.clone();
    let result = async {
        let options = super::client::unary(&ex, endpoint, proto::GET_OPTIONS, &[]).await?;
        let options = proto::Options::decode(&options).map_err(|e| e.to_string())?;
        log::debug!("device plugins: {resource} options {options:?}");
        devices.set_options(resource, generation, options);
        let mut bad = None;
        super::client::stream(&ex, endpoint, proto::LIST_AND_WATCH, &[], |m| {
            match proto::decode_devices(&m) {
                Ok(list) => {
                    let list: BTreeMap<String, bool> =
                        list.into_iter().map(|d| (d.id, d.health == proto::HEALTHY)).collect();
                    let healthy = list.values().filter(|h| **h).count();
                    log::info!(
                        "device plugins: {resource}: {} devices, {healthy} healthy",
                        list.len()
                    );
                    devices.update(resource, generation, list)
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    false
                }
            }
        })
        .await?;
        bad.map_or(Ok(()), Err)
    }
    .await;
    match result {
        Ok(()) => log::warn!("device plugins: {resource}: ListAndWatch ended"),
        Err(e) => log::warn!("device plugins: {resource} ({}): {e}", endpoint.display()),
    }
    let unhealthy = {
        let state = devices.state();
        state
            .plugins
            .get(resource)
            .filter(|p| p.generation == generation)
            .map(|p| p.devices.keys().map(|id| (id.clone(), false)).collect::<BTreeMap<_, _>>())
    };
    if let Some(list) = unhealthy {
        devices.update(resource, generation, list);
    }
}
