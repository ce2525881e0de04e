//! The local HTTP API: the Kubernetes read API (pods, their logs, events, configmaps and
//! secrets) so `kubectl --server` works against the device, the kubelet's `/pods` and
//! `/healthz`, `/readyz` and Prometheus `/metrics`, and pod usage for `kubectl top`.
//!
//! Handlers read an immutable [`Snapshot`] that the agent publishes after each change; they
//! never touch the engine's state, so a slow client cannot stall pod management. Only the log
//! endpoint and the usage (a few cgroup files per container) read files.

mod access;
mod auth;
mod discovery;
mod events;
mod logs;
mod metrics;
mod node;
mod objects;
pub mod pki;
mod query;
mod ratelimit;
mod resource_metrics;
mod review;
mod routes;
mod selector;
mod server;
mod stream;
mod table;
#[cfg(test)]
mod tests;
mod tls;
mod ui;
mod watch;
mod x509;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::manifest::DesiredState;
use crate::store::EventRecord;

pub use access::Access;
pub use auth::new_token;
pub use discovery::git_version;
pub use logs::{LogParams, LogSource};
pub use metrics::Metrics;
pub use node::{build as build_node, NodeFacts};
pub use query::Query;
pub use resource_metrics::{cpu_quantity, memory_quantity, UsageTracker};
pub use routes::{handle, Body, Context, Reply, Request};
pub use server::{serve, ApiError};
pub use tls::SecureConfig;
pub use watch::Versions;

/// What the API shows: the pods with their current status.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sorted by namespace, then name.
    pub pods: Vec<Pod>,
    /// Recent events, oldest first.
    pub events: Arc<Vec<EventRecord>>,
    /// The manifests as loaded: the source of the ConfigMaps and Secrets served.
    pub desired: Arc<DesiredState>,
    /// The resourceVersion of the latest change to any object (one counter over all kinds,
    /// like etcd's revision); lists carry it.
    pub version: u64,
    /// The resourceVersions of events, ConfigMaps and Secrets (pods carry theirs).
    pub versions: Versions,
    /// The device as a Node (without its images, read per request); `None` until the agent
    /// sets it.
    pub node: Option<Arc<Node>>,
}

/// The latest snapshot, swapped whole by the agent and cloned (an `Arc`) by handlers, and the
/// agent's counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Published {
    current: Mutex<Arc<Snapshot>>,
    pub metrics: Metrics,
    /// The changes watches read, and their wake-ups.
    watch: watch::Hub,
    /// The Node the next publish carries.
    node: Mutex<Option<Arc<Node>>>,
}

impl Published {
    pub fn publish(
        &self,
        mut pods: Vec<Pod>,
        events: Arc<Vec<EventRecord>>,
        desired: Arc<DesiredState>,
    ) {
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        // Diffed against the previous snapshot: each changed object gets a new
        // resourceVersion and a change in the watches' ring.
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ring = self.watch.ring();
        let prev = self.current();
        let mut next = Snapshot { pods, events, desired, node, ..Snapshot::default() };
        let changed = watch::diff(&prev, &mut next, &mut ring);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        drop(ring);
        if changed {
            self.watch.notify();
        }
    }

    /// Watches open now.
    pub fn watchers(&self) -> usize {
        self.watch.watchers()
    }

    /// The Node object from the next [`Published::publish`] on.
    pub fn set_node(&self, node: Node) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(node));
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How the API is served (from `outpost run`'s flags).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// TCP address (`--listen`).
    pub listen: std::net::SocketAddr,
    /// Also serve on this unix socket (`--api-socket`), mode 0600, without a token.
    pub socket: Option<PathBuf>,
    /// Required as `Authorization: Bearer <token>` on TCP, except for health checks.
    pub token: Option<String>,
    /// Serve plain HTTP on a non-loopback `listen` (`--listen-allow-remote`).
    pub listen_allow_remote: bool,
    /// The HTTPS listener (`--secure-listen`), authenticated and with roles.
    pub secure: Option<SecureConfig>,
    /// Serve Secret values instead of redacting them (`--api-show-secrets`).
    pub show_secrets: bool,
    /// The agent's state directory, where container logs are.
    pub state_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted (pod and container usage).
    pub cgroup_root: PathBuf,
}

impl ApiConfig {
    /// Defaults for tests and benchmarks: loopback, no socket, no token.
    pub fn new(listen: std::net::SocketAddr, state_dir: PathBuf) -> Self {
        Self {
            listen,
            socket: None,
            token: None,
            listen_allow_remote: false,
            secure: None,
            show_secrets: false,
            state_dir,
            cgroup_root: crate::runtime::usage::CGROUP_ROOT.into(),
        }
    }

    /// Reads the token file: its content without surrounding whitespace.
    pub fn read_token(path: &std::path::Path) -> Result<String, ApiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ApiError::TokenFile { path: path.to_path_buf(), source })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(ApiError::EmptyToken { path: path.to_path_buf() });
        }
        Ok(token)
    }
}
