//! outpost: Kubernetes static pods on an edge device, without a control plane.
//!
//! Data flows one way: files → desired state (`manifest`, `watch`) → `engine` → runtime actions
//! → observed state → store → API. See ARCHITECTURE.md.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod code_pages;
pub mod device;
pub mod engine;
pub mod exec;
pub mod format;
pub mod http_client;
pub mod image;
pub mod kubeconfig;
pub mod manifest;
pub mod network;
pub mod probe;
pub mod quantity;
pub mod runtime;
pub mod sd_notify;
pub mod store;
pub mod tasks;
pub mod userns;
pub mod volume;
pub mod watch;
