//! `seccompProfile` → `linux.seccomp`: the kubelet's choice of profile (container over pod,
//! `--seccomp-default` when neither says), containerd's rules for privileged containers and
//! `RuntimeDefault` ([`default_profile`]), and `Localhost` profiles read from
//! `<state>/seccomp/`. [`Filter`] compiles a profile to BPF for processes started without
//! libcontainer (probes, hooks, `outpost exec`).

mod bpf;
mod cache;
mod default;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use oci_spec::runtime::{Capability, LinuxSeccomp, LinuxSeccompAction};

pub use bpf::{Filter, FilterError};
pub use cache::{compiled, default_for_default_caps, warm_default};
pub use default::{default_profile, Cpu};

/// The node's seccomp configuration (the kubelet's `--seccomp-default` and profile root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompNode {
    /// Pods that name no profile get `RuntimeDefault` (outpost's default) instead of
    /// `Unconfined` (the kubelet's).
    pub default_runtime_default: bool,
    /// Where `Localhost` profiles live: `<state>/seccomp`.
    pub profile_root: PathBuf,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl SeccompNode {
    pub fn new(default_runtime_default: bool, state_dir: &Path) -> Self {
        Self {
            default_runtime_default,
            profile_root: state_dir.join("seccomp"),
            kernel: kernel_version(),
        }
    }
}

/// (major, minor) of the running kernel; (0, 0) when unknown (the pre-4.8 rules then apply).
pub fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Why a container's profile cannot be used (the container fails with CreateContainerError).
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot load seccomp profile {path:?}: {problem}")]
    Load { path: PathBuf, problem: String },
    #[error("seccomp profile type Localhost needs localhostProfile (a file under {root:?})")]
    NoLocalhostProfile { root: PathBuf },
    #[error("unknown seccomp profile type {0:?} (RuntimeDefault, Localhost or Unconfined)")]
    UnknownType(String),
}

/// The kubelet's rule: the container's profile, else the pod's, else the node default.
fn chosen<'a>(pod: &'a Pod, container: &'a Container) -> Option<&'a SeccompProfile> {
    container.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()).or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.seccomp_profile.as_ref())
    })
}

/// The container's `linux.seccomp`, None for no filter. Privileged containers never get one
/// (containerd's CRI; Kubernetes documents them as always Unconfined).
pub fn container_seccomp(
    pod: &Pod,
    container: &Container,
    privileged: bool,
    bounding: &HashSet<Capability>,
    node: &SeccompNode,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    if privileged {
        return Ok(None);
    }
    let runtime_default = || default_profile(bounding, Cpu::native(), node.kernel);
    let Some(profile) = chosen(pod, container) else {
        return Ok(node.default_runtime_default.then(runtime_default));
    };
    match profile.type_.as_str() {
        "Unconfined" => Ok(None),
        "RuntimeDefault" => Ok(Some(runtime_default())),
        "Localhost" => {
            let name = profile.localhost_profile.as_deref().filter(|p| !p.is_empty());
            let name = name.ok_or_else(|| SeccompError::NoLocalhostProfile {
                root: node.profile_root.clone(),
            })?;
            load_localhost(&node.profile_root, name).map(Some)
        }
        other => Err(SeccompError::UnknownType(other.to_string())),
    }
}

/// Reads `root/name`, an OCI `linux.seccomp` object in JSON (what containerd and podman
/// accept). Refuses a path that resolves outside `root` (symlinks included), unknown fields
/// (a Docker-format profile would lose its `includes`/`excludes` rules silently) and
/// `SCMP_ACT_NOTIFY` (outpost has no seccomp agent), and compiles the profile once so that
/// a bad syscall name, action or argument shows here, naming the file.
pub fn load_localhost(root: &Path, name: &str) -> Result<LinuxSeccomp, SeccompError> {
    let path = root.join(name);
    let fail = |problem: String| SeccompError::Load { path: path.clone(), problem };
    let real = path.canonicalize().map_err(|e| fail(e.to_string()))?;
    let real_root = root.canonicalize().map_err(|e| fail(format!("{}: {e}", root.display())))?;
    if !real.starts_with(&real_root) || real == real_root {
        return Err(fail(format!(
            "resolves to {}, outside the profile directory {}",
            real.display(),
            real_root.display()
        )));
    }
    let bytes = std::fs::read(&real).map_err(|e| fail(e.to_string()))?;
    let mut unknown = Vec::new();
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let profile: LinuxSeccomp = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
        .map_err(|e| fail(format!("not an OCI seccomp profile (linux.seccomp) in JSON: {e}")))?;
    if !unknown.is_empty() {
        return Err(fail(format!(
            "unknown fields {} (the file must be the OCI runtime spec's linux.seccomp object)",
            unknown.join(", ")
        )));
    }
    let notify = profile.default_action() == LinuxSeccompAction::ScmpActNotify
        || profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    if notify || profile.listener_path().is_some() {
        return Err(fail(
            "SCMP_ACT_NOTIFY is not supported (outpost runs no seccomp agent)".into(),
        ));
    }
    compiled(&profile).map_err(|e| fail(e.to_string()))?;
    Ok(profile)
}

#[cfg(test)]
mod tests;
