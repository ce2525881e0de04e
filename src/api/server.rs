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
use super::{review, tls, ui, ApiConfig, Published, Query};

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
    config: &Arc<ApiConfig>,
    peer: &Peer,
    streams: &Arc<smol::Executor<'static>>,
) -> Response<ReplyBody> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let header =
        |name| req.headers().get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
    let accept = header(hyper::header::ACCEPT).unwrap_or("").to_string();
    // The status page's login form and logout come before authentication.
    if method == "POST" && (path == ui::LOGIN || path == ui::LOGOUT) {
        return login_or_logout(req, &path, peer, config).await;
    }
    let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/livez")
        || (path == ui::LOGIN && matches!(method.as_str(), "GET" | "HEAD"));
    let authorization = header(hyper::header::AUTHORIZATION);
    // A browser's login cookie stands for its token on the UI's GET pages alone.
    let cookie = match authorization {
        None if ui::accepts_cookie(&method, &path) => ui::login::cookie_token(
            req.headers().get_all(hyper::header::COOKIE).iter().filter_map(|v| v.to_str().ok()),
        ),
        _ => None,
    };
    let signed_in = cookie.is_some();
    let bearer = cookie.as_ref().map(|token| format!("Bearer {token}"));
    let authorization = authorization.or(bearer.as_deref());
    let identity =
        if open { Ok(Identity::anonymous()) } else { peer.identify(authorization, config) };
    let identity = match identity.and_then(|id| auth::authorize(&id, &method, &path).map(|()| id)) {
        Ok(identity) => identity,
        Err(reply) if reply.status == 401 && ui::redirects_to_login(&method, &path, &accept) => {
            return redirect(ui::LOGIN, None)
        }
        Err(reply) => return to_response(reply, published, streams),
    };
    if review::is_review(&method, &path) {
        let reply = review::read_and_answer(&identity, req).await;
        return to_response(reply, published, streams);
    }
    let access = identity.access;
    if let Some(target) = super::stream::target(&path) {
        return match super::stream::start(&mut req, target, access, published, config, streams)
            .await
        {
            Ok(switching) => switching.map(|()| Full::new(Bytes::new()).boxed()),
            Err(reply) => to_response(reply, published, streams),
        };
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let route = {
        let (published, config) = (published.clone(), config.clone());
        move || {
            let request = routes::Request {
                method: &method,
                path: &path,
                query,
                accept: &accept,
                now: crate::format::now(),
                access,
                signed_in,
            };
            let snapshot = published.current();
            let ctx = Context { snapshot: &snapshot, config: &config, metrics: &published.metrics };
            routes::handle(&request, &ctx)
        }
    };
    // The status pages read log files: off the executor's thread.
    let reply = if ui::accepts_cookie(req.method().as_str(), req.uri().path()) {
        smol::unblock(route).await
    } else {
        route()
    };
    to_response(reply, published, streams)
}

/// `POST /ui/login` (the form's token checked as a bearer token, then kept in the cookie) and
/// `POST /ui/logout`; a form from another origin is refused.
async fn login_or_logout(
    req: Request<Incoming>,
    path: &str,
    peer: &Peer,
    config: &ApiConfig,
) -> Response<ReplyBody> {
    use ui::login;
    let header =
        |name| req.headers().get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
    if !login::same_origin(header(hyper::header::ORIGIN), header(hyper::header::HOST)) {
        log::warn!("api: a login or logout form from another origin was refused");
        let why = "This form was sent from another site. Open the device's own page to log in.";
        return html(403, login::form(Some(why)));
    }
    if path == ui::LOGOUT {
        return redirect(ui::LOGIN, Some(login::clear_cookie()));
    }
    let body = match http_body_util::Limited::new(req.into_body(), login::MAX_FORM).collect().await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return html(413, login::form(Some("The form is too large."))),
    };
    let Some(token) = login::form_token(&body) else {
        return html(400, login::form(Some("Enter an access token.")));
    };
    match peer.identify(Some(&format!("Bearer {token}")), config) {
        Ok(identity) => {
            log::info!("api: {} logged in to the status page", identity.user);
            redirect("/", Some(login::set_cookie(&token)))
        }
        Err(reply) => {
            let message = reply.json()["message"].as_str().unwrap_or("Unauthorized").to_string();
            html(reply.status, login::form(Some(&message)))
        }
    }
}

fn redirect(location: &'static str, cookie: Option<String>) -> Response<ReplyBody> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = hyper::StatusCode::SEE_OTHER;
    let headers = resp.headers_mut();
    headers.insert(hyper::header::LOCATION, hyper::header::HeaderValue::from_static(location));
    headers
        .insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    if let Some(value) = cookie.and_then(|c| hyper::header::HeaderValue::from_str(&c).ok()) {
        headers.insert(hyper::header::SET_COOKIE, value);
    }
    resp
}

fn html(status: u16, page: String) -> Response<ReplyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(page)).boxed());
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    page_headers(resp.headers_mut());
    resp
}

/// What every status page is served with: no script but its own, no framing, no caching.
fn page_headers(headers: &mut hyper::HeaderMap) {
    use hyper::header::{self, HeaderValue};
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(csp) = HeaderValue::from_str(&ui::html::content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
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
        Body::Html(page) => return html(reply.status, page),
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
    let headers = resp.headers_mut();
    headers
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    // A log line is never taken for markup.
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    resp
}
