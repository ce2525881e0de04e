//! `pods/portforward`: SPDY/3.1 tunneled in WebSocket binary messages, as kubectl ≥ 1.31
//! sends it. kubectl opens two streams per local connection, `error` then `data`, paired by
//! their `requestID` header and naming the `port`; the agent connects to `localhost:PORT`
//! inside the pod's network namespace (the kubelet's behaviour) and copies bytes both ways.
//! A refused connection is reported on the error stream: kubectl prints it and keeps serving.
//!
//! The socket is made on a short-lived thread that entered the namespace (`probe::connect`);
//! after that, data flows between the agent and the socket only.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::stream::StreamExt;
use smol::{Async, Task};

use super::io::UpgradedIo;
use super::spdy::{Frame, Reader, Writer, CANCEL};

pub struct Plan {
    /// `name_namespace`, for error messages, as the kubelet names pods.
    pub pod: String,
    pub uid: String,
    /// `None`: the host's (hostNetwork).
    pub netns: Option<PathBuf>,
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: String,
    error: Option<u32>,
    data: Option<u32>,
}

/// A forwarded connection: bytes from the client to the socket (`None`: the client's FIN),
/// and the task copying, cancelled when dropped.
struct Forward {
    to_pod: Sender<Option<Vec<u8>>>,
    error: u32,
    _task: Task<()>,
}

pub async fn run(ws: WebSocketStream<UpgradedIo>, plan: Plan) {
    let (mut sink, mut source) = ws.split();
    let (tx, rx) = smol::channel::bounded::<Vec<u8>>(32);
    let writer = async move {
        while let Ok(frame) = rx.recv().await {
            if sink.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.close(Some(super::exec::normal_close())).await;
    };
    let tasks = smol::Executor::new();
    let session = async {
        let mut reader = Reader::new();
        let mut writer = Writer::new();
        let mut pairs: HashMap<String, Pair> = HashMap::new();
        let mut forwards: HashMap<u32, Forward> = HashMap::new();
        'messages: while let Some(message) = source.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    log::info!("api: portforward {}: {e}", plan.pod);
                    break;
                }
            };
            match message {
                Message::Binary(bytes) => reader.push(&bytes),
                Message::Close(_) => break,
                _ => continue,
            }
            loop {
                let frame = match reader.next() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        log::info!("api: portforward {}: {e}", plan.pod);
                        break 'messages;
                    }
                };
                match frame {
                    Frame::SynStream { id, headers } => {
                        if tx.send(writer.syn_reply(id)).await.is_err() {
                            break 'messages;
                        }
                        let get = |name: &str| {
                            headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
                        };
                        let request = get("requestid").unwrap_or_default();
                        let pair = pairs.entry(request.clone()).or_default();
                        pair.port = get("port").unwrap_or_default();
                        match get("streamtype").as_deref() {
                            Some("error") => pair.error = Some(id),
                            Some("data") => pair.data = Some(id),
                            _ => {
                                let _ = tx.send(Writer::rst_stream(id, CANCEL)).await;
                                continue;
                            }
                        }
                        if let (Some(error), Some(data)) = (pair.error, pair.data) {
                            let port = std::mem::take(&mut pair.port);
                            pairs.remove(&request);
                            let (to_pod, from_client) = smol::channel::bounded(16);
                            let task = tasks.spawn(forward(
                                port,
                                error,
                                data,
                                from_client,
                                tx.clone(),
                                plan.netns.clone(),
                                format!("{}, uid {}", plan.pod, plan.uid),
                            ));
                            forwards.insert(data, Forward { to_pod, error, _task: task });
                        }
                    }
                    Frame::Data { id, fin, data } => {
                        if let Some(f) = forwards.get(&id) {
                            if !data.is_empty() {
                                let _ = f.to_pod.send(Some(data)).await;
                            }
                            if fin {
                                let _ = f.to_pod.send(None).await;
                            }
                        }
                    }
                    Frame::RstStream { id } => {
                        forwards.retain(|data, f| *data != id && f.error != id);
                    }
                    Frame::Ping { id } => {
                        let _ = tx.send(Writer::ping(id)).await;
                    }
                    Frame::GoAway => break 'messages,
                    Frame::Other => {}
                }
            }
        }
        // Every forwarded connection ends with the session.
        drop(forwards);
        drop(tx);
    };
    smol::future::zip(writer, tasks.run(session)).await;
}

/// One forwarded connection: connect inside the pod, then copy both ways until both sides
/// closed; a failure goes to the error stream.
async fn forward(
    port: String,
    error: u32,
    data: u32,
    from_client: Receiver<Option<Vec<u8>>>,
    tx: Sender<Vec<u8>>,
    netns: Option<PathBuf>,
    pod: String,
) {
    let socket = match port.parse::<u16>() {
        Ok(p) if p > 0 => connect(p, netns).await.map_err(|e| {
            format!(
                "error forwarding port {p} to pod {pod}: failed to connect to localhost:{p} \
                 inside the pod's network namespace: {e}"
            )
        }),
        _ => Err(format!("invalid port {port:?}: expected 1-65535")),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(message) => {
            log::info!("api: portforward {pod}: {message}");
            let _ = tx.send(Writer::data(error, true, message.as_bytes())).await;
            let _ = tx.send(Writer::data(data, true, &[])).await;
            return;
        }
    };
    let to_pod = async {
        let mut socket = &socket;
        while let Ok(Some(bytes)) = from_client.recv().await {
            if socket.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = socket.get_ref().shutdown(std::net::Shutdown::Write);
    };
    let from_pod = async {
        let mut socket = &socket;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Writer::data(data, false, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The pod's side is done: so is the forwarding, as with the kubelet (kubectl waits
        // for the error stream's end before it closes the local connection).
        let _ = tx.send(Writer::data(data, true, &[])).await;
        let _ = tx.send(Writer::data(error, true, &[])).await;
    };
    smol::future::zip(to_pod, from_pod).await;
}

/// `localhost:PORT` in the pod: IPv4 first, then IPv6, like the kubelet.
async fn connect(port: u16, netns: Option<PathBuf>) -> std::io::Result<Async<TcpStream>> {
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = match crate::probe::connect(v4, netns.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            crate::probe::connect(v6, netns.as_deref()).await.map_err(|_| e)?
        }
    };
    Async::new(stream.get_ref().try_clone()?)
}
