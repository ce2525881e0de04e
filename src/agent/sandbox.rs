//! Sandboxes: made (volumes, network, namespaces, pod files), refreshed, stopped and removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::engine::Observed;
use crate::manifest::DesiredState;
use crate::network::cni::CniError;
use crate::runtime::spec;
use crate::runtime::{Runtime, SandboxConfig};
use crate::volume::{self, Mounter, VolumeContext};

use super::deps::{Deps, PodContext};
use super::outcome::{ContextUpdate, Outcome};
use super::pod_files;

/// Sandboxes made at once; the rest wait their turn, in order. It bounds what a burst of pod
/// files (110 at once in `benches/burst_memory.rs`, whose figures are measured with it) holds
/// in flight: volumes, network setups, supervisor spawns. It is not what kept the burst's
/// peak down (that was sharing the desired pods and reading one pod's CNI cache entries).
const SANDBOX_CREATIONS: usize = 4;

pub async fn create<R: Runtime>(deps: &Deps<R>, pod: &Pod, desired: &DesiredState) -> Outcome {
    static SLOTS: smol::lock::Semaphore = smol::lock::Semaphore::new(SANDBOX_CREATIONS);
    let _slot = SLOTS.acquire().await;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match try_create_sandbox(deps, pod, desired, &uid).await {
        Ok(context) => Outcome {
            fact: Some(Observed::SandboxReady { pod_uid: uid.clone() }),
            update: Some(ContextUpdate::Sandbox { uid, context: Box::new(context) }),
        },
        Err(message) => {
            // Leave nothing half-made behind; the engine retries from scratch.
            cleanup_sandbox(deps, &uid).await;
            Outcome::fact(Observed::SandboxFailed { pod_uid: uid, message })
        }
    }
}

async fn try_create_sandbox<R: Runtime>(
    deps: &Deps<R>,
    pod: &Pod,
    desired: &DesiredState,
    uid: &str,
) -> Result<PodContext, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let data = deps.pod_data(uid);
    let userns = match spec.host_users {
        Some(false) => Some(pod_userns(deps, uid, &data).await?),
        _ => None,
    };
    let mut volumes = {
        let dir = data.join("volumes");
        volume::prepare(&volume_context(deps, pod, desired, &dir)).map_err(|e| e.event_message())?
    };
    if let Some(userns) = &userns {
        volumes = userns_volumes(pod, &data, volumes, userns)?;
    }
    let hostname = spec::pod_hostname(pod, &deps.node.name);
    let meta = &pod.metadata;
    let mut config = SandboxConfig::new(
        uid,
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        ),
        hostname.clone(),
    );
    config.host_network = spec.host_network.unwrap_or(false);
    config.host_ipc = spec.host_ipc.unwrap_or(false);
    config.host_pid = spec.host_pid.unwrap_or(false);
    config.share_process_namespace = spec.share_process_namespace.unwrap_or(false);
    config.cgroup_parent = crate::runtime::usage::qos_cgroup_parent(pod);
    config.pids_max = deps.pod_max_pids;
    config.termination_grace_period_seconds =
        spec.termination_grace_period_seconds.map(|s| s.max(0) as u64);
    // Admission allowed them (engine::sysctl), in either spelling.
    let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_ref());
    config.sysctls = sysctls
        .into_iter()
        .flatten()
        .map(|s| (crate::engine::to_dots(&s.name), s.value.clone()))
        .collect();
    let net_error = |e: CniError| format!("failed to set up network for sandbox: {e}");
    // The network namespace comes first, so the CNI ADD runs while the sandbox is being made.
    let owner = userns.as_ref().map(|u| u.pin.as_path());
    let attaching = match (&deps.network, config.host_network) {
        (Some(net), false) => Some((net, net.prepare(pod, owner).await.map_err(net_error)?)),
        _ => None,
    };
    config.userns = userns;
    config.netns = attaching.as_ref().map(|(_, a)| a.netns().to_path_buf());
    let network = async {
        match &attaching {
            Some((net, a)) => net.add(a).await.map(Some),
            None => Ok(None),
        }
    };
    let (info, ips) = smol::future::zip(deps.runtime.create_sandbox(config.clone()), network).await;
    // Only now, with the sandbox done with the namespace (sysctls), may a failed ADD release it. The
    // network's error comes first: a sandbox failure may only be its consequence.
    let ips = match (ips, attaching) {
        (Err(e), Some((net, a))) => {
            net.undo(a).await;
            return Err(net_error(e));
        }
        (ips, _) => ips.map_err(net_error)?,
    };
    let info = info.map_err(|e| e.to_string())?;
    let pod_ips = match ips {
        Some(ips) => ips,
        None if config.host_network => deps.node.host_ips.iter().take(1).cloned().collect(),
        None => Vec::new(),
    };
    let files =
        pod_files::write(&data, pod, &hostname, &pod_ips, &deps.host_resolv, deps.mounter.as_ref())
            .map_err(|e| e.to_string())?;
    let marker = deps.setup_marker(uid);
    std::fs::write(&marker, b"").map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(PodContext {
        pod_ips,
        netns: info.netns,
        volumes,
        files,
        host_network: config.host_network,
        stop_signals: BTreeMap::new(),
    })
}

/// `hostUsers: false`: the pod's block of host ids (recorded first) and its user namespace,
/// pinned at `<pod data>/userns` (a sandbox made again reuses both).
async fn pod_userns<R>(
    deps: &Deps<R>,
    uid: &str,
    data: &Path,
) -> Result<crate::runtime::PodUserns, String> {
    use crate::runtime::userns::{create, Kind, Owner};
    let ids = deps.userns.as_ref().ok_or(
        "user namespaces are unavailable (the state database could not be opened for them; see the agent's log)",
    )?;
    let first = ids.grant(uid)?;
    let pin = data.join("userns");
    if !crate::network::netns::is_pinned(&pin) {
        let (p, dirs) = (pin.clone(), [deps.state_dir().to_path_buf(), deps.data_dir.clone()]);
        smol::unblock(move || {
            std::fs::create_dir_all(&dirs[1]).map_err(|e| format!("{}: {e}", dirs[1].display()))?;
            traversable(&dirs)?;
            create(Owner::New { first }, &[(Kind::User, &p)]).map_err(|e| e.to_string())
        })
        .await?;
    }
    log::info!("pod {uid}: user namespace of host ids {first}-{}", first + 65535);
    Ok(crate::runtime::PodUserns { first, pin })
}

/// Root of a pod's user namespace is nobody on the host: it must be able to walk down to its
/// rootfs and volumes. Adds search (not read) permission for others to the agent's own
/// directories where it lacks; the ones above them are the operator's to open.
fn traversable(dirs: &[PathBuf]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs.first().into_iter().flat_map(|d| d.ancestors().skip(1)) {
        let mode = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = mode.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not searchable by others: the root of a pod with hostUsers: false is nobody on the host and must reach its rootfs and volumes below it; chmod o+x {}",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ));
        }
    }
    for dir in dirs {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            let perms = std::fs::Permissions::from_mode((mode | 0o001) & 0o7777);
            std::fs::set_permissions(dir, perms).map_err(|e| format!("{}: {e}", dir.display()))?;
            log::info!(
                "{}: made searchable by others, for pods with hostUsers: false",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Volumes as a pod in its own user namespace gets them. An emptyDir is the pod's: its
/// directory is owned by the pod's ids (as if its root had made it), so what the pod writes
/// there is its ids' on the host. The others (files the agent writes, hostPaths) are
/// idmapped views at `<pod data>/volumes-mapped/<name>`, so the pod's root sees the host
/// root's files as its own; the agent keeps writing the unmapped ones.
fn userns_volumes(
    pod: &Pod,
    data: &Path,
    volumes: BTreeMap<String, PathBuf>,
    userns: &crate::runtime::PodUserns,
) -> Result<BTreeMap<String, PathBuf>, String> {
    use std::os::unix::fs::MetadataExt;
    let empty_dirs: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.empty_dir.is_some())
        .map(|v| v.name.as_str())
        .collect();
    let user =
        std::fs::File::open(&userns.pin).map_err(|e| format!("{}: {e}", userns.pin.display()))?;
    // One read of the mount table: a sandbox made again finds its views mounted already.
    let mapped_dir = data.join("volumes-mapped");
    let mounted = crate::volume::SystemMounter.mounts_under(&mapped_dir).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, path) in volumes {
        if empty_dirs.contains(&name.as_str()) {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let shift = |id: u32| if id >= userns.first { id } else { userns.first + id };
            std::os::unix::fs::chown(&path, Some(shift(meta.uid())), Some(shift(meta.gid())))
                .map_err(|e| format!("volume {name}: chown {}: {e}", path.display()))?;
            out.insert(name, path);
            continue;
        }
        let mapped = mapped_dir.join(&name);
        std::fs::create_dir_all(&mapped).map_err(|e| format!("{}: {e}", mapped.display()))?;
        if !mounted.contains(&mapped) {
            crate::runtime::userns::idmap(&path, &mapped, &user)
                .map_err(|e| format!("volume {name}: {e}"))?;
        }
        out.insert(name, mapped);
    }
    Ok(out)
}

/// Network, sandbox and volumes of a pod, in the kubelet's order (network first, while the
/// namespace still exists). Failures are logged: the state left behind is retried next time.
async fn cleanup_sandbox<R: Runtime>(deps: &Deps<R>, uid: &str) {
    if let Some(net) = &deps.network {
        if let Err(e) = net.detach(uid).await {
            log::warn!("pod {uid}: network teardown: {e}");
        }
    }
    if let Err(e) = deps.runtime.remove_sandbox(uid, None).await {
        log::debug!("pod {uid}: remove sandbox: {e}");
    }
    // Everything under it is unmounted first (volumes, the shared /dev/shm, subPath binds of
    // a hostPath, say): deleting through a mount would delete what it shows. On a failure
    // nothing is removed and the next cleanup retries.
    let data = deps.pod_data(uid);
    if let Err(e) = volume::teardown(&data, deps.mounter.as_ref()) {
        log::warn!("pod {uid}: removing {}: {e}", data.display());
    }
}

fn volume_context<'a, R>(
    deps: &'a Deps<R>,
    pod: &'a Pod,
    desired: &'a DesiredState,
    dir: &'a std::path::Path,
) -> VolumeContext<'a> {
    VolumeContext {
        pod,
        desired,
        pod_dir: dir,
        allocatable: &deps.node.allocatable,
        mounter: deps.mounter.as_ref(),
        now: std::time::SystemTime::now(),
    }
}

/// Re-renders a running pod's configMap, secret, downwardAPI and projected volumes (the
/// kubelet's AtomicWriter swap: containers see the new files at once, no restart).
pub async fn update_volumes<R: Runtime>(deps: &Deps<R>, pod: &Pod, desired: &DesiredState) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = deps.pod_data(&uid).join("volumes");
    let report = volume::update(&volume_context(deps, pod, desired, &dir));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for v in &report.changed {
        log::info!("pod {name}: volume {v} updated");
    }
    for e in &report.errors {
        log::warn!("pod {name}: {}", e.event_message());
    }
}

/// A sandbox found after an agent restart that neither a record nor a manifest wants (a pod
/// deleted while its record was lost): stopped as the kubelet stops a deleted pod's
/// containers, SIGTERM and SIGKILL after `grace`, then removed with its network, data and
/// logs. Never SIGKILL at once: the pod may be mid-write.
pub async fn stop_unknown<R: Runtime>(deps: &Deps<R>, uid: &str, grace: Duration) {
    if let Err(e) = deps.runtime.remove_sandbox(uid, Some(grace)).await {
        log::warn!("pod {uid}: stopping a sandbox nobody wants: {e}");
    }
    cleanup_sandbox(deps, uid).await;
    deps.remove_logs(uid);
    if let Some(devices) = &deps.devices {
        devices.release(uid);
    }
    if let Some(userns) = &deps.userns {
        userns.release(uid);
    }
    log::info!("pod {uid}: sandbox nobody wants stopped and removed");
}

pub async fn remove<R: Runtime>(deps: &Deps<R>, uid: &str) -> Outcome {
    cleanup_sandbox(deps, uid).await;
    Outcome {
        fact: Some(Observed::SandboxRemoved { pod_uid: uid.to_string() }),
        update: Some(ContextUpdate::SandboxGone { uid: uid.to_string() }),
    }
}
