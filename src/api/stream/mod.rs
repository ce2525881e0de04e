//! `kubectl exec`, `attach`, `cp` (an exec of `tar`) and `port-forward`: the pod subresources
//! that upgrade the HTTP connection, spoken the way kubectl ≥ 1.31 does by default.
//!
//! - exec (and attach, which follows the container's log and writes to the stdin its
//!   supervisor keeps: `attach.rs`): WebSocket, subprotocol `v5.channel.k8s.io` (or `v4.channel.k8s.io`):
//!   each binary message is a channel byte then data (0 stdin, 1 stdout, 2 stderr, 3 the
//!   final `Status`, 4 terminal resizes; v5's 255 closes a channel). The process runs through
//!   the pod's supervisor (`runtime::ExecStream`): its pipes or terminal come back to the
//!   agent and are copied straight to the socket; the agent never calls libcontainer.
//! - port-forward: SPDY/3.1 tunneled in WebSocket binary messages (subprotocol
//!   `SPDY/3.1+portforward.k8s.io`), since kubectl speaks that protocol and no other; each
//!   forwarded connection is a pair of SPDY streams (data, error), connected to
//!   `localhost:PORT` inside the pod's network namespace.
//!
//! Only callers with [`Access::Admin`] get here: these run code and move bytes in pods.

mod attach;
mod exec;
mod io;
mod portforward;
mod spdy;

use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::WebSocketStream;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};

use super::routes::{status, Reply};
use super::{Access, ApiConfig, Published};
use crate::runtime::{Runtime, RuntimePod, SupervisorRuntime};

/// Which subresource a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// `/api/v1/namespaces/NS/pods/NAME/{exec,attach,portforward}`.
pub fn target(path: &str) -> Option<(String, String, Kind)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, sub] => {
            let kind = match *sub {
                "exec" => Kind::Exec,
                "attach" => Kind::Attach,
                "portforward" => Kind::PortForward,
                _ => return None,
            };
            Some((ns.to_string(), name.to_string(), kind))
        }
        _ => None,
    }
}

const WS_V5: &str = "v5.channel.k8s.io";
const WS_V4: &str = "v4.channel.k8s.io";
const WS_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Checks the request, answers `101 Switching Protocols` and runs the session on `ex` once
/// hyper hands over the connection; an error is a `Status` reply instead.
pub async fn start(
    req: &mut Request<Incoming>,
    (ns, name, kind): (String, String, Kind),
    access: Access,
    published: &Arc<Published>,
    config: &ApiConfig,
    ex: &Arc<smol::Executor<'static>>,
) -> Result<Response<()>, Reply> {
    let snapshot = published.current();
    if access != Access::Admin {
        return Err(forbidden(&name, &ns, kind));
    }
    if !matches!(req.method().as_str(), "GET" | "POST") {
        return Err(status(
            405,
            "MethodNotAllowed",
            &format!("{} is not allowed on pods/{}", req.method(), kind.name()),
        ));
    }
    let pod = snapshot
        .pods
        .iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && p.metadata.name.as_deref() == Some(name.as_str())
        })
        .ok_or_else(|| not_found(&name))?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if matches!(phase.as_str(), "Succeeded" | "Failed") {
        let what = match kind {
            Kind::PortForward => "forward ports to",
            Kind::Attach => "attach",
            Kind::Exec => "exec into",
        };
        return Err(bad(&format!(
            "cannot {what} a container in a completed pod; current phase is {phase}"
        )));
    }
    let runtime = SupervisorRuntime::new(&config.state_dir);
    let state = runtime.status(&uid).await.map_err(|e| {
        log::info!("api: {} {ns}/{name}: {e}", kind.name());
        bad(&format!("pod {name} is not running on this device"))
    })?;
    // Checked after the pod and container, so a client that falls back to another protocol
    // after a refused upgrade (kubectl retries with SPDY) still shows what is wrong.
    let protocol = negotiate(req, kind);
    let query = super::Query::parse(req.uri().query().unwrap_or(""));
    let session: Session = match kind {
        Kind::Exec => {
            let plan = exec::Plan::new(pod, &state, &query, protocol == Ok(WS_V5))?;
            Session::Exec(runtime, plan)
        }
        Kind::Attach => {
            let v5 = protocol == Ok(WS_V5);
            let plan = attach::Plan::new(pod, &state, &query, &config.state_dir, v5)?;
            Session::Attach(runtime, plan, published.clone())
        }
        Kind::PortForward => {
            let netns = netns(&state).ok_or_else(|| bad("the pod's sandbox is not running"))?;
            Session::PortForward(portforward::Plan { pod: format!("{name}_{ns}"), uid, netns })
        }
    };
    let protocol = protocol?;
    let key = header(req, "sec-websocket-key")
        .ok_or_else(|| bad("missing Sec-WebSocket-Key"))?
        .to_string();
    let upgrade = hyper::upgrade::on(req);
    let label = format!("{} {ns}/{name}", kind.name());
    ex.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return log::info!("api: {label}: upgrade failed: {e}"),
        };
        let ws =
            WebSocketStream::from_raw_socket(io::UpgradedIo(upgraded), Role::Server, None).await;
        log::info!("api: {label} started");
        match session {
            Session::Exec(runtime, plan) => exec::run(ws, runtime, plan).await,
            Session::Attach(runtime, plan, published) => {
                attach::run(ws, runtime, plan, published).await
            }
            Session::PortForward(plan) => portforward::run(ws, plan).await,
        }
        log::info!("api: {label} ended");
    })
    .detach();
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    h.insert("sec-websocket-accept", HeaderValue::from_str(&accept).map_err(|_| bad("key"))?);
    h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    Ok(resp)
}

enum Session {
    Exec(SupervisorRuntime, exec::Plan),
    Attach(SupervisorRuntime, attach::Plan, Arc<Published>),
    PortForward(portforward::Plan),
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The WebSocket subprotocol to answer with, from what the client offers.
fn negotiate(req: &Request<Incoming>, kind: Kind) -> Result<&'static str, Reply> {
    let upgrade = header(req, "upgrade").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(bad(&format!(
            "pods/{} needs a WebSocket upgrade (kubectl 1.31 or newer does it by default; \
             outpost does not speak SPDY upgrades), got Upgrade: {upgrade:?}",
            kind.name()
        )));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let supported: &[&'static str] =
        if kind == Kind::PortForward { &[WS_PORT_FORWARD] } else { &[WS_V5, WS_V4] };
    supported.iter().copied().find(|p| offered.contains(p)).ok_or_else(|| {
        bad(&format!(
            "no supported WebSocket subprotocol offered for pods/{} (offered {offered:?}, \
             supported {supported:?})",
            kind.name()
        ))
    })
}

/// The pod's network namespace (`None` for a sandbox that is gone); the host's for
/// `hostNetwork` pods, where there is nothing to enter.
fn netns(state: &RuntimePod) -> Option<Option<std::path::PathBuf>> {
    let sandbox = state.sandbox.as_ref().filter(|_| state.sandbox_running)?;
    Some(sandbox.netns.clone())
}

fn bad(message: &str) -> Reply {
    status(400, "BadRequest", message)
}

fn not_found(name: &str) -> Reply {
    status(404, "NotFound", &format!("pods \"{name}\" not found"))
}

/// The API server's wording for an RBAC denial, with what would grant it.
fn forbidden(name: &str, ns: &str, kind: Kind) -> Reply {
    status(
        403,
        "Forbidden",
        &format!(
            "pods \"{name}\" is forbidden: this listener's callers may not create pods/{} in \
             the namespace \"{ns}\": it needs admin access (root's --api-socket, or an admin \
             user)",
            kind.name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_streaming_subresources_are_taken_over() {
        let t = target;
        assert_eq!(
            t("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default".into(), "web".into(), Kind::Exec))
        );
        assert_eq!(t("/api/v1/namespaces/a/pods/b/attach").map(|x| x.2), Some(Kind::Attach));
        assert_eq!(
            t("/api/v1/namespaces/a/pods/b/portforward").map(|x| x.2),
            Some(Kind::PortForward)
        );
        assert_eq!(t("/api/v1/namespaces/a/pods/b/log"), None);
        assert_eq!(t("/api/v1/namespaces/a/pods/b"), None);
    }

    #[test]
    fn a_view_caller_is_told_what_would_grant_it() {
        let reply = forbidden("web", "default", Kind::Exec);
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["reason"], "Forbidden");
        assert!(reply.json()["message"].as_str().unwrap().contains("pods/exec"));
    }
}
