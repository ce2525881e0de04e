//! `pods/exec` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`): the process runs
//! through the pod's supervisor, and its pipes (or terminal) are copied to and from the
//! socket as they are written, never buffered whole. The client closing the socket drops the
//! supervisor connection, which kills the process.

use std::fs::File;
use std::os::fd::AsRawFd;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::stream::StreamExt;
use smol::Async;

use super::bad;
use super::io::UpgradedIo;
use crate::api::routes::{status, Reply};
use crate::api::Query;
use crate::runtime::{ExecExit, ExecStreamRequest, InstanceId, RuntimePod, SupervisorRuntime};

const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
const STDERR: u8 = 2;
pub(super) const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes a channel (the client's stdin).
const CLOSE: u8 = 255;

/// What to run, checked before the connection is upgraded.
pub struct Plan {
    uid: String,
    request: ExecStreamRequest,
    stdout: bool,
    stderr: bool,
    v5: bool,
}

impl Plan {
    pub fn new(pod: &Pod, state: &RuntimePod, query: &Query, v5: bool) -> Result<Self, Reply> {
        let instance = running_instance(pod, state, query)?;
        let argv: Vec<String> = query.all("command").map(String::from).collect();
        if argv.is_empty() {
            return Err(bad("you must specify at least one command for the container"));
        }
        let tty = query.flag("tty");
        Ok(Self {
            uid: state.pod_uid.clone(),
            request: ExecStreamRequest {
                id: instance,
                argv,
                stdin: query.flag("stdin"),
                timeout: None,
                tty,
            },
            stdout: query.flag("stdout"),
            // With a terminal, stderr is the terminal too: the kubelet sends no stderr stream.
            stderr: query.flag("stderr") && !tty,
            v5,
        })
    }
}

/// The container a request names (`container=`, else the pod's default container, else its
/// first) and its running instance; the error is a 400 with the kubelet's message.
pub(super) fn running_instance(
    pod: &Pod,
    state: &RuntimePod,
    query: &Query,
) -> Result<InstanceId, Reply> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let container = container_name(pod, query)?;
    let instance = state
        .containers
        .iter()
        .filter(|c| c.id.name == container && c.exit.is_none())
        .max_by_key(|c| c.id.attempt)
        .ok_or_else(|| bad(&format!("container {container} in pod {name} is not running")))?;
    Ok(InstanceId::new(&instance.id.name, instance.id.attempt))
}

/// The container a request names, checked against the pod's spec.
pub(super) fn container_name(pod: &Pod, query: &Query) -> Result<String, Reply> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let default = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .map(String::as_str)
        .or(spec.and_then(|s| s.containers.first()).map(|c| c.name.as_str()));
    let container = query.get("container").filter(|c| !c.is_empty()).or(default);
    let Some(container) = container else {
        return Err(bad(&format!("pod {name} has no containers")));
    };
    let known = spec.iter().any(|s| {
        s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == container)
    });
    if !known {
        return Err(bad(&format!("container {container} is not valid for pod {name}")));
    }
    Ok(container.to_string())
}

type Ws = WebSocketStream<UpgradedIo>;

pub async fn run(ws: Ws, runtime: SupervisorRuntime, plan: Plan) {
    let (mut sink, mut source) = ws.split();
    let (tx, rx) = smol::channel::bounded::<Vec<u8>>(8);
    // One writer: the pumps and the final status queue their messages here.
    let writer = async move {
        while let Ok(message) = rx.recv().await {
            if sink.send(Message::binary(message)).await.is_err() {
                return;
            }
        }
        // A normal closure is EOF to kubectl; anything else is an error.
        let _ = sink.close(Some(normal_close())).await;
    };
    let Plan { uid, request, stdout, stderr, v5 } = plan;
    let argv = request.argv.clone();
    let tty = request.tty;
    let work = async move {
        let started = smol::unblock(move || runtime.exec_stream(&uid, request)).await;
        let stream = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_message(&failure(&e.to_string()))).await;
                return;
            }
        };
        let (out, err, stdin, waiter) = stream.into_parts();
        let waiter = match waiter {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(error_message(&failure(&e.to_string()))).await;
                return;
            }
        };
        // The terminal's master also takes the resizes.
        let terminal = if tty { out.try_clone().ok() } else { None };
        let input = client_input(&mut source, stdin.map(|f| (f, ())), terminal, v5);
        let output = async {
            let pumps = smol::future::zip(pump(out, STDOUT, stdout, tx.clone()), async {
                if let Some(err) = err {
                    pump(err, STDERR, stderr, tx.clone()).await
                }
            });
            // Output first: it ends when every holder of the pipes closed them, after the
            // process's own exit in the usual case.
            let (exit, _) = smol::future::zip(waiter.wait(), pumps).await;
            let status = match exit {
                Ok(exit) => exit_status(&argv, exit),
                Err(e) => failure(&e.to_string()),
            };
            let _ = tx.send(error_message(&status)).await;
        };
        // The client going away ends the session at once; dropping the waiter kills the
        // process.
        smol::future::or(output, input).await;
    };
    smol::future::zip(writer, work).await;
}

/// Copies the client's messages: stdin data, its close (v5), terminal sizes. Returns when the
/// client closes the connection. `H`, dropped with stdin when the client closes it, is what
/// must end with it (an attach's hold on the container's stdin).
pub(super) async fn client_input<H>(
    source: &mut async_tungstenite::WebSocketReceiver<UpgradedIo>,
    stdin: Option<(File, H)>,
    terminal: Option<File>,
    v5: bool,
) {
    let mut stdin = stdin.and_then(|(f, hold)| Some((Async::new(f).ok()?, hold)));
    while let Some(Ok(message)) = source.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        match channel {
            STDIN => {
                if let Some((pipe, _)) = &mut stdin {
                    if pipe.write_all(payload).await.is_err() {
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                if let (Some(t), Ok(size)) = (&terminal, serde_json::from_slice::<Value>(payload)) {
                    resize(t, &size);
                }
            }
            CLOSE if v5 && payload.first() == Some(&STDIN) => stdin = None,
            _ => {}
        }
    }
}

/// `{"Width": 80, "Height": 24}` → TIOCSWINSZ on the terminal's master; the kernel signals the
/// foreground process group (SIGWINCH).
fn resize(terminal: &File, size: &Value) {
    let dim = |k: &str| size[k].as_u64().and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
    let ws =
        libc::winsize { ws_row: dim("Height"), ws_col: dim("Width"), ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is ours.
    unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Reads `from` to its end, sending each chunk on `channel` (or dropping it when the client
/// did not ask for the stream). A terminal's master reads `EIO` once its last user is gone.
async fn pump(from: File, channel: u8, send: bool, tx: smol::channel::Sender<Vec<u8>>) {
    let Ok(mut from) = Async::new(from) else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        buf[0] = channel;
        match from.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) if send => {
                if tx.send(buf[..=n].to_vec()).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

pub(super) fn normal_close() -> async_tungstenite::tungstenite::protocol::CloseFrame {
    use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    async_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

fn error_message(status: &Value) -> Vec<u8> {
    let mut m = vec![ERROR];
    m.extend(serde_json::to_vec(status).unwrap_or_default());
    m
}

/// The kubelet's final status: Success, or the exit code as kubectl reads it.
fn exit_status(argv: &[String], exit: ExecExit) -> Value {
    match exit.exit_code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {}, exit \
                 code {code}",
                go_list(argv)
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => failure("the command timed out"),
    }
}

fn failure(message: &str) -> Value {
    let reply =
        status(500, "InternalError", &format!("error executing command in container: {message}"));
    reply.json().clone()
}

/// Go's `%v` of a string slice: `[sh -c exit 3]`.
fn go_list(argv: &[String]) -> String {
    format!("[{}]", argv.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_the_kubelets_statuses() {
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let ok = exit_status(&argv, ExecExit { exit_code: Some(0), timed_out: false });
        assert_eq!(ok["status"], "Success");
        let three = exit_status(&argv, ExecExit { exit_code: Some(3), timed_out: false });
        assert_eq!(three["reason"], "NonZeroExitCode");
        assert_eq!(three["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        assert!(three["message"].as_str().unwrap().contains("[sh -c exit 3], exit code 3"));
    }
}
