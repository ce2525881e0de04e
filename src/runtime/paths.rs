//! The pod directory layout, readable without the supervisor (adoption, recovery).
//!
//! ```text
//! <state_dir>/pods/<pod_uid>/
//!   sandbox.json       SandboxConfig, written by the agent before spawning the supervisor
//!   supervisor.json    SupervisorRecord: pid + starttime (guards pid reuse) + SandboxInfo
//!   supervisor.sock    the command socket
//!   supervisor.log     the supervisor's own log
//!   state/             libcontainer's root (state.json per container)
//!   ns/{uts,ipc,net}   the pod's namespaces, bind-mounted (net only without the agent's)
//!   sandbox/           the pause bundle, with a shared pid namespace (config.json, empty rootfs)
//!   containers/<name>.<attempt>/  bundle: config.json, status.json, rootfs (overlay), upper, work
//! ```
//! Logs live beside, in `<state_dir>/logs/<pod_uid>/<name>/<attempt>.log` (CRI format, rotated
//! to `<attempt>.log.1` ...), and are removed by the agent once the pod is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::{InstanceId, SandboxInfo};

/// What `supervisor.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupervisorRecord {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: a reused pid has another start time.
    pub starttime: u64,
    pub sandbox: SandboxInfo,
}

/// `<state>/logs/<pod_uid>`: every container log of a pod, per container and instance.
pub fn pod_log_dir(state_dir: &Path, pod_uid: &str) -> PathBuf {
    state_dir.join("logs").join(pod_uid)
}

/// The CRI log of one container instance: `<state>/logs/<uid>/<container>/<attempt>.log`.
pub fn log_path(state_dir: &Path, pod_uid: &str, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir(state_dir, pod_uid).join(container).join(format!("{attempt}.log"))
}

#[derive(Clone, Debug)]
pub struct PodDir(PathBuf);

impl PodDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn sandbox_config(&self) -> PathBuf {
        self.0.join("sandbox.json")
    }
    pub fn supervisor_record(&self) -> PathBuf {
        self.0.join("supervisor.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("supervisor.sock")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.0.join("supervisor.log")
    }
    pub fn state_root(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn pause_bundle(&self) -> PathBuf {
        self.0.join("sandbox")
    }
    pub fn containers(&self) -> PathBuf {
        self.0.join("containers")
    }
    pub fn container_dir(&self, id: &InstanceId) -> PathBuf {
        self.containers().join(id.key())
    }
    pub fn status_file(&self, id: &InstanceId) -> PathBuf {
        self.container_dir(id).join("status.json")
    }
    /// Outside the pod directory: logs outlive the sandbox (a completed pod's logs stay
    /// readable until the pod itself is gone), like the kubelet's /var/log/pods.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        let uid = self.0.file_name().unwrap_or_default().to_string_lossy();
        let state = self.0.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
        pod_log_dir(state, &uid).join(name)
    }
    pub fn log_file(&self, id: &InstanceId) -> PathBuf {
        self.log_dir(&id.name).join(format!("{}.log", id.attempt))
    }
}
