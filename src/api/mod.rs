//! The local HTTP API: the Kubernetes read API (pods, their logs, events, configmaps and
//! secrets) so `kubectl --server` works against the device, the kubelet's `/pods` and
//! `/healthz`, `/readyz` and Prometheus `/metrics`, and pod usage for `kubectl top`.
//!
//! Handlers read an immutable [`Snapshot`] that the agent publishes after each change; they
//! never touch the engine's state, so a slow client cannot stall pod management. Only the log
//! endpoint and the usage (a few cgroup files per container) read files.

mod access;
mod discovery;
mod events;
mod logs;
mod metrics;
mod objects;
mod query;
mod resource_metrics;
mod routes;
mod selector;
mod server;
mod stream;
mod table;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use crate::manifest::DesiredState;
use crate::store::EventRecord;

pub use access::Access;
pub use logs::{LogParams, LogSource};
pub use metrics::Metrics;
pub use query::Query;
pub use resource_metrics::{cpu_quantity, memory_quantity, UsageTracker};
pub use routes::{handle, Body, Context, Reply, Request};
pub use server::{serve, ApiError};

/// What the API shows: the pods with their current status.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sorted by namespace, then name.
    pub pods: Vec<Pod>,
    /// Recent events, oldest first.
    pub events: Arc<Vec<EventRecord>>,
    /// The manifests as loaded: the source of the ConfigMaps and Secrets served.
    pub desired: Arc<DesiredState>,
    /// Bumped on every publish; served as the list's resourceVersion.
    pub version: u64,
}

/// The latest snapshot, swapped whole by the agent and cloned (an `Arc`) by handlers, and the
/// agent's counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Published {
    current: Mutex<Arc<Snapshot>>,
    pub metrics: Metrics,
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
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let version = cur.version + 1;
        *cur = Arc::new(Snapshot { pods, events, desired, version });
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
