//! `pods/attach`: the container's output is its log, followed from the start of the session as
//! the supervisor writes it (both streams on stdout; with `tty: true` the terminal's output is
//! the log's stdout), until the container exits. With `-i`, the client's stdin goes to the
//! container's own stdin, which the supervisor keeps open for a container with `stdin: true`
//! (a pipe, or the terminal's master, which also takes the resizes); it is refused otherwise.

use std::sync::Arc;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use smol::stream::StreamExt;

use super::bad;
use super::exec::{client_input, container_name, running_instance};
use super::io::UpgradedIo;
use crate::api::logs::{self, LogParams, LogSource};
use crate::api::routes::Reply;
use crate::api::{Published, Query};
use crate::runtime::{InstanceId, RuntimePod, SupervisorRuntime};

pub struct Plan {
    source: LogSource,
    stdout: bool,
    /// With `-i`: the pod and the instance whose stdin to write to.
    stdin: Option<(String, InstanceId)>,
    v5: bool,
}

impl Plan {
    pub fn new(
        pod: &Pod,
        state: &RuntimePod,
        query: &Query,
        state_dir: &std::path::Path,
        v5: bool,
    ) -> Result<Self, Reply> {
        let container = container_name(pod, query)?;
        let stdin = if query.flag("stdin") {
            let spec = pod.spec.iter().flat_map(|s| &s.containers).find(|c| c.name == container);
            if spec.is_none_or(|c| c.stdin != Some(true)) {
                return Err(bad(&stdin_refused(&container)));
            }
            Some((state.pod_uid.clone(), running_instance(pod, state, query)?))
        } else {
            None
        };
        // From now on: a line the container writes after this instant is the session's, even
        // if the follow reaches the file's end only later.
        let params = LogParams {
            container: Some(container),
            follow: true,
            since: Some(crate::format::now()),
            ..LogParams::default()
        };
        let source = logs::resolve(pod, params, state_dir).map_err(|e| bad(&e))?;
        Ok(Self { source, stdout: query.flag("stdout") || query.flag("stderr"), stdin, v5 })
    }
}

/// Why `attach -i` is refused for a container without `stdin: true`: its stdin is /dev/null.
fn stdin_refused(container: &str) -> String {
    format!(
        "Unable to attach stdin - container {container} did not enable it: its stdin is \
         /dev/null. Set `stdin: true` (and `tty: true` for a terminal) in the container's spec, \
         or use `kubectl exec -i` to write to a new process"
    )
}

pub async fn run(
    ws: WebSocketStream<UpgradedIo>,
    runtime: SupervisorRuntime,
    plan: Plan,
    published: Arc<Published>,
) {
    let (mut sink, mut source) = ws.split();
    let Plan { source: log, stdout, stdin, v5 } = plan;
    let attached = match stdin {
        Some((uid, id)) => match smol::unblock(move || runtime.attach_stdin(&uid, id)).await {
            Ok(a) => Some(a),
            Err(e) => {
                let mut m = vec![super::exec::ERROR];
                m.extend(serde_json::to_vec(&failure(&e.to_string())).unwrap_or_default());
                let _ = sink.send(Message::binary(m)).await;
                let _ = sink.close(Some(super::exec::normal_close())).await;
                return;
            }
        },
        None => None,
    };
    let (tx, rx) = smol::channel::bounded::<Vec<u8>>(4);
    let follow = log.stream(published, tx);
    let forward = async {
        while let Ok(chunk) = rx.recv().await {
            if !stdout {
                continue;
            }
            let mut message = vec![super::exec::STDOUT];
            message.extend(chunk);
            if sink.send(Message::binary(message)).await.is_err() {
                return false;
            }
        }
        true
    };
    // The client's input goes to the container's stdin (if attached). The client closing its
    // stdin (or the connection) ends the session's hold on it: with `stdinOnce`, the
    // supervisor then closes the container's stdin, as containerd does at the end of the
    // first attach's stdin.
    let client_gone = async {
        match attached {
            Some(a) => {
                let terminal = if a.tty { a.stdin.try_clone().ok() } else { None };
                client_input(&mut source, Some((a.stdin, a.session)), terminal, v5).await;
            }
            None => {
                while let Some(Ok(m)) = source.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            }
        }
        false
    };
    let done =
        smol::future::or(smol::future::zip(follow, forward), async { ((), client_gone.await) })
            .await
            .1;
    if done {
        // The container exited: the attach ends as the kubelet's does.
        let mut m = vec![super::exec::ERROR];
        m.extend(
            serde_json::to_vec(&json!({"metadata": {}, "status": "Success"})).unwrap_or_default(),
        );
        let _ = sink.send(Message::binary(m)).await;
        let _ = sink.close(Some(super::exec::normal_close())).await;
    }
}

fn failure(message: &str) -> serde_json::Value {
    crate::api::routes::status(
        500,
        "InternalError",
        &format!("error attaching to container: {message}"),
    )
    .json()
    .clone()
}
