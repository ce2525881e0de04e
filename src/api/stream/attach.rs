//! `pods/attach`: the runtime keeps no container's stdin or stdout attachable (its output
//! goes through the supervisor into the CRI log), so attach follows the container's log from
//! now on, as the container writes it, both streams on stdout (the log keeps no ordering
//! between them worth splitting), until the container exits. Input is refused: a container's
//! stdin is /dev/null.

use std::sync::Arc;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use smol::stream::StreamExt;

use super::bad;
use super::io::UpgradedIo;
use crate::api::logs::{self, LogParams, LogSource};
use crate::api::routes::Reply;
use crate::api::{Published, Query};

pub struct Plan {
    source: LogSource,
    stdout: bool,
}

impl Plan {
    pub fn new(pod: &Pod, query: &Query, state_dir: &std::path::Path) -> Result<Self, Reply> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if query.flag("stdin") {
            return Err(bad(&format!(
                "attach -i is not supported: outpost keeps no container's stdin open (it is \
                 /dev/null); use `kubectl exec -i {name} -- CMD` to write to a process"
            )));
        }
        let mut params =
            LogParams::parse(&Query::parse("follow=true&tailLines=0"), crate::format::now())
                .map_err(|e| bad(&e))?;
        params.container = query.get("container").filter(|c| !c.is_empty()).map(String::from);
        let source = logs::resolve(pod, params, state_dir).map_err(|e| bad(&e))?;
        Ok(Self { source, stdout: query.flag("stdout") || query.flag("stderr") })
    }
}

pub async fn run(ws: WebSocketStream<UpgradedIo>, plan: Plan, published: Arc<Published>) {
    let (mut sink, mut source) = ws.split();
    let (tx, rx) = smol::channel::bounded::<Vec<u8>>(4);
    let follow = plan.source.stream(published, tx);
    let forward = async {
        while let Ok(chunk) = rx.recv().await {
            if !plan.stdout {
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
    // The client closing (or anything it sends: there is no stdin) is watched meanwhile.
    let client_gone = async {
        while let Some(Ok(m)) = source.next().await {
            if matches!(m, Message::Close(_)) {
                break;
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
