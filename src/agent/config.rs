//! The agent's settings. `cli` builds them from `outpost run`'s flags; tests and benchmarks
//! build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{ResourceList, Threshold, UnsafeSysctls};
use crate::network::subnet::Subnet;

#[derive(Clone, Debug)]
pub struct Config {
    /// The manifest directory.
    pub manifests: PathBuf,
    /// Manifest URLs merged with the directory.
    pub manifest_urls: crate::watch::UrlOptions,
    /// Database, images, logs and pod data.
    pub state: PathBuf,
    pub api: ApiSettings,
    pub network: NetworkSettings,
    pub node: NodeSettings,
    /// How often node and pod usage is measured for eviction.
    pub housekeeping_interval: Duration,
    /// Safe updates: prefetch, health gate and rollback (`--rollback`, `--rollout-deadline`).
    pub rollout: crate::engine::RolloutConfig,
}

#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Plain HTTP on a non-loopback `listen` was asked for.
    pub listen_allow_remote: bool,
    /// The HTTPS listener with authentication and roles.
    pub secure: Option<crate::api::SecureConfig>,
    pub socket: Option<PathBuf>,
    /// A file holding the bearer token the TCP listener requires.
    pub token_file: Option<PathBuf>,
    pub show_secrets: bool,
}

#[derive(Clone, Debug)]
pub struct NetworkSettings {
    /// Where a CNI `.conflist` may replace the built-in network.
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The built-in network's subnet; `None` picks a free one.
    pub pod_subnet: Option<Subnet>,
    /// The built-in network in-process (else as CNI plugins).
    pub in_process: bool,
}

/// What admission, eviction and the pods' limits are computed from.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub seccomp_default: bool,
    pub system_reserved: ResourceList,
    pub kube_reserved: ResourceList,
    pub eviction_hard: Vec<Threshold>,
    pub pressure_transition: Duration,
    pub max_pods: usize,
    /// `pids.max` of each pod's cgroup; `None` when unlimited.
    pub pod_max_pids: Option<u64>,
    pub allowed_unsafe_sysctls: UnsafeSysctls,
    /// `--node-labels`: the operator's labels, over the node's own.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Read for `MemTotal` and `MemAvailable`: /proc/meminfo unless a test simulates pressure.
    pub meminfo: PathBuf,
    /// Where device plugins register (`kubelet.sock`) and listen.
    pub device_plugin_dir: PathBuf,
    /// `--userns-pool`; `None`: `/etc/subuid` and `/etc/subgid`, else the default
    /// (`crate::userns::Pool::configured`).
    pub userns_pool: Option<crate::userns::Pool>,
}
