//! Pod volumes: emptyDir, hostPath, configMap, secret, downwardAPI, projected.
//!
//! [`prepare`] creates each volume's host directory under the pod's volumes directory and
//! returns volume name → host path for `runtime::spec`; [`update`] re-renders the
//! ConfigMap/Secret/downward API volumes when their sources change (the kubelet's live
//! update); [`teardown`] unmounts and removes everything. Memory-backed volumes (emptyDir
//! `medium: Memory`, secrets, downwardAPI, projected) are tmpfs mounts made through a
//! [`Mounter`], so everything but the mount itself is testable without root.

pub mod atomic_writer;
mod host_path;
mod mounter;
mod ownership;
mod payload;
pub mod subpath;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::manifest::DesiredState;
use crate::quantity::{Quantity, QuantityError};
use crate::runtime::spec::{Allocatable, DownwardError};

pub use atomic_writer::{FileProjection, Payload, WriteError, DATA_DIR};
pub use mounter::{FakeMounter, Mounter, SystemMounter};

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Why a volume cannot be set up. Messages follow the kubelet's `MountVolume.SetUp` errors.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A configMap volume names a ConfigMap that does not exist and is not optional.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound { volume: String, name: String },
    /// `items` names a key the ConfigMap lacks.
    #[error("configmap references non-existent config key: {key}")]
    ConfigMapKeyNotFound { volume: String, key: String },
    /// A secret volume names a Secret that does not exist and is not optional.
    #[error("secret {name:?} not found")]
    SecretNotFound { volume: String, name: String },
    /// `items` names a key the Secret lacks.
    #[error("references non-existent secret key: {key}")]
    SecretKeyNotFound { volume: String, key: String },
    /// A hostPath is not of the declared `type`.
    #[error("hostPath type check failed: {} is not {what}", path.display())]
    HostPathType { volume: String, path: PathBuf, what: &'static str },
    /// A hostPath `type` Kubernetes does not define.
    #[error("{typ} is an invalid volume type")]
    HostPathInvalidType { volume: String, typ: String },
    /// A hostPath with `..` in it.
    #[error("invalid HostPath `{}`: must not contain '..'", path.display())]
    HostPathBacksteps { volume: String, path: PathBuf },
    /// A downward API item cannot be rendered.
    #[error("{source}")]
    Downward { volume: String, source: DownwardError },
    /// A `resourceFieldRef.containerName` that is not a container of the pod.
    #[error("container {container:?} not found in the pod")]
    ContainerNotFound { volume: String, container: String },
    /// An emptyDir `sizeLimit` that does not parse.
    #[error("sizeLimit of volume {volume:?}: {source}")]
    Quantity { volume: String, source: QuantityError },
    /// A projected source that needs a cluster (service account tokens, trust bundles, pod
    /// certificates).
    #[error("projected volume {volume:?}: {kind} sources need a cluster and are not supported")]
    Unsupported { volume: String, kind: &'static str },
    /// A volume kind outside emptyDir, hostPath, configMap, secret, downwardAPI, projected.
    #[error("volume {volume:?}: this volume type is not supported on this device")]
    UnsupportedType { volume: String },
    /// Writing the files failed.
    #[error("{source}")]
    Write { volume: String, source: WriteError },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io { volume: String, op: &'static str, path: PathBuf, source: io::Error },
}

impl VolumeError {
    /// The volume this error is about ("" for pod-wide errors).
    pub fn volume(&self) -> &str {
        use VolumeError::*;
        match self {
            ConfigMapNotFound { volume, .. }
            | ConfigMapKeyNotFound { volume, .. }
            | SecretNotFound { volume, .. }
            | SecretKeyNotFound { volume, .. }
            | HostPathType { volume, .. }
            | HostPathInvalidType { volume, .. }
            | HostPathBacksteps { volume, .. }
            | Downward { volume, .. }
            | ContainerNotFound { volume, .. }
            | Quantity { volume, .. }
            | Unsupported { volume, .. }
            | UnsupportedType { volume }
            | Write { volume, .. }
            | Io { volume, .. } => volume,
        }
    }

    /// The kubelet's `FailedMount` event text.
    pub fn event_message(&self) -> String {
        format!("MountVolume.SetUp failed for volume {:?} : {self}", self.volume())
    }
}

/// What preparing a pod's volumes needs.
#[derive(Clone, Copy)]
pub struct VolumeContext<'a> {
    pub pod: &'a Pod,
    pub desired: &'a DesiredState,
    /// `<state>/pods/<uid>/volumes`.
    pub pod_dir: &'a Path,
    /// Defaults for resourceFieldRef and the size of memory-backed volumes.
    pub allocatable: &'a Allocatable,
    pub mounter: &'a dyn Mounter,
    /// Names the AtomicWriter's timestamped directories.
    pub now: SystemTime,
}

/// The kubelet's directory name per plugin, so the layout reads like a kubelet's.
fn plugin_dir(v: &Volume) -> Option<(&'static str, bool)> {
    let memory = v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() == Some("Memory"));
    if v.empty_dir.is_some() {
        Some(("kubernetes.io~empty-dir", memory))
    } else if v.config_map.is_some() {
        Some(("kubernetes.io~configmap", false))
    } else if v.secret.is_some() {
        Some(("kubernetes.io~secret", true))
    } else if v.downward_api.is_some() {
        Some(("kubernetes.io~downward-api", true))
    } else if v.projected.is_some() {
        Some(("kubernetes.io~projected", true))
    } else {
        None
    }
}

/// The host directory of a non-hostPath volume.
pub fn volume_dir(pod_dir: &Path, v: &Volume) -> Option<PathBuf> {
    plugin_dir(v).map(|(plugin, _)| pod_dir.join(plugin).join(&v.name))
}

/// The size of a memory-backed volume (kubelet `calculateEmptyDirMemorySize`): node
/// allocatable memory, lowered to the pod's memory limit when every container has one, lowered
/// to `sizeLimit` when smaller.
fn tmpfs_size(ctx: &VolumeContext<'_>, v: &Volume) -> Result<u64> {
    let mut size = ctx.allocatable.memory;
    if let Some(limit) = pod_memory_limit(ctx.pod) {
        if limit.is_positive() && limit <= size {
            size = limit;
        }
    }
    let size_limit = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref());
    if let Some(q) = size_limit {
        let q = Quantity::parse(q)
            .map_err(|source| VolumeError::Quantity { volume: v.name.clone(), source })?;
        if q.is_positive() && q <= size {
            size = q;
        }
    }
    Ok(size.value().max(0) as u64)
}

/// Sum of the app containers' memory limits (max with any init container's), if all have one.
fn pod_memory_limit(pod: &Pod) -> Option<Quantity> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources.as_ref()?.limits.as_ref()?.get("memory").and_then(|q| Quantity::parse(q).ok())
    };
    let mut sum = Quantity::ZERO;
    for c in &spec.containers {
        sum = sum.checked_add(limit(c)?)?;
    }
    for c in spec.init_containers.iter().flatten() {
        let l = limit(c)?;
        if l > sum {
            sum = l;
        }
    }
    Some(sum)
}

fn mkdir(volume: &str, dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |op, source| VolumeError::Io { volume: volume.into(), op, path: dir.into(), source };
    std::fs::create_dir_all(dir).map_err(|e| io("mkdir", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", e))
}

/// Creates (or re-uses) the directory of `v`, mounting its tmpfs if it is memory-backed.
fn setup_dir(ctx: &VolumeContext<'_>, v: &Volume) -> Result<PathBuf> {
    let Some((_, memory)) = plugin_dir(v) else {
        return Err(VolumeError::UnsupportedType { volume: v.name.clone() });
    };
    let dir = volume_dir(ctx.pod_dir, v)
        .ok_or_else(|| VolumeError::UnsupportedType { volume: v.name.clone() })?;
    // 0777 like the kubelet's emptyDir; a fresh tmpfs shows 1777.
    mkdir(&v.name, &dir, 0o777)?;
    let io = |op, source| VolumeError::Io { volume: v.name.clone(), op, path: dir.clone(), source };
    if memory {
        let mounted = ctx.mounter.mounts_under(&dir).map_err(|e| io("list mounts under", e))?;
        if !mounted.contains(&dir) {
            let size = tmpfs_size(ctx, v)?;
            ctx.mounter.mount_tmpfs(&dir, size).map_err(|e| io("mount tmpfs at", e))?;
        }
    }
    // Only the directory itself: an emptyDir's contents are the containers', never walked.
    if let (Some(gid), true) = (fs_group(ctx.pod), v.empty_dir.is_some()) {
        ownership::apply(&dir, gid, false, false).map_err(|e| io("set fsGroup ownership of", e))?;
    }
    Ok(dir)
}

/// The pod's `fsGroup`: the group that owns its emptyDir, configMap, secret, downwardAPI
/// and projected volumes (the kubelet's `SetVolumeOwnership`; hostPath is left alone).
fn fs_group(pod: &Pod) -> Option<u32> {
    let gid = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(gid).ok()
}

/// fsGroup ownership of a volume the agent writes (read-only in containers): every file
/// group-readable by the fsGroup, directories setgid.
fn written_ownership(ctx: &VolumeContext<'_>, v: &Volume, dir: &Path) -> Result<()> {
    let Some(gid) = fs_group(ctx.pod) else { return Ok(()) };
    ownership::apply(dir, gid, true, true).map_err(|source| VolumeError::Io {
        volume: v.name.clone(),
        op: "set fsGroup ownership of",
        path: dir.into(),
        source,
    })
}

/// Prepares every volume of the pod; returns volume name → host path.
pub fn prepare(ctx: &VolumeContext<'_>) -> Result<BTreeMap<String, PathBuf>> {
    let pod_name = ctx.pod.metadata.name.as_deref().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = if let Some(h) = v.host_path.as_ref() {
            let path = PathBuf::from(&h.path);
            host_path::check(&v.name, &path, h.type_.as_deref().unwrap_or_default())?;
            path
        } else {
            let dir = setup_dir(ctx, v)?;
            if let Some(payload) = payload::payload(ctx, v) {
                let payload = payload?;
                atomic_writer::write(&dir, &payload, ctx.now)
                    .map_err(|source| VolumeError::Write { volume: v.name.clone(), source })?;
                written_ownership(ctx, v, &dir)?;
            }
            dir
        };
        log::debug!("pod {pod_name}: volume {} ready at {}", v.name, path.display());
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// What [`update`] did.
#[derive(Debug, Default)]
pub struct UpdateReport {
    /// Volumes whose files changed.
    pub changed: Vec<String>,
    /// Volumes that could not be re-rendered (their previous files stay).
    pub errors: Vec<VolumeError>,
}

/// Re-renders the configMap, secret, downwardAPI and projected volumes of a prepared pod from
/// the current desired state. Unchanged content is not rewritten.
pub fn update(ctx: &VolumeContext<'_>) -> UpdateReport {
    let pod_name = ctx.pod.metadata.name.as_deref().unwrap_or_default();
    let mut report = UpdateReport::default();
    for v in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(payload) = payload::payload(ctx, v) else { continue };
        let result = payload.and_then(|payload| {
            let dir = setup_dir(ctx, v)?;
            let changed = atomic_writer::write(&dir, &payload, ctx.now)
                .map_err(|source| VolumeError::Write { volume: v.name.clone(), source })?;
            if changed {
                written_ownership(ctx, v, &dir)?;
            }
            Ok(changed)
        });
        match result {
            Ok(true) => {
                log::info!("pod {pod_name}: volume {} updated", v.name);
                report.changed.push(v.name.clone());
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("pod {pod_name}: volume {} not updated: {e}", v.name);
                report.errors.push(e);
            }
        }
    }
    report
}

/// Unmounts every mount under `pod_dir` (deepest first) and removes it; on an unmount error
/// nothing is removed. hostPath volumes live elsewhere and are left alone.
pub fn teardown(pod_dir: &Path, mounter: &dyn Mounter) -> Result<()> {
    let io = |op, path: &Path, source| VolumeError::Io {
        volume: String::new(),
        op,
        path: path.into(),
        source,
    };
    for m in mounter.mounts_under(pod_dir).map_err(|e| io("list mounts under", pod_dir, e))? {
        mounter.unmount(&m).map_err(|e| io("unmount", &m, e))?;
    }
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", pod_dir, e)),
    }
}
