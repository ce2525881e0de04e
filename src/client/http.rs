//! A small HTTP/1.1 client for the agent's API (hyper on smol), over TCP or a unix socket.

use std::io::Write;
use std::path::PathBuf;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use smol_hyper::rt::FuturesIo;

use super::{ClientError, Result};

/// Where the agent's API is: `http://HOST:PORT` or `unix:/path/to/socket`.
#[derive(Clone, Debug)]
pub struct Server {
    url: String,
    target: Target,
    token: Option<String>,
}

#[derive(Clone, Debug)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl Server {
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let target = if let Some(path) = url.strip_prefix("unix:") {
            Target::Unix(PathBuf::from(path))
        } else if let Some(host) = url.strip_prefix("http://") {
            Target::Tcp(host.trim_end_matches('/').to_string())
        } else {
            return Err(ClientError::BadServer { url: url.to_string() });
        };
        Ok(Self { url: url.to_string(), target, token })
    }

    /// GETs `path_and_query`; the body is written to `out` as it arrives (flushed per chunk,
    /// for `logs -f`). Returns the status code; a non-2xx body is returned instead of written.
    pub fn get_to(
        &self,
        path_and_query: &str,
        accept: &str,
        out: &mut dyn Write,
    ) -> Result<(u16, Vec<u8>)> {
        smol::block_on(self.request(path_and_query, accept, out))
    }

    /// GETs into memory.
    pub fn get(&self, path_and_query: &str, accept: &str) -> Result<(u16, Vec<u8>)> {
        let mut body = Vec::new();
        let (code, err) = self.get_to(path_and_query, accept, &mut body)?;
        Ok((code, if (200..300).contains(&code) { body } else { err }))
    }

    async fn request(
        &self,
        path: &str,
        accept: &str,
        out: &mut dyn Write,
    ) -> Result<(u16, Vec<u8>)> {
        let io = |source| ClientError::Connect { url: self.url.clone(), source };
        let (mut sender, conn) = match &self.target {
            Target::Tcp(host) => {
                let stream = smol::net::TcpStream::connect(host.as_str()).await.map_err(io)?;
                let (s, c) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
                    FuturesIo::new(stream),
                )
                .await
                .map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
                (
                    s,
                    smol::spawn(async move {
                        let _ = c.await;
                    }),
                )
            }
            Target::Unix(path) => {
                let stream = smol::net::unix::UnixStream::connect(path).await.map_err(io)?;
                let (s, c) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
                    FuturesIo::new(stream),
                )
                .await
                .map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
                (
                    s,
                    smol::spawn(async move {
                        let _ = c.await;
                    }),
                )
            }
        };
        let host = match &self.target {
            Target::Tcp(h) => h.as_str(),
            Target::Unix(_) => "localhost",
        };
        let mut req =
            hyper::Request::get(path).header("host", host).header("user-agent", "outpost-cli");
        if !accept.is_empty() {
            req = req.header("accept", accept);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| ClientError::Request { path: path.to_string(), message: e.to_string() })?;
        let http = |source| ClientError::Http { url: self.url.clone(), source };
        let resp = sender.send_request(req).await.map_err(http)?;
        let code = resp.status().as_u16();
        let ok = (200..300).contains(&code);
        let mut body = resp.into_body();
        let mut err = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http)?;
            if let Some(data) = frame.data_ref() {
                if ok {
                    let write = |e| ClientError::Output { source: e };
                    out.write_all(data).map_err(write)?;
                    out.flush().map_err(write)?;
                } else {
                    err.extend_from_slice(data);
                }
            }
        }
        drop(conn);
        Ok((code, err))
    }
}
