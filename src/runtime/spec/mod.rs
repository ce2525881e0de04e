//! Kubernetes container → OCI runtime [`Spec`]: pure except for `Localhost` seccomp
//! profiles, read from the state directory; `subPath`s are handed to a [`SubPathBinder`]
//! (the volume module's, which opens and binds them safely).
//!
//! The runtime fills in what depends on the running sandbox: `root.path`, the namespaces to
//! join, `linux.cgroupsPath` and stdio; and resolves the user against the rootfs with
//! [`ContainerSpec::resolve_user`]. Everything else the kubelet and containerd would put in
//! the spec is here, each rule in its own file.

mod command;
pub mod downward;
mod env;
mod expand;
mod mounts;
mod nonroot;
mod oom_score;
mod resources;
pub mod seccomp;
mod security;
mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::Signal;
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{Linux, Process, Root, Spec};

use crate::engine::QosClass;
use crate::manifest::DesiredState;

pub use command::process_args;
pub use downward::{Allocatable, DownwardError, PodFacts};
pub use env::{is_env_var_name, merge_env, EnvList, DEFAULT_PATH};
pub use expand::expand;
pub use mounts::{default_mounts, SubPathBinder, SubPathRequest};
pub use nonroot::{verify_run_as_non_root, NonRootProblem};
pub use oom_score::oom_score_adj;
// The agent still names the quantity type through here.
use crate::quantity::QuantityError;
pub use resources::{
    disable_swap_v2, linux_resources, milli_cpu_to_quota, milli_cpu_to_shares, QUOTA_PERIOD,
    SWAP_MAX_FILE,
};
pub use security::{Security, ALL_CAPS, DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS};
pub use user::{Id, ResolvedUser, UserRequest};

pub type Result<T, E = SpecError> = std::result::Result<T, E>;

/// Files the runtime prepared for the pod (host paths), bind-mounted into the container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    /// The pod's shared `/dev/shm` (a 64 MiB tmpfs); None: a private tmpfs per container.
    pub shm: Option<PathBuf>,
    /// This container's termination message file, mounted at `terminationMessagePath`.
    pub termination_log: Option<PathBuf>,
}

/// What the device offers (the kubelet's node object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The device's hostname: `spec.nodeName`, and the pod hostname under `hostNetwork`.
    pub name: String,
    pub host_ips: Vec<String>,
    /// Defaults for limits a container leaves unset (downward API).
    pub allocatable: Allocatable,
    /// Total RAM in bytes (oom_score_adj of Burstable containers).
    pub memory_capacity: i64,
    /// The default profile and where `Localhost` profiles are.
    pub seccomp: seccomp::SeccompNode,
}

/// Everything [`container_spec`] needs.
#[derive(Clone, Copy, Debug)]
pub struct ContainerInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// An init container (sidecars included).
    pub init: bool,
    pub image: &'a ImageConfig,
    /// ConfigMaps and Secrets for `env`/`envFrom`.
    pub desired: &'a DesiredState,
    /// Volume name → prepared host directory (from `crate::volume`).
    pub volumes: &'a BTreeMap<String, PathBuf>,
    pub files: &'a PodFiles,
    /// The pod's IPs, primary first; empty until the network is set up.
    pub pod_ips: &'a [String],
    pub node: &'a NodeInfo,
    /// Makes each `subPath` mountable without a check-then-use race.
    pub sub_paths: &'a dyn SubPathBinder,
}

/// The spec and what the runtime needs beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    pub spec: Spec,
    /// The signal that asks the container to stop: `lifecycle.stopSignal`, else the image's
    /// `StopSignal`, else SIGTERM.
    pub stop_signal: Signal,
    /// Who to run as; [`ContainerSpec::resolve_user`] applies it once the rootfs exists.
    pub user: UserRequest,
    pub oom_score_adj: i32,
    pub qos: QosClass,
    /// Privileged: the runtime should also pass the host's devices.
    pub privileged: bool,
    /// Non-fatal problems to report as events (never carry secret values).
    pub warnings: Vec<SpecWarning>,
}

impl ContainerSpec {
    /// Sets `process.user` from the container's `/etc/passwd` and `/etc/group` (None when
    /// absent), and `HOME` from the passwd entry when the environment has none.
    pub fn resolve_user(&mut self, passwd: Option<&str>, group: Option<&str>) -> Result<()> {
        let resolved = self.user.resolve(passwd, group)?;
        if let Some(process) = self.spec.process_mut() {
            process.set_user(resolved.user);
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={}", resolved.home));
                process.set_env(Some(env));
            }
        }
        Ok(())
    }
}

/// A problem the container still starts with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecWarning {
    /// `envFrom` keys that are not valid variable names were skipped (kubelet event
    /// `InvalidEnvironmentVariableNames`).
    #[error("Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.", keys.join(", "))]
    InvalidEnvFromKeys { kind: &'static str, namespace: String, name: String, keys: Vec<String> },
    /// A capability name Linux does not know was ignored.
    #[error("container {container:?}: unknown capability {capability:?} ignored")]
    UnknownCapability { container: String, capability: String },
    /// The image's stop signal is not a signal; SIGTERM is used.
    #[error("container {container:?}: unknown stop signal {signal:?}, using SIGTERM")]
    StopSignal { container: String, signal: String },
}

/// Why a container cannot be created. Messages are the kubelet's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the pod nor the image says what to run.
    #[error("no command specified")]
    NoCommand { container: String },
    /// A ConfigMap the container's environment needs does not exist.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound { container: String, name: String },
    /// A ConfigMap exists but lacks the key an env var refers to.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound { container: String, namespace: String, name: String, key: String },
    /// A Secret the container's environment needs does not exist.
    #[error("secret {name:?} not found")]
    SecretNotFound { container: String, name: String },
    /// A Secret exists but lacks the key an env var refers to.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound { container: String, namespace: String, name: String, key: String },
    /// An env var's `fieldRef`/`resourceFieldRef` cannot be resolved.
    #[error("{source}")]
    Downward { container: String, var: String, source: DownwardError },
    /// A resource quantity of the container does not parse.
    #[error("container {container:?}: {source}")]
    Quantity { container: String, source: QuantityError },
    /// A volumeMount names a volume the pod does not have (or that was not prepared).
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    UnknownVolume { container: String, volume: String },
    /// A `subPath` is unsafe or cannot be created; details go to the log, not to the user.
    #[error("failed to prepare subPath for volumeMount {mount:?} of container {container:?}")]
    SubPath { container: String, mount: String, problem: SubPathProblem },
    /// `mountPropagation: Bidirectional` on a container that is not privileged.
    #[error("Bidirectional mount propagation is available only to privileged containers")]
    BidirectionalNotPrivileged { container: String, mount: String },
    /// A `mountPropagation` value Kubernetes does not define.
    #[error("invalid MountPropagation mode: {value:?}")]
    Propagation { container: String, value: String },
    /// The image's (or runAsUser's) user name is not in the container's `/etc/passwd`.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UserNotFound { user: String },
    /// The group name is not in the container's `/etc/group`.
    #[error("unable to find group {group}: no matching entries in group file")]
    GroupNotFound { group: String },
    /// `runAsNonRoot` and the container would (or might) run as root; `pod` is the kubelet's
    /// `format.Pod`.
    #[error("{problem} (pod: {pod:?}, container: {container})")]
    RunAsNonRoot { pod: String, container: String, problem: NonRootProblem },
    /// The seccomp profile cannot be used (containerd's message for a Localhost file).
    #[error("failed to generate seccomp spec opts: {source}")]
    Seccomp { container: String, source: seccomp::SeccompError },
}

/// Why a `subPath` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubPathProblem {
    /// `..` components or an absolute path.
    #[error("subPath {0:?} must not contain '..' or be absolute")]
    Backsteps(String),
    /// `subPathExpr` refers to variables the container does not define.
    #[error("missing value for {0}")]
    MissingVariables(String),
    /// A symlink leads outside the volume.
    #[error("subPath {sub_path:?} resolves to {resolved:?}, outside the volume")]
    Escapes { sub_path: PathBuf, resolved: PathBuf },
    /// The path cannot be inspected or created.
    #[error("{path:?}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl SpecError {
    /// The container waiting reason the kubelet reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::NoCommand { .. } => "CreateContainerError",
            SpecError::UserNotFound { .. }
            | SpecError::GroupNotFound { .. }
            | SpecError::Seccomp { .. } => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// The pod's hostname as the kubelet computes it: the node's under `hostNetwork`, else
/// `spec.hostname` or the pod name, cut to 63 characters without a trailing `-` or `.`.
pub fn pod_hostname(pod: &Pod, node_name: &str) -> String {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return node_name.to_string();
    }
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() <= 63 {
        return name;
    }
    name[..63].trim_end_matches(['-', '.']).to_string()
}

fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse().ok()
}

/// Builds the OCI spec of one container. See the module documentation for what the runtime
/// adds.
pub fn container_spec(input: &ContainerInput<'_>) -> Result<ContainerSpec> {
    let container = input.container;
    let cname = || container.name.clone();
    let quantity = |source| SpecError::Quantity { container: cname(), source };
    let mut warnings = Vec::new();

    let kube_env = env::kubelet_env(input, &mut warnings)?;
    // The kubelet's order: run options (env) first, then runAsNonRoot, then the command.
    nonroot::verify_run_as_non_root(input.pod, container, input.image.user().as_deref())?;
    let args = command::process_args(container, input.image, &kube_env)?;
    let hostname = pod_hostname(input.pod, &input.node.name);
    let mut process_env =
        merge_env(vec![DEFAULT_PATH.to_string()], &[format!("HOSTNAME={hostname}")]);
    let mut overrides = input.image.env().clone().unwrap_or_default();
    overrides.extend(kube_env.to_strings());
    process_env = merge_env(process_env, &overrides);

    let security = security::security(container, &mut warnings);
    let (mounts, rootfs_propagation) = mounts::mounts(input, &security, &kube_env)?;
    let qos = QosClass::of(input.pod).map_err(quantity)?;
    let oom_score_adj =
        oom_score_adj(input.pod, container, input.node.memory_capacity).map_err(quantity)?;
    let mut resources = linux_resources(container).map_err(quantity)?;
    resources.set_devices(Some(security.device_cgroup()));

    let user = UserRequest::new(input.pod, container, input.image.user().as_deref());
    let placeholder = user.numeric().unwrap_or_else(|| {
        let uid = match user.user {
            Id::Num(n) => n,
            Id::Name(_) => 0,
        };
        let gid = match user.group {
            Some(Id::Num(n)) => n,
            _ => 0,
        };
        let mut u = oci_spec::runtime::User::default();
        u.set_uid(uid);
        u.set_gid(gid);
        u
    });

    let cwd = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| input.image.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let mut process = Process::default();
    process.set_terminal(Some(container.tty == Some(true)));
    process.set_args(Some(args));
    process.set_env(Some(process_env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(placeholder);
    process.set_capabilities(Some(security.linux_capabilities()));
    // Unset rather than false: libcontainer loads seccomp after dropping capabilities when
    // the field is present at all, and then needs no_new_privs (EACCES without it).
    process.set_no_new_privileges(security.no_new_privileges.then_some(true));
    process.set_oom_score_adj(Some(oom_score_adj));
    // No rlimits: the runtime's defaults apply (raising them fails on hosts like these).
    process.set_rlimits(None);

    let mut root = Root::default();
    root.set_readonly(Some(security.read_only_root));

    let mut linux = Linux::default();
    linux.set_resources(Some(resources));
    linux.set_masked_paths(Some(security.masked_paths()));
    linux.set_readonly_paths(Some(security.readonly_paths()));
    linux.set_rootfs_propagation(rootfs_propagation);
    linux.set_namespaces(None);
    let seccomp = seccomp::container_seccomp(
        input.pod,
        container,
        security.privileged,
        &security.capabilities,
        &input.node.seccomp,
    )
    .map_err(|source| SpecError::Seccomp { container: cname(), source })?;
    linux.set_seccomp(seccomp);

    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(None);
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);

    let (stop_signal, signal_name) = match container
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.clone())
        .or_else(|| input.image.stop_signal().clone())
    {
        None => (Signal::SIGTERM, None),
        Some(name) => match parse_signal(&name) {
            Some(sig) => (sig, None),
            None => (Signal::SIGTERM, Some(name)),
        },
    };
    if let Some(signal) = signal_name {
        warnings.push(SpecWarning::StopSignal { container: cname(), signal });
    }
    for w in &warnings {
        let pod = input.pod.metadata.name.as_deref().unwrap_or_default();
        log::warn!("pod {pod} container {}: {w}", container.name);
    }
    Ok(ContainerSpec {
        spec,
        stop_signal,
        user,
        oom_score_adj,
        qos,
        privileged: security.privileged,
        warnings,
    })
}
