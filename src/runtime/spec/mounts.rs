//! Mounts: containerd's standard filesystems, the pod's volumes (`volumeMounts` with
//! `subPath` and `mountPropagation`), `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
//! `/dev/shm` and the termination log.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::VolumeMount;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
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
    for vm in container.volume_mounts.iter().flatten() {
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
            Ok(Some(sub)) => safe_sub_path(volume_dir, &sub),
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
            vm.read_only.unwrap_or(false),
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

/// Resolves `sub` under `volume` like the kubelet's `PrepareSafeSubpath`: symlinks are
/// followed only if the result stays inside the volume; a missing path is created as a
/// directory with the volume's mode; the final path is re-opened component by component with
/// `O_NOFOLLOW` from the volume root so nothing resolves outside it.
///
/// A symlink swapped in between this check and the runtime's bind mount is not caught (the
/// kubelet closes that gap by bind-mounting the opened fd).
pub fn safe_sub_path(volume: &Path, sub: &Path) -> Result<PathBuf, SubPathProblem> {
    let root = volume
        .canonicalize()
        .map_err(|e| SubPathProblem::Io { path: volume.to_path_buf(), source: e })?;
    let target = root.join(sub);
    if std::fs::symlink_metadata(&target).is_err() {
        make_dirs_inside(&root, sub)?;
    }
    let resolved = target
        .canonicalize()
        .map_err(|e| SubPathProblem::Io { path: target.clone(), source: e })?;
    let Ok(rel) = resolved.strip_prefix(&root) else {
        return Err(SubPathProblem::Escapes { sub_path: sub.to_path_buf(), resolved });
    };
    open_no_follow(&root, rel)?;
    Ok(resolved)
}

fn open_dir(path: &Path) -> Result<OwnedFd, SubPathProblem> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SubPathProblem::Io { path: path.to_path_buf(), source: e.into() })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn open_no_follow(root: &Path, rel: &Path) -> Result<(), SubPathProblem> {
    let mut dir = open_dir(root)?;
    let mut so_far = root.to_path_buf();
    for c in rel.components() {
        so_far.push(c);
        let fd = openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir.as_fd())),
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SubPathProblem::Io { path: so_far.clone(), source: e.into() })?;
        // SAFETY: `openat` returned a fresh descriptor that nothing else owns.
        let file =
            std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        // std's metadata, not nix's fstat: on 32-bit glibc (armv7) that one fails with
        // EOVERFLOW for files of 2 GiB or more.
        let meta =
            file.metadata().map_err(|e| SubPathProblem::Io { path: so_far.clone(), source: e })?;
        dir = file.into();
        if meta.file_type().is_symlink() {
            return Err(SubPathProblem::Escapes { sub_path: rel.to_path_buf(), resolved: so_far });
        }
    }
    Ok(())
}

/// Creates the missing components of `sub` under `root`, refusing to pass through a symlink
/// that leaves the volume.
fn make_dirs_inside(root: &Path, sub: &Path) -> Result<(), SubPathProblem> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mode = std::fs::metadata(root)
        .map_err(|e| SubPathProblem::Io { path: root.to_path_buf(), source: e })?
        .permissions()
        .mode();
    let mut current = root.to_path_buf();
    for c in sub.components() {
        current.push(c);
        if std::fs::symlink_metadata(&current).is_ok() {
            let resolved = current
                .canonicalize()
                .map_err(|e| SubPathProblem::Io { path: current.clone(), source: e })?;
            if !resolved.starts_with(root) {
                return Err(SubPathProblem::Escapes { sub_path: sub.to_path_buf(), resolved });
            }
            current = resolved;
            continue;
        }
        std::fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&current)
            .map_err(|e| SubPathProblem::Io { path: current.clone(), source: e })?;
        // The umask must not narrow the volume's permissions (the kubelet chmods too).
        std::fs::set_permissions(&current, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| SubPathProblem::Io { path: current.clone(), source: e })?;
    }
    Ok(())
}
