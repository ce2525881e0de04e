//! Mounts: containerd's standard filesystems, the pod's volumes (`volumeMounts` with
//! `subPath` and `mountPropagation`), `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
//! `/dev/shm` and the termination log.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, VolumeMount};
use oci_spec::runtime::Mount;

use super::env::EnvList;
use super::expand::expand;
use super::security::Security;
use super::{ContainerInput, SpecError, SubPathProblem};

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// containerd's default mounts (without `/run`, which CRI removes), plus the read-only cgroup
/// filesystem; privileged containers get `/sys` and the cgroups writable.
pub fn default_mounts(privileged: bool) -> Vec<Mount> {
    let rw = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", rw]),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", rw]),
    ]
}

/// One `subPath` to make mountable: `sub` below the volume's host directory.
#[derive(Clone, Copy, Debug)]
pub struct SubPathRequest<'a> {
    pub volume: &'a str,
    pub volume_dir: &'a Path,
    /// Relative, without `..` (checked before the binder sees it).
    pub sub: &'a Path,
    pub container: &'a str,
    /// The volumeMount's index in the container (the kubelet's bind layout).
    pub index: usize,
}

/// Turns a subPath into a host path the runtime can mount: one that names what was checked,
/// whatever a container does to the volume meanwhile (see `crate::volume::subpath`).
pub trait SubPathBinder: std::fmt::Debug {
    fn bind(&self, request: &SubPathRequest<'_>) -> Result<PathBuf, SubPathProblem>;
}

/// Volumes the kubelet always mounts read-only: their files are the agent's to write, and a
/// container that could replace `..data` with a symlink would steer the agent's next update.
fn always_read_only(pod: &Pod, volume: &str) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.name == volume
            && (v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some())
    })
}

/// A bind mount as containerd writes CRI mounts: `rbind`, the propagation, `ro` or `rw`.
fn bind(dest: &Path, source: &Path, propagation: &str, readonly: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    let ro = if readonly { "ro" } else { "rw" };
    m.set_options(Some(vec!["rbind".to_string(), propagation.to_string(), ro.to_string()]));
    m
}

/// The container's mounts and the rootfs propagation they need (`rslave`/`rshared` when a
/// volume propagates from or to the host).
pub fn mounts(
    input: &ContainerInput<'_>,
    security: &Security,
    env: &EnvList,
) -> Result<(Vec<Mount>, Option<String>), SpecError> {
    let container = input.container;
    let mut extra: Vec<Mount> = Vec::new();
    let mut rootfs_propagation: Option<&str> = None;
    for (index, vm) in container.volume_mounts.iter().flatten().enumerate() {
        let Some(volume_dir) = input.volumes.get(&vm.name) else {
            return Err(SpecError::UnknownVolume {
                container: container.name.clone(),
                volume: vm.name.clone(),
            });
        };
        let propagation = match vm.mount_propagation.as_deref() {
            None | Some("None") => "rprivate",
            Some("HostToContainer") => {
                if rootfs_propagation != Some("rshared") {
                    rootfs_propagation = Some("rslave");
                }
                "rslave"
            }
            Some("Bidirectional") => {
                if !security.privileged {
                    return Err(SpecError::BidirectionalNotPrivileged {
                        container: container.name.clone(),
                        mount: vm.mount_path.clone(),
                    });
                }
                rootfs_propagation = Some("rshared");
                "rshared"
            }
            Some(other) => {
                return Err(SpecError::Propagation {
                    container: container.name.clone(),
                    value: other.to_string(),
                })
            }
        };
        let source = match sub_path(vm, env) {
            Ok(None) => Ok(volume_dir.clone()),
            Ok(Some(sub)) => input.sub_paths.bind(&SubPathRequest {
                volume: &vm.name,
                volume_dir,
                sub: &sub,
                container: &container.name,
                index,
            }),
            Err(e) => Err(e),
        }
        .map_err(|problem| SpecError::SubPath {
            container: container.name.clone(),
            mount: vm.name.clone(),
            problem,
        })?;
        extra.push(bind(
            Path::new(&vm.mount_path),
            &source,
            propagation,
            vm.read_only.unwrap_or(false) || always_read_only(input.pod, &vm.name),
        ));
    }

    let user_dests: HashSet<PathBuf> = extra.iter().map(|m| clean(m.destination())).collect();
    let files = input.files;
    let ro = security.read_only_root;
    let candidates = [
        ("/etc/hosts", files.hosts.as_ref(), ro),
        ("/etc/hostname", files.hostname.as_ref(), ro),
        ("/etc/resolv.conf", files.resolv_conf.as_ref(), ro),
        ("/dev/shm", files.shm.as_ref(), false),
    ];
    for (dest, source, readonly) in candidates {
        if let Some(source) = source {
            if !user_dests.contains(Path::new(dest)) {
                extra.push(bind(Path::new(dest), source, "rprivate", readonly));
            }
        }
    }
    if let Some(source) = files.termination_log.as_ref() {
        // The API default, should the pod not have been defaulted.
        let path = container.termination_message_path.as_deref().unwrap_or("/dev/termination-log");
        if !path.is_empty() {
            extra.push(bind(Path::new(path), source, "rprivate", false));
        }
    }

    // Parents before children; the default mounts a CRI mount replaces are dropped.
    extra.sort_by_key(|m| m.destination().components().count());
    let overridden: HashSet<PathBuf> = extra.iter().map(|m| clean(m.destination())).collect();
    let dev_replaced = overridden.contains(Path::new("/dev"));
    let mut all: Vec<Mount> = default_mounts(security.privileged)
        .into_iter()
        .filter(|m| {
            let d = clean(m.destination());
            !(overridden.contains(&d) || dev_replaced && d.starts_with("/dev/"))
        })
        .collect();
    all.extend(extra);
    Ok((all, rootfs_propagation.map(str::to_string)))
}

fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// `subPath`, or `subPathExpr` expanded with the container's variables (a missing or empty
/// variable is an error, as in the kubelet); `..` and absolute paths are refused.
fn sub_path(vm: &VolumeMount, env: &EnvList) -> Result<Option<PathBuf>, SubPathProblem> {
    let raw = if let Some(expr) = vm.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let mut missing = Vec::new();
        let value = expand(expr, |k| match env.get(k) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => {
                missing.push(k.to_string());
                Some(String::new())
            }
        });
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(SubPathProblem::MissingVariables(missing.join(", ")));
        }
        value
    } else {
        match vm.sub_path.as_deref() {
            None | Some("") => return Ok(None),
            Some(s) => s.to_string(),
        }
    };
    let path = PathBuf::from(&raw);
    if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(SubPathProblem::Backsteps(raw));
    }
    Ok(Some(path))
}
