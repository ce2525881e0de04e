//! The vocabulary shared by the agent, the supervisor and the engine glue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

/// One instance of a pod's container: the container's name and its restart count.
///
/// Every start of a container is a new instance (new rootfs, cgroup, log file), so the previous
/// instance's exit and log stay available (`kubectl logs --previous`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub name: String,
    pub attempt: u32,
}

impl InstanceId {
    pub fn new(name: impl Into<String>, attempt: u32) -> Self {
        Self { name: name.into(), attempt }
    }

    /// `<name>.<attempt>`: the libcontainer id, cgroup leaf and directory name. Kubernetes
    /// container names are DNS labels (no dots), so this never collides with `pause` or another
    /// instance.
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.attempt)
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.name, self.attempt)
    }
}

/// What the sandbox (the pod's namespaces, and a pause process for a shared pid namespace) looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// The pod's UID: names the pod directory and the pod cgroup.
    pub pod_uid: String,
    /// `namespace/name`, for log lines only.
    pub pod_name: String,
    /// Set in the pod's new UTS namespace (ignored with `host_network`, like the kubelet).
    pub hostname: String,
    /// Use the host's network (and UTS) namespace: no new netns, no `lo` setup.
    pub host_network: bool,
    /// A network namespace to join, made (with `lo` up) and pinned by the agent, which sets
    /// up the pod network in it meanwhile. `None`: the supervisor makes one and brings `lo` up.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// One pid namespace owned by the pause process, joined by every app container.
    pub share_process_namespace: bool,
    /// Parent of the pod cgroup (`<cgroup_parent>/<pod_uid>`); a later QoS tier can pass
    /// `/outpost/burstable` like the kubelet's `kubepods/burstable`.
    pub cgroup_parent: PathBuf,
    /// The pod's sysctls (admitted, dotted names), written by the supervisor inside the pod's
    /// net/ipc namespaces before any container starts.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `pids.max` of the pod cgroup (`--pod-max-pids`); `None`: unlimited.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// The pod's `terminationGracePeriodSeconds`, kept with the sandbox (as the kubelet keeps
    /// it in container labels) so a sandbox found without its pod's spec still gets it.
    #[serde(default)]
    pub termination_grace_period_seconds: Option<u64>,
    /// `hostUsers: false`: the pod's user namespace, made and pinned by the agent. Its other
    /// namespaces are made owned by it and every container joins it.
    #[serde(default)]
    pub userns: Option<PodUserns>,
}

/// A pod's own user namespace: container ids 0..65535 are host ids `first..first+65535`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserns {
    pub first: u32,
    /// Where the agent pinned it.
    pub pin: PathBuf,
}

impl SandboxConfig {
    /// A sandbox with private namespaces under the default cgroup parent `/outpost`.
    pub fn new(
        pod_uid: impl Into<String>,
        pod_name: impl Into<String>,
        hostname: impl Into<String>,
    ) -> Self {
        Self {
            pod_uid: pod_uid.into(),
            pod_name: pod_name.into(),
            hostname: hostname.into(),
            host_network: false,
            netns: None,
            host_ipc: false,
            host_pid: false,
            share_process_namespace: false,
            cgroup_parent: PathBuf::from("/outpost"),
            sysctls: BTreeMap::new(),
            pids_max: None,
            termination_grace_period_seconds: None,
            userns: None,
        }
    }

    /// The pod cgroup, relative to every hierarchy's root.
    pub fn pod_cgroup(&self) -> PathBuf {
        self.cgroup_parent.join(&self.pod_uid)
    }
}

/// A running sandbox. The agent sets up networking (CNI) in `netns` between
/// `create_sandbox` and the first `start_container`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub pod_uid: String,
    pub supervisor_pid: i32,
    /// The pause process, only for a pod that shares one pid namespace (it holds it); other
    /// sandboxes have no process. Written as 0 when absent, which older agents parse.
    #[serde(with = "pid_or_zero")]
    pub pause_pid: Option<i32>,
    /// The pod's network namespace (a pinned file); `None` with `host_network`.
    pub netns: Option<PathBuf>,
    /// The pod cgroup path (relative to each hierarchy's root).
    pub cgroup: PathBuf,
    pub pod_dir: PathBuf,
    pub created_at: SystemTime,
}

mod pid_or_zero {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pid: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(pid.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        Ok(Some(i32::deserialize(d)?).filter(|&pid| pid > 0))
    }
}

/// Container log rotation, done by the supervisor as it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    /// Rotate when the current file would grow past this many bytes.
    pub max_size: u64,
    /// Files kept per instance, the current one included (kubelet's containerLogMaxFiles).
    pub max_files: u32,
}

impl Default for LogOptions {
    /// The kubelet's defaults: 10 MiB × 5 files.
    fn default() -> Self {
        Self { max_size: 10 << 20, max_files: 5 }
    }
}

/// Start (create + start) one container instance in a sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: InstanceId,
    /// The container's OCI spec. The supervisor overrides the root path (its overlay), the
    /// net/ipc/uts/pid namespaces (the sandbox's), the cgroups path, the hostname and the
    /// terminal flag; everything else is used as given.
    pub spec: Spec,
    /// Unpacked image layers, bottom to top, with overlay-style whiteouts.
    pub lower_dirs: Vec<PathBuf>,
    pub log: LogOptions,
    /// The container's `stdin`, `stdinOnce` and `tty`: what attach can write to.
    #[serde(default)]
    pub stdio: ContainerStdio,
}

/// A container whose stdin stays open for `kubectl attach -i` (the pod's `stdin: true`): the
/// supervisor holds the write end of its stdin pipe, or with `tty` the master of its terminal
/// (then stdout and stderr are the terminal too, logged as stdout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStdio {
    pub stdin: bool,
    /// Close stdin when the first attach session ends (containerd's `StdinOnce`).
    pub stdin_once: bool,
    pub tty: bool,
}

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128 + signal when killed by a signal (what Kubernetes reports).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The kernel OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
    pub finished_at: SystemTime,
    /// Not an exit anyone saw: the supervisor died while the container ran, so no parent
    /// can learn how it ends (the kubelet's `ContainerStatusUnknown`); the sandbox's removal
    /// kills what is left of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl ExitInfo {
    /// What the kubelet reports for a container that could not be located: exit code 137.
    pub fn lost(at: SystemTime) -> Self {
        Self { exit_code: 137, signal: None, oom_killed: false, finished_at: at, lost: true }
    }
}

/// One container instance as the supervisor recorded it (durably, in the pod directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: InstanceId,
    /// The container's init process, in the host pid namespace.
    pub pid: i32,
    pub started_at: SystemTime,
    /// The CRI-format log file of this instance.
    pub log_path: PathBuf,
    /// `None` while running.
    pub exit: Option<ExitInfo>,
}

/// Run a command in a running container (exec probes, exec hooks, `outpost exec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: InstanceId,
    pub argv: Vec<String>,
    /// The process is killed (SIGKILL) when it runs longer; the result says `timed_out`.
    pub timeout: Duration,
    /// Bytes kept of stdout and of stderr each; the rest is read and dropped.
    pub output_limit: usize,
}

/// Run a command in a running container with its output streamed (`outpost exec`): the
/// supervisor hands the process's pipes to the client, which reads them directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStreamRequest {
    pub id: InstanceId,
    pub argv: Vec<String>,
    /// Also pass a pipe to the process's stdin (`kubectl exec -i`); without, stdin is
    /// /dev/null.
    pub stdin: bool,
    /// The process is killed (SIGKILL) when it runs longer; `None`: no limit, like kubectl.
    pub timeout: Option<Duration>,
    /// Run it on a new terminal (`kubectl exec -t`): the pty's master comes back instead of
    /// the pipes; stdout and stderr are both the terminal.
    #[serde(default)]
    pub tty: bool,
}

/// How a streamed exec ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// The exit code, or 128 + signal; `None` when it timed out.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

/// The outcome of an exec. Output is decoded as UTF-8, lossily.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// The exit code, or 128 + signal; `None` when it timed out.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond `output_limit` was dropped.
    pub truncated: bool,
}

/// Everything known about one pod: what `list` (adoption) and `status` return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimePod {
    pub pod_uid: String,
    /// `None` when the supervisor died before it reported the sandbox.
    pub sandbox: Option<SandboxInfo>,
    /// The supervisor process is alive and connected. When false, `containers` comes from the
    /// durable records and exits after the supervisor's death are unknown: remove the sandbox.
    pub supervisor_alive: bool,
    pub sandbox_running: bool,
    /// Every instance not yet removed, sorted by name then attempt.
    pub containers: Vec<ContainerStatus>,
    /// From the sandbox's config (`None` from supervisors of older versions).
    #[serde(default)]
    pub termination_grace_period_seconds: Option<u64>,
    /// From the sandbox's config: the pod's user namespace (a restarted agent keeps its ids
    /// held even when the state database lost them).
    #[serde(default)]
    pub userns: Option<PodUserns>,
}

/// Why a sandbox is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxDeath {
    /// The pause process exited; the supervisor killed the app containers.
    PauseExited { exit_code: i32 },
    /// The supervisor process died (or closed its socket) without being asked to.
    SupervisorLost,
}

/// Facts pushed by the supervisors, in order per pod. Each supervisor pushes them over its
/// socket as they happen; nothing is polled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    ContainerStarted { pod_uid: String, status: ContainerStatus },
    ContainerExited { pod_uid: String, id: InstanceId, exit: ExitInfo },
    SandboxDied { pod_uid: String, cause: SandboxDeath },
}

impl Event {
    pub fn pod_uid(&self) -> &str {
        match self {
            Event::ContainerStarted { pod_uid, .. }
            | Event::ContainerExited { pod_uid, .. }
            | Event::SandboxDied { pod_uid, .. } => pod_uid,
        }
    }
}
