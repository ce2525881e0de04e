//! hyper 1 on smol: accept loops (TCP, optional unix socket, the secure listener's in
//! `tls`), who each request comes from (`auth`), and the glue from HTTP to
//! [`super::handle`], streaming container logs as chunked bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use smol::net::unix::UnixListener;
use smol::net::TcpListener;
use smol::stream::StreamExt;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use super::auth::{self, Identity, Peer};
use super::routes::{self, Body, Context};
use super::{review, tls, ApiConfig, Published, Query};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The unix socket path cannot be created.
    #[error("cannot listen on unix socket {path}: {source}")]
    BindSocket { path: PathBuf, source: std::io::Error },
    /// The bearer token file cannot be read.
    #[error("cannot read API token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
    /// An empty token would let anyone in.
    #[error("API token file {path} is empty")]
    EmptyToken { path: PathBuf },
    /// Plain HTTP on a non-loopback address without the operator's say-so.
    #[error("--listen {addr}: the plain HTTP API is not served on a non-loopback address (it is unauthenticated, or its token travels in clear): use --secure-listen {addr} for remote access (HTTPS with tokens and client certificates, see `outpost kubeconfig`), or pass --listen-allow-remote to serve plain HTTP there anyway")]
    RemoteListen { addr: SocketAddr },
    /// The CA or serving certificate cannot be made or read.
    #[error("secure listener: {0}")]
    Pki(#[from] super::pki::PkiError),
    /// `--tls-cert-file` or `--tls-private-key-file` is unusable.
    #[error("secure listener: {path}: {message}")]
    TlsFile { path: PathBuf, message: String },
    #[error("secure listener: {message}")]
    Tls { message: String },
    /// The token table cannot be opened.
    #[error("secure listener: {0}")]
    Tokens(#[from] crate::store::StoreError),
}

type ReplyBody = BoxBody<Bytes, Infallible>;

/// Binds the TCP address (and the unix socket if configured) and serves until the returned
/// future is dropped. Binding happens before the first poll returns, so a taken port is
/// reported at start.
pub async fn serve(
    config: ApiConfig,
    published: Arc<Published>,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ApiError> {
    let addr = config.listen;
    if !addr.ip().is_loopback() && !config.listen_allow_remote {
        return Err(ApiError::RemoteListen { addr });
    }
    let tcp = TcpListener::bind(addr).await.map_err(|source| ApiError::Bind { addr, source })?;
    let secure = match &config.secure {
        Some(secure) => Some(tls::SecureListener::bind(secure, &config).await?),
        None => None,
    };
    let unix = match &config.socket {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    on_bound(tcp.local_addr().unwrap_or(addr));
    let config = Arc::new(config);
    // Connections and log streams run on an executor this future owns: dropping `serve` ends
    // them all.
    let ex = Arc::new(smol::Executor::new());
    let tcp_loop = async {
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => spawn_connection(&ex, stream, &published, &config, Peer::Plain),
                Err(e) => log::warn!("api: accept failed: {e}"),
            }
        }
    };
    let unix_loop = async {
        let Some(unix) = unix else { return std::future::pending().await };
        loop {
            match unix.accept().await {
                Ok((stream, _)) => spawn_connection(&ex, stream, &published, &config, Peer::Unix),
                Err(e) => log::warn!("api: accept on unix socket failed: {e}"),
            }
        }
    };
    let secure_loop = async {
        let Some(secure) = secure else { return std::future::pending().await };
        secure.run(ex.clone(), published.clone(), config.clone()).await;
        std::future::pending().await
    };
    ex.run(smol::future::or(tcp_loop, smol::future::or(unix_loop, secure_loop))).await
}

/// A stale socket file from a previous run is replaced; the socket is for root only.
fn bind_unix(path: &std::path::Path) -> Result<UnixListener, ApiError> {
    let err = |source| ApiError::BindSocket { path: path.to_path_buf(), source };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

pub(super) fn spawn_connection<S>(
    ex: &Arc<smol::Executor<'static>>,
    stream: S,
    published: &Arc<Published>,
    config: &Arc<ApiConfig>,
    peer: Peer,
) where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    let (published, config, streams, peer) =
        (published.clone(), config.clone(), ex.clone(), Arc::new(peer));
    ex.spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (published, config, streams, peer) =
                (published.clone(), config.clone(), streams.clone(), peer.clone());
            async move { Ok::<_, Infallible>(respond(req, &published, &config, &peer, &streams).await) }
        });
        // Upgrades: exec, attach and port-forward take the connection over.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(SmolTimer::new())
            .serve_connection(FuturesIo::new(stream), service)
            .with_upgrades();
        if let Err(e) = conn.await {
            log::debug!("api: connection: {e}");
        }
    })
    .detach();
}

async fn respond(
    mut req: Request<Incoming>,
    published: &Arc<Published>,
    config: &ApiConfig,
    peer: &Peer,
    streams: &Arc<smol::Executor<'static>>,
) -> Response<ReplyBody> {
    let path = req.uri().path();
    let open = matches!(path, "/healthz" | "/readyz" | "/livez");
    let authorization =
        req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let identity =
        if open { Ok(Identity::anonymous()) } else { peer.identify(authorization, config) };
    let identity = match identity
        .and_then(|id| auth::authorize(&id, req.method().as_str(), path).map(|()| id))
    {
        Ok(identity) => identity,
        Err(reply) => return to_response(reply, published, streams),
    };
    if review::is_review(req.method().as_str(), path) {
        let reply = review::read_and_answer(&identity, req).await;
        return to_response(reply, published, streams);
    }
    let access = identity.access;
    if let Some(target) = super::stream::target(req.uri().path()) {
        return match super::stream::start(&mut req, target, access, published, config, streams)
            .await
        {
            Ok(switching) => switching.map(|()| Full::new(Bytes::new()).boxed()),
            Err(reply) => to_response(reply, published, streams),
        };
    }
    let path = req.uri().path();
    let accept =
        req.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let request = routes::Request {
        method: req.method().as_str(),
        path,
        query: Query::parse(req.uri().query().unwrap_or("")),
        accept,
        now: crate::format::now(),
        access: identity.access,
    };
    let snapshot = published.current();
    let ctx = Context { snapshot: &snapshot, config, metrics: &published.metrics };
    to_response(routes::handle(&request, &ctx), published, streams)
}

fn to_response(
    reply: routes::Reply,
    published: &Arc<Published>,
    streams: &smol::Executor<'static>,
) -> Response<ReplyBody> {
    let (content_type, body) = match reply.body {
        Body::Json(v) => (
            "application/json",
            Full::new(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())).boxed(),
        ),
        Body::Text(t) => ("text/plain; charset=utf-8", Full::new(Bytes::from(t)).boxed()),
        Body::Log(source) => {
            // A small queue: a slow reader slows the file reads, memory stays bounded.
            let (tx, rx) = smol::channel::bounded::<Vec<u8>>(4);
            streams.spawn(source.stream(published.clone(), tx)).detach();
            let frames = rx.map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))));
            ("text/plain", BodyExt::boxed(StreamBody::new(frames)))
        }
        Body::Watch(watch) => {
            // Polled by the connection's task: a slow client is not polled (hyper's bounded
            // write buffer is the queue) and falls behind the ring instead.
            let events = watch.stream(published.clone());
            let frames = events.map(|line| Ok::<_, Infallible>(Frame::data(line)));
            ("application/json", BodyExt::boxed(StreamBody::new(frames)))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}
