//! The pod sandbox: the pause process owning the pod's namespaces.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{
    LinuxBuilder, LinuxNamespace, LinuxNamespaceType, ProcessBuilder, RootBuilder, Spec,
};
use libcontainer::syscall::syscall::SyscallType;

use super::error::{IoContext, Result, SupervisorError};
use super::executor::PauseExecutor;
use super::memory::Regions;
use super::{netns, restore_after_create};
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

/// New mount namespace always (pivot_root); net (new, or the agent's pinned one) and uts unless
/// host network, ipc unless host ipc, pid only when the pod shares one process namespace.
fn pause_spec(config: &SandboxConfig, rootfs: PathBuf) -> Result<Spec> {
    use LinuxNamespaceType as T;
    let mut namespaces = vec![namespace(T::Mount, None)];
    if !config.host_network {
        namespaces.push(namespace(T::Network, config.netns.clone()));
        namespaces.push(namespace(T::Uts, None));
    }
    if !config.host_ipc {
        namespaces.push(namespace(T::Ipc, None));
    }
    if config.share_process_namespace && !config.host_pid {
        namespaces.push(namespace(T::Pid, None));
    }
    let mut spec = Spec::default();
    spec.set_hostname((!config.host_network).then(|| config.hostname.clone()));
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
    let mut linux = LinuxBuilder::default();
    if !config.sysctls.is_empty() {
        // libcontainer writes them from the pause once it is in the pod's namespaces (a procfs
        // of its own, after pivot_root), before the pause reports ready: the host's values are
        // never touched, and app containers only start later.
        linux = linux.sysctl(config.sysctls.clone().into_iter().collect::<HashMap<_, _>>());
    }
    let linux = linux
        .namespaces(namespaces)
        .cgroups_path(config.pod_cgroup().join(PAUSE_ID))
        .masked_paths(Vec::new())
        .readonly_paths(Vec::new())
        .build()
        .map_err(spec_error("linux"))?;
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Names the pod's sysctls in a create error that comes from writing them.
fn with_sysctls(e: SupervisorError, config: &SandboxConfig) -> SupervisorError {
    if config.sysctls.is_empty() || !e.to_string().contains("sysctl") {
        return e;
    }
    let sysctls: Vec<String> = config.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    SupervisorError::Sysctls { sysctls: sysctls.join(", "), source: Box::new(e) }
}

/// Creates and starts the pause container, brings `lo` up in a netns of its own; returns its
/// pid.
pub fn start(
    dir: &PodDir,
    config: &SandboxConfig,
    own_oom_score_adj: &str,
    memory: Regions,
) -> Result<i32> {
    let bundle = dir.pause_bundle();
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).io("create", &rootfs)?;
    let spec = pause_spec(config, rootfs)?;
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
    let mut pause = pause.map_err(lc("create")).map_err(|e| with_sysctls(e, config))?;
    let pid = pause.pid().map(|p| p.as_raw()).ok_or(SupervisorError::SandboxNotRunning)?;
    if !config.host_network && config.netns.is_none() {
        if let Err(e) = netns::loopback_up(pid) {
            let _ = pause.delete(true);
            return Err(e);
        }
    }
    if let Err(e) = pause.start() {
        let _ = pause.delete(true);
        return Err(lc("start")(e));
    }
    Ok(pid)
}
