//! The pause process of a pod that shares one pid namespace: its init, holding it. It joins the
//! pod's pinned namespaces (`namespaces.rs`); other pods have no pause.

use std::fs::File;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{
    LinuxBuilder, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
    ProcessBuilder, RootBuilder, Spec,
};
use libcontainer::syscall::syscall::SyscallType;

use super::error::{IoContext, Result, SupervisorError};
use super::executor::PauseExecutor;
use super::memory::Regions;
use super::namespaces::PodNamespaces;
use super::restore_after_create;
use crate::runtime::paths::PodDir;
use crate::runtime::types::SandboxConfig;

pub const PAUSE_ID: &str = "pause";

fn spec_error(part: &'static str) -> impl Fn(oci_spec::OciSpecError) -> SupervisorError {
    move |_| SupervisorError::SpecIncomplete { container: PAUSE_ID.to_string(), part }
}

pub(super) fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// Container ids 0..65535 as host ids `first..`: the pod's user namespace's mapping.
pub(super) fn id_mappings(first: u32) -> Vec<LinuxIdMapping> {
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(first)
        .size(crate::userns::IDS_PER_POD)
        .build()
        .unwrap_or_default();
    vec![map]
}

/// A new mount and pid namespace; the pod's pinned net, uts and ipc namespaces.
fn pause_spec(namespaces: &PodNamespaces, config: &SandboxConfig, rootfs: PathBuf) -> Result<Spec> {
    use LinuxNamespaceType as T;
    // The user namespace first: the pid namespace made after it is then owned by it.
    let mut list = Vec::new();
    if let Some(pin) = &namespaces.user {
        list.push(namespace(T::User, Some(pin.clone())));
    }
    list.extend([namespace(T::Mount, None), namespace(T::Pid, None)]);
    for (typ, pin) in
        [(T::Network, &namespaces.net), (T::Uts, &namespaces.uts), (T::Ipc, &namespaces.ipc)]
    {
        if let Some(pin) = pin {
            list.push(namespace(typ, Some(pin.clone())));
        }
    }
    let mut spec = Spec::default();
    // Set by `namespaces::make` (libcontainer sets one only in a UTS namespace it creates).
    spec.set_hostname(None);
    spec.set_root(Some(
        RootBuilder::default().path(rootfs).readonly(true).build().map_err(spec_error("root"))?,
    ));
    // The process never execs (PauseExecutor): only the /dev tmpfs libcontainer needs for its
    // device nodes and symlinks.
    let dev = oci_spec::runtime::get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() == Path::new("/dev"));
    spec.set_mounts(Some(dev.collect()));
    let process = ProcessBuilder::default()
        .args(vec!["/pause".to_string()])
        .cwd("/")
        .no_new_privileges(true)
        .build()
        .map_err(spec_error("process"))?;
    spec.set_process(Some(process));
    let map = config.userns.as_ref().map(|u| id_mappings(u.first)).unwrap_or_default();
    let linux = LinuxBuilder::default()
        .namespaces(list)
        .uid_mappings(map.clone())
        .gid_mappings(map)
        .cgroups_path(config.pod_cgroup().join(PAUSE_ID))
        .masked_paths(Vec::new())
        .readonly_paths(Vec::new())
        .build()
        .map_err(spec_error("linux"))?;
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Creates and starts the pause container; returns its pid.
pub fn start(
    dir: &PodDir,
    config: &SandboxConfig,
    namespaces: &PodNamespaces,
    own_oom_score_adj: &str,
    memory: Regions,
) -> Result<i32> {
    let bundle = dir.pause_bundle();
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).io("create", &rootfs)?;
    if let Some(userns) = &config.userns {
        // Empty, and the pod root's: libcontainer makes its /dev there from inside.
        let ids = (Some(userns.first), Some(userns.first));
        std::os::unix::fs::chown(&rootfs, ids.0, ids.1).io("chown", &rootfs)?;
    }
    let spec = pause_spec(namespaces, config, rootfs)?;
    let config_json = bundle.join("config.json");
    spec.save(&config_json)
        .map_err(|source| SupervisorError::SpecSave { container: PAUSE_ID.to_string(), source })?;
    let lc = |operation| SupervisorError::lc(operation, PAUSE_ID);
    let null = |path: &str| File::open(path).io("open", path);
    let pause = ContainerBuilder::new(PAUSE_ID.to_string(), SyscallType::default())
        .with_root_path(dir.state_root())
        .map_err(lc("create"))?
        .with_stdin(null("/dev/null")?)
        .with_stdout(null("/dev/null")?)
        .with_stderr(null("/dev/null")?)
        .with_executor(PauseExecutor { memory })
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    restore_after_create(own_oom_score_adj);
    let mut pause = pause.map_err(lc("create"))?;
    let pid = pause.pid().map(|p| p.as_raw()).ok_or(SupervisorError::SandboxNotRunning)?;
    if let Err(e) = pause.start() {
        let _ = pause.delete(true);
        return Err(lc("start")(e));
    }
    Ok(pid)
}
