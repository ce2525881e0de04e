//! What the action tasks are given: the agent's shared handles and each pod's context.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal as NixSignal;

use crate::image::ImageStore;
use crate::network::Network;
use crate::runtime::spec::{NodeInfo, PodFiles};
use crate::volume::Mounter;

/// What the action tasks share; built once by the agent.
pub struct Deps<R> {
    pub runtime: Arc<R>,
    pub images: Arc<ImageStore>,
    pub pull_options: crate::image::pull::PullOptions,
    pub network: Option<Arc<Network>>,
    pub node: NodeInfo,
    pub data_dir: PathBuf,
    pub mounter: Arc<dyn Mounter + Send + Sync>,
    pub host_resolv: String,
    /// `--pod-max-pids`, `None` when unlimited.
    pub pod_max_pids: Option<u64>,
    /// The device plugins; `None` when their directory could not be served (and in tests).
    pub devices: Option<Arc<crate::device::Devices>>,
    /// Host ids for pods with `hostUsers: false`; `None` when the database could not be
    /// opened for them (and in tests): such pods then fail to start, naming why.
    pub userns: Option<Arc<UsernsIds>>,
}

/// The pool of host ids for user namespaces and the blocks pods hold (`crate::userns`).
pub struct UsernsIds {
    pub pool: crate::userns::Pool,
    pub ranges: crate::store::IdRanges,
}

impl UsernsIds {
    /// The first host id of the pod's block: the one it holds, else a free one, recorded
    /// before anything is made with it.
    pub fn grant(&self, uid: &str) -> Result<u32, String> {
        self.ranges.grant(uid, &self.pool).map_err(|e| e.to_string())
    }

    /// Frees the pod's block: only once the pod is gone for good (no process and no file of
    /// it is left with those ids).
    pub fn release(&self, uid: &str) {
        match self.ranges.release(uid) {
            Ok(true) => log::info!("pod {uid}: user namespace ids released"),
            Ok(false) => {}
            Err(e) => log::warn!("pod {uid}: releasing user namespace ids: {e}"),
        }
    }
}

impl<R> Deps<R> {
    /// `<state>/pod-data/<uid>`: volumes and the pod's files, outside the runtime's pod dir so
    /// they can be prepared before the sandbox exists, as the kubelet does.
    pub fn pod_data(&self, uid: &str) -> PathBuf {
        self.data_dir.join(uid)
    }

    /// `<pod data>/sandbox-ready`: written once the sandbox is fully set up (network attached,
    /// pod files written). A sandbox without it was cut short by an agent crash.
    pub fn setup_marker(&self, uid: &str) -> PathBuf {
        self.pod_data(uid).join("sandbox-ready")
    }
}

/// What the agent keeps per running sandbox, handed to the tasks that need it.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    pub pod_ips: Vec<String>,
    /// The sandbox's network namespace (probes reach the pod's loopback through it when the
    /// pod has no IP); `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    pub volumes: BTreeMap<String, PathBuf>,
    pub files: PodFiles,
    pub host_network: bool,
    /// Each container's stop signal (image STOPSIGNAL or lifecycle.stopSignal).
    pub stop_signals: BTreeMap<String, NixSignal>,
}

impl<R> Deps<R> {
    /// Removes a pod's container logs (the pod is gone for good).
    pub fn remove_logs(&self, uid: &str) {
        let logs = crate::runtime::pod_log_dir(self.state_dir(), uid);
        if let Err(e) = std::fs::remove_dir_all(&logs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("pod {uid}: removing logs {}: {e}", logs.display());
            }
        }
    }

    /// The CRI log of a container instance, in the runtime's pod directory.
    pub fn runtime_log(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        crate::runtime::log_path(self.state_dir(), uid, name, attempt)
    }

    pub fn state_dir(&self) -> &Path {
        self.data_dir.parent().unwrap_or(Path::new("/"))
    }
}

impl PodContext {
    /// How probes and hooks reach the pod.
    pub fn address(&self) -> crate::probe::target::PodAddress<'_> {
        crate::probe::target::PodAddress {
            pod_ips: &self.pod_ips,
            netns: self.netns.as_deref(),
            host_network: self.host_network,
        }
    }
}
