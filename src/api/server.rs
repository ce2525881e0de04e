//! hyper 1 on smol: accept loop and the glue from HTTP to [`super::handle`].

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use smol::net::TcpListener;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use super::{handle, Published};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds `addr` and serves until the returned future is dropped. Binding happens before the
/// first poll returns, so a taken port is reported at start.
pub async fn serve(
    addr: SocketAddr,
    published: Arc<Published>,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ApiError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ApiError::Bind { addr, source })?;
    on_bound(listener.local_addr().unwrap_or(addr));
    // Connections run on an executor this future owns: dropping `serve` ends them all.
    let connections = smol::Executor::new();
    connections.run(accept_loop(&listener, &connections, published)).await
}

async fn accept_loop(
    listener: &TcpListener,
    connections: &smol::Executor<'_>,
    published: Arc<Published>,
) -> Result<(), ApiError> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("api: accept failed: {e}");
                continue;
            }
        };
        let published = published.clone();
        connections
            .spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let snapshot = published.current();
                    async move {
                        let reply = handle(req.method().as_str(), req.uri().path(), &snapshot);
                        let body = serde_json::to_vec(&reply.body).unwrap_or_default();
                        Response::builder()
                            .status(reply.status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(SmolTimer::new())
                    .serve_connection(FuturesIo::new(stream), service);
                if let Err(e) = conn.await {
                    log::debug!("api: connection from {peer}: {e}");
                }
            })
            .detach();
    }
}
