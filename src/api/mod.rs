//! The local HTTP API: the Kubernetes read API for pods, so `kubectl --server` works against the
//! device, plus `/healthz`.
//!
//! Handlers read an immutable [`Snapshot`] that the agent publishes after each change; they
//! never touch the engine's state, so a slow client cannot stall pod management.

mod discovery;
mod routes;
mod server;

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use crate::store::EventRecord;

pub use routes::{handle, Reply};
pub use server::{serve, ApiError};

/// What the API shows: the pods with their current status.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sorted by namespace, then name.
    pub pods: Vec<Pod>,
    /// Recent events, oldest first.
    pub events: Arc<Vec<EventRecord>>,
    /// Bumped on every publish; served as the list's resourceVersion.
    pub version: u64,
}

/// The latest snapshot, swapped whole by the agent and cloned (an `Arc`) by handlers.
#[derive(Debug, Default)]
pub struct Published(Mutex<Arc<Snapshot>>);

impl Published {
    pub fn publish(&self, mut pods: Vec<Pod>, events: Arc<Vec<EventRecord>>) {
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let version = cur.version + 1;
        *cur = Arc::new(Snapshot { pods, events, version });
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
