//! App container instances: start (overlay + spec + create + start), kill, remove, exit.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use libcontainer::capabilities::CapabilityExt;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{
    Capabilities, Capability, LinuxNamespace, LinuxNamespaceType, Process, Spec,
};
use libcontainer::syscall::syscall::SyscallType;

use super::attach::Stdin;
use super::error::{IoContext, Result, SupervisorError};
use super::exec::{blocking_pipe, open_pty};
use super::executor::{AppExecutor, LateSeccomp};
use super::logs::{LineSplitter, LogFile, LogPipe, Stream};
use super::namespaces::PodNamespaces;
use super::sandbox::namespace;
use super::spawn::ExecTemplate;
use super::{cgroups, overlay, preflight, restore_after_create, Instance, Supervisor};
use crate::runtime::durable;
use crate::runtime::spec::seccomp;
use crate::runtime::types::{
    ContainerConfig, ContainerStatus, ContainerStdio, Event, ExitInfo, InstanceId,
};

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let sys = |what| move |source| SupervisorError::Sys { what, source };
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(sys("fcntl O_NONBLOCK"))?;
    Ok((read, write))
}

/// A container's standard descriptors as the supervisor makes them.
struct Stdio {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// What the supervisor reads into the log: the stdout and stderr pipes, or the terminal's
    /// master as stdout.
    logged: Vec<(OwnedFd, Stream)>,
    /// What attach writes to (`stdin: true`).
    kept: Option<Stdin>,
}

impl Stdio {
    /// Without `stdin`, stdin is /dev/null. With `tty`, the three are one new terminal
    /// (allocated as an exec's is) and the container's init makes it its controlling terminal
    /// (`AppExecutor`); its master is logged as stdout and, with `stdin`, kept for attach.
    fn new(asked: ContainerStdio) -> Result<Self> {
        let sys = |what| move |source| SupervisorError::Sys { what, source };
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| sys("dup")(errno(&e)));
        if asked.tty {
            let (master, terminal) = open_pty()?;
            nix::fcntl::fcntl(
                master.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(sys("fcntl O_NONBLOCK"))?;
            let kept = if asked.stdin {
                Some(Stdin { fd: Some(dup(&master)?), tty: true, once: asked.stdin_once })
            } else {
                None
            };
            return Ok(Self {
                stdin: dup(&terminal)?,
                stdout: dup(&terminal)?,
                stderr: terminal,
                logged: vec![(master, Stream::Stdout)],
                kept,
            });
        }
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (stdin, kept) = if asked.stdin {
            let (read, write) = blocking_pipe()?;
            (read, Some(Stdin { fd: Some(write), tty: false, once: asked.stdin_once }))
        } else {
            (File::open("/dev/null").io("open", "/dev/null")?.into(), None)
        };
        Ok(Self {
            stdin,
            stdout: out_write,
            stderr: err_write,
            logged: vec![(out_read, Stream::Stdout), (err_read, Stream::Stderr)],
            kept,
        })
    }
}

fn errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// The idmapped view of a container's rootfs in a pod with its own user namespace: what
/// libcontainer gets as root.
const MAPPED_ROOTFS: &str = "rootfs-mapped";

/// The sandbox's namespaces replace the spec's net/ipc/uts/pid; the container always gets its
/// own mount namespace; others the spec asks for (cgroup, user) are kept.
fn app_namespaces(
    spec_namespaces: Option<&Vec<LinuxNamespace>>,
    pod: &PodNamespaces,
    host_pid: bool,
    pause_pid: Option<i32>,
) -> Vec<LinuxNamespace> {
    use LinuxNamespaceType as T;
    let mut namespaces: Vec<LinuxNamespace> = spec_namespaces
        .into_iter()
        .flatten()
        .filter(|ns| {
            let pods = matches!(ns.typ(), T::Network | T::Ipc | T::Uts | T::Pid | T::Mount);
            !pods && (ns.typ() != T::User || pod.user.is_none())
        })
        .cloned()
        .collect();
    namespaces.push(namespace(T::Mount, None));
    for (typ, pin) in
        [(T::User, &pod.user), (T::Network, &pod.net), (T::Uts, &pod.uts), (T::Ipc, &pod.ipc)]
    {
        if let Some(pin) = pin {
            namespaces.push(namespace(typ, Some(pin.clone())));
        }
    }
    if !host_pid {
        // The pause's when the pod shares one, else the container's own.
        let shared = pause_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/ns/pid")));
        namespaces.push(namespace(T::Pid, shared));
    }
    namespaces
}

/// Unless privileged (the spec mounts the cgroup filesystem `rw`), the container's cgroup
/// filesystem is read-only, as with containerd: a container must not raise its own limits.
/// On a v2-only host it also gets a cgroup namespace, so it sees its own cgroup as the root.
fn protect_cgroupfs(spec: &mut Spec, unified_only: bool, mountinfo: &str) {
    if !cgroupfs_read_only(spec) {
        return;
    }
    let Some(linux) = spec.linux_mut().as_mut() else { return };
    let mut paths = linux.readonly_paths().clone().unwrap_or_default();
    paths.extend(cgroups::readonly_paths(mountinfo));
    linux.set_readonly_paths(Some(paths));
    if unified_only {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        if !namespaces.iter().any(|ns| ns.typ() == LinuxNamespaceType::Cgroup) {
            namespaces.push(namespace(LinuxNamespaceType::Cgroup, None));
        }
        linux.set_namespaces(Some(namespaces));
    }
}

/// Whether the spec asks for a read-only cgroup filesystem: every container but a privileged
/// one (`spec::default_mounts`).
fn cgroupfs_read_only(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/sys/fs/cgroup")
            && m.options().iter().flatten().any(|o| o == "ro")
    })
}

impl Supervisor {
    pub(super) fn cgroup_of(&self, id: &InstanceId) -> PathBuf {
        self.config.pod_cgroup().join(id.key())
    }

    /// Fills in what the runtime owns: rootfs, namespaces, cgroup, no hostname, no terminal.
    fn prepare_spec(&self, id: &InstanceId, mut spec: Spec, rootfs: &Path) -> Result<Spec> {
        let container = id.to_string();
        let incomplete =
            |part| SupervisorError::SpecIncomplete { container: container.clone(), part };
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(rootfs.to_path_buf());
        spec.set_root(Some(root));
        // The pod's UTS namespace is the sandbox's: its hostname is set once, by the sandbox.
        spec.set_hostname(None);
        spec.set_domainname(None);
        let process = spec.process_mut().as_mut().ok_or_else(|| incomplete("process"))?;
        process.set_terminal(Some(false));
        if let Some(adj) = process.oom_score_adj() {
            let own = self.own_oom_score_adj.trim().parse::<i32>().unwrap_or(0);
            // Lowering oom_score_adj needs CAP_SYS_RESOURCE; without it (some containers and
            // sandboxes) the create would fail, so the QoS adjustment stops at our own value.
            if adj < own && !has_cap_sys_resource() {
                log::warn!(
                    "container {container}: oom_score_adj {adj} needs CAP_SYS_RESOURCE, which outpost lacks: using {own}"
                );
                process.set_oom_score_adj(Some(own));
            }
        }
        let privileged = !cgroupfs_read_only(&spec);
        let process = spec.process_mut().as_mut().ok_or_else(|| incomplete("process"))?;
        if let Some(bounding) = own_caps("CapBnd:") {
            grant_capabilities(process, bounding, privileged, &container)?;
        }
        let linux = spec.linux_mut().as_mut().ok_or_else(|| incomplete("linux section"))?;
        let namespaces = app_namespaces(
            linux.namespaces().as_ref(),
            &self.namespaces,
            self.config.host_pid,
            self.info.pause_pid,
        );
        linux.set_namespaces(Some(namespaces));
        if let Some(userns) = &self.config.userns {
            let map = super::sandbox::id_mappings(userns.first);
            linux.set_uid_mappings(Some(map.clone()));
            linux.set_gid_mappings(Some(map));
        }
        linux.set_cgroups_path(Some(self.cgroup_of(id)));
        // The kubelet's NoSwap on v2: libcontainer leaves swap == limit unwritten.
        if let (true, Some(resources)) =
            (cgroups::swap_max_available(&self.config.pod_cgroup()), linux.resources_mut().as_mut())
        {
            crate::runtime::spec::disable_swap_v2(resources);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        protect_cgroupfs(&mut spec, cgroups::unified_only(), &mountinfo);
        Ok(spec)
    }

    pub(super) fn start_container(&mut self, config: ContainerConfig) -> Result<ContainerStatus> {
        if self.shutdown.is_some() {
            return Err(SupervisorError::ShuttingDown);
        }
        if !self.sandbox_alive {
            return Err(SupervisorError::SandboxNotRunning);
        }
        let id = config.id.clone();
        let key = id.key();
        if self.instances.contains_key(&key) || self.dir.container_dir(&id).exists() {
            return Err(SupervisorError::ContainerExists { container: id.to_string() });
        }
        let bundle = self.dir.container_dir(&id);
        let rootfs = bundle.join("rootfs");
        overlay::mount_rootfs(
            &key,
            &config.lower_dirs,
            &bundle.join("upper"),
            &bundle.join("work"),
            &rootfs,
        )?;
        match self.create_and_start(&config, &bundle, &rootfs) {
            Ok(status) => Ok(status),
            Err(e) => {
                overlay::unmount(&bundle.join(MAPPED_ROOTFS));
                overlay::unmount(&rootfs);
                let _ = std::fs::remove_dir_all(&bundle);
                Err(e)
            }
        }
    }

    fn create_and_start(
        &mut self,
        config: &ContainerConfig,
        bundle: &Path,
        rootfs: &Path,
    ) -> Result<ContainerStatus> {
        let id = &config.id;
        let key = id.key();
        let mut spec = self.prepare_spec(id, config.spec.clone(), rootfs)?;
        // As the host's root, on the unmapped rootfs (it has no id in the mapped one).
        preflight::prepare(&id.to_string(), &spec, rootfs)?;
        if let Some(userns) = &self.config.userns {
            let mapped = bundle.join(MAPPED_ROOTFS);
            std::fs::create_dir_all(&mapped).io("create", &mapped)?;
            let user = File::open(&userns.pin).io("open", &userns.pin)?;
            crate::runtime::userns::idmap(rootfs, &mapped, &user)
                .map_err(|e| SupervisorError::Userns(format!("container {id}: {e}")))?;
            if let Some(root) = spec.root_mut() {
                root.set_path(mapped);
            }
        }
        // One compiled filter per profile for the init and every process started in the
        // container later (exec, probes, hooks); libcontainer never sees the profile.
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let filter = seccomp
            .map(seccomp::compiled)
            .transpose()
            .map_err(|source| SupervisorError::Seccomp { container: id.to_string(), source })?;
        let mut for_lc = spec.clone();
        let late_seccomp = filter.clone().map(|f| LateSeccomp::prepare(&mut for_lc, f));
        for_lc
            .save(bundle.join("config.json"))
            .map_err(|source| SupervisorError::SpecSave { container: id.to_string(), source })?;
        let log_path = self.dir.log_file(id);
        let log_file = LogFile::open(&log_path, config.log).io("open log", &log_path)?;
        self.prune_old_logs(id);
        let stdio = Stdio::new(config.stdio)?;
        let lc = |operation| SupervisorError::lc(operation, id);
        let built = ContainerBuilder::new(key.clone(), SyscallType::default())
            .with_root_path(self.dir.state_root())
            .map_err(lc("create"))?
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .with_executor(AppExecutor { seccomp: late_seccomp })
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        restore_after_create(&self.own_oom_score_adj);
        let mut container = built.map_err(lc("create"))?;
        let pid = match container.pid() {
            Some(pid) => pid.as_raw(),
            None => {
                let _ = container.delete(true);
                return Err(SupervisorError::ContainerNotRunning { container: id.to_string() });
            }
        };
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            return Err(lc("start")(e));
        }
        let exec = ExecTemplate::new(&id.to_string(), &spec, pid, &self.cgroup_of(id), filter);
        if let Err(reason) = exec {
            log::warn!("pod {} container {id}: exec will fail: {reason}", self.config.pod_name);
        }
        let status = ContainerStatus {
            id: id.clone(),
            pid,
            started_at: SystemTime::now(),
            log_path,
            exit: None,
        };
        self.record(&status);
        for (fd, stream) in stdio.logged {
            self.pipes.push(LogPipe {
                fd,
                stream,
                splitter: LineSplitter::default(),
                instance: key.clone(),
                terminal: config.stdio.tty,
            });
        }
        self.log_files.insert(key.clone(), log_file);
        let cgroup = self.cgroup_of(id);
        let stdin = stdio.kept;
        self.instances.insert(key, Instance { status: status.clone(), cgroup, exec, stdin });
        log::info!("pod {} container {id}: started, pid {pid}", self.config.pod_name);
        self.broadcast(Event::ContainerStarted {
            pod_uid: self.config.pod_uid.clone(),
            status: status.clone(),
        });
        Ok(status)
    }

    /// Keeps the logs of this instance and the previous one (`kubectl logs --previous`).
    fn prune_old_logs(&self, id: &InstanceId) {
        let Ok(entries) = std::fs::read_dir(self.dir.log_dir(&id.name)) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let attempt =
                name.to_str().and_then(|n| n.split('.').next()).and_then(|a| a.parse::<u32>().ok());
            if attempt.is_some_and(|a| a + 1 < id.attempt) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Writes the instance's durable record; a failure is logged (the in-memory state stays
    /// right, only an agent adopting after a supervisor crash would see the older record).
    pub(super) fn record(&self, status: &ContainerStatus) {
        let path = self.dir.status_file(&status.id);
        if let Err(e) = durable::write_json(&path, status) {
            log::error!(
                "pod {} container {}: cannot record state in {}: {e}",
                self.config.pod_name,
                status.id,
                path.display()
            );
        }
    }

    pub(super) fn instance(&self, id: &InstanceId) -> Result<&Instance> {
        self.instances
            .get(&id.key())
            .ok_or_else(|| SupervisorError::NoContainer { container: id.to_string() })
    }

    /// Signals every process of the instance's cgroup; a no-op once it has exited.
    pub(super) fn kill(&mut self, id: &InstanceId, signal: i32) -> Result<()> {
        let signal_value = libcontainer::signal::Signal::try_from(signal)
            .map_err(|_| SupervisorError::InvalidSignal { signal })?;
        if self.instance(id)?.status.exit.is_some() {
            return Ok(());
        }
        let lc = |operation| SupervisorError::lc(operation, id);
        let mut container =
            Container::load(self.dir.state_root().join(id.key())).map_err(lc("load"))?;
        container.kill(signal_value, true).map_err(lc("kill"))?;
        log::info!("pod {} container {id}: sent signal {signal}", self.config.pod_name);
        Ok(())
    }

    /// Deletes an exited instance: libcontainer state and cgroup, overlay, upper dir. Keeps the
    /// log. Unknown instances are already removed.
    pub(super) fn remove(&mut self, id: &InstanceId) -> Result<()> {
        let Some(instance) = self.instances.get(&id.key()) else { return Ok(()) };
        if instance.status.exit.is_none() {
            return Err(SupervisorError::ContainerRunning { container: id.to_string() });
        }
        let state = self.dir.state_root().join(id.key());
        if state.exists() {
            let mut container = Container::load(state).map_err(SupervisorError::lc("load", id))?;
            container.delete(true).map_err(SupervisorError::lc("delete", id))?;
        }
        let bundle = self.dir.container_dir(id);
        overlay::unmount(&bundle.join(MAPPED_ROOTFS));
        overlay::unmount(&bundle.join("rootfs"));
        std::fs::remove_dir_all(&bundle).io("remove", &bundle)?;
        self.instances.remove(&id.key());
        log::info!("pod {} container {id}: removed", self.config.pod_name);
        Ok(())
    }

    /// A container's init was reaped: record how it ended (the cgroup still exists, so its
    /// OOM counter is still readable).
    pub(super) fn on_instance_exit(&mut self, key: &str, wait_status: i32) {
        // What the container wrote before it exited is in the pipes: log it before the exit is
        // reported, so a reader of the exit finds the complete log.
        for i in 0..self.pipes.len() {
            if self.pipes[i].instance == key {
                self.pump_log(i);
            }
        }
        let Some(instance) = self.instances.get_mut(key) else { return };
        let (exit_code, signal) = decode_wait_status(wait_status);
        let exit = ExitInfo {
            exit_code,
            signal,
            oom_killed: cgroups::oom_kills(&instance.cgroup) > 0,
            finished_at: SystemTime::now(),
            lost: false,
        };
        instance.status.exit = Some(exit.clone());
        // Nothing reads it any more.
        instance.stdin = None;
        let status = instance.status.clone();
        log::info!(
            "pod {} container {}: exited with {exit_code} (signal {signal:?}, oom {})",
            self.config.pod_name,
            status.id,
            exit.oom_killed
        );
        self.record(&status);
        // Other processes of the container (in its own pid namespace they are already gone)
        // must not outlive it, or they keep its log pipes and cgroup.
        if !cgroups::pids(&self.cgroup_of(&status.id)).is_empty() {
            let _ = self.kill_cgroup(&status.id, libc::SIGKILL);
        }
        self.broadcast(Event::ContainerExited {
            pod_uid: self.config.pod_uid.clone(),
            id: status.id,
            exit,
        });
    }

    fn kill_cgroup(&self, id: &InstanceId, signal: i32) -> Result<()> {
        let mut container = Container::load(self.dir.state_root().join(id.key()))
            .map_err(SupervisorError::lc("load", id))?;
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|_| SupervisorError::InvalidSignal { signal })?;
        container.kill(sig, true).map_err(SupervisorError::lc("kill", id))
    }
}

/// (exit code, signal): the code, or 128 + signal like Kubernetes reports it.
pub(super) fn decode_wait_status(status: i32) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (libc::WEXITSTATUS(status), None)
    }
}

/// A capability mask of this process from /proc/self/status (`CapEff:`, `CapBnd:`).
fn own_caps(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Whether this process may lower `oom_score_adj` (CAP_SYS_RESOURCE in its effective set).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    own_caps("CapEff:").is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Privileged means "all the capabilities the runtime has" (containerd), so those outside
/// `bounding` are left out; for any other container an explicit `add` of a capability
/// nobody here can grant is refused, never silently dropped.
fn grant_capabilities(
    process: &mut Process,
    bounding: u64,
    privileged: bool,
    container: &str,
) -> Result<()> {
    let before = process.capabilities().clone();
    let removed = trim_capabilities(process, bounding);
    if removed.is_empty() {
        return Ok(());
    }
    if !privileged {
        process.set_capabilities(before);
        let caps = format!("{removed:?}");
        return Err(SupervisorError::CapabilitiesUnavailable { container: container.into(), caps });
    }
    log::info!(
        "container {container}: privileged: capabilities outpost does not have, not granted: {removed:?}"
    );
    Ok(())
}

/// Removes the capabilities outside `bounding` (outpost's own) from every set: a privileged
/// container gets all the capabilities the runtime has, as with containerd; asking for more
/// fails the create with a bare "failed syscall". Returns what was removed.
fn trim_capabilities(process: &mut Process, bounding: u64) -> Vec<Capability> {
    let Some(mut caps) = process.capabilities().clone() else { return Vec::new() };
    let mut removed: Vec<Capability> = Vec::new();
    let mut trim = |set: Option<Capabilities>| {
        set.map(|set| {
            set.into_iter()
                .filter(|c| {
                    let kept = bounding & (1u64 << c.to_cap().index()) != 0;
                    if !kept && !removed.contains(c) {
                        removed.push(*c);
                    }
                    kept
                })
                .collect::<Capabilities>()
        })
    };
    caps.set_bounding(trim(caps.bounding().clone()));
    caps.set_effective(trim(caps.effective().clone()));
    caps.set_permitted(trim(caps.permitted().clone()));
    caps.set_inheritable(trim(caps.inheritable().clone()));
    caps.set_ambient(trim(caps.ambient().clone()));
    process.set_capabilities(Some(caps));
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::default_mounts;

    fn spec(privileged: bool) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(default_mounts(privileged)));
        spec
    }

    const V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";

    #[test]
    fn unprivileged_containers_get_a_read_only_cgroupfs_and_on_v2_a_cgroup_namespace() {
        let mut s = spec(false);
        protect_cgroupfs(&mut s, true, V2);
        let linux = s.linux().as_ref().unwrap();
        let paths = linux.readonly_paths().clone().unwrap_or_default();
        assert_eq!(paths.last().map(String::as_str), Some("/sys/fs/cgroup"), "{paths:?}");
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        assert_eq!(
            namespaces.iter().filter(|ns| ns.typ() == LinuxNamespaceType::Cgroup).count(),
            1,
            "{namespaces:?}"
        );
        // The mount itself asks for ro too (libcontainer's v2 mount ignores it: hence the above).
        let mount =
            s.mounts().iter().flatten().find(|m| m.destination() == Path::new("/sys/fs/cgroup"));
        assert!(mount.unwrap().options().iter().flatten().any(|o| o == "ro"));
    }

    #[test]
    fn v1_adds_no_cgroup_namespace_and_privileged_containers_keep_a_writable_cgroupfs() {
        let mut s = spec(false);
        let before = s.linux().as_ref().unwrap().namespaces().clone();
        protect_cgroupfs(&mut s, false, "");
        assert_eq!(s.linux().as_ref().unwrap().namespaces().clone(), before);
        let mut p = spec(true);
        let before = p.clone();
        protect_cgroupfs(&mut p, true, V2);
        assert_eq!(p, before);
    }

    #[test]
    fn capabilities_outpost_lacks_are_not_granted() {
        use libcontainer::oci_spec::runtime::LinuxCapabilities;
        let all: Capabilities = [Capability::Chown, Capability::SysResource].into();
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(all.clone()));
        caps.set_effective(Some(all.clone()));
        caps.set_permitted(Some(all));
        let mut process = Process::default();
        process.set_capabilities(Some(caps));
        let without_sys_resource = !(1u64 << 24);
        let removed = trim_capabilities(&mut process, without_sys_resource);
        assert_eq!(removed, [Capability::SysResource]);
        let caps = process.capabilities().clone().unwrap();
        let chown: Capabilities = [Capability::Chown].into();
        assert_eq!(caps.bounding().as_ref(), Some(&chown));
        assert_eq!(caps.permitted().as_ref(), Some(&chown));
    }

    #[test]
    fn only_privileged_containers_do_without_capabilities_outpost_lacks() {
        use libcontainer::oci_spec::runtime::LinuxCapabilities;
        let process = || {
            let asked: Capabilities = [Capability::Chown, Capability::SysResource].into();
            let mut caps = LinuxCapabilities::default();
            caps.set_bounding(Some(asked.clone()));
            caps.set_effective(Some(asked));
            let mut p = Process::default();
            p.set_capabilities(Some(caps));
            p
        };
        let without_sys_resource = !(1u64 << 24);
        let mut p = process();
        grant_capabilities(&mut p, without_sys_resource, true, "priv").unwrap();
        let mut p = process();
        let err = grant_capabilities(&mut p, without_sys_resource, false, "app").unwrap_err();
        assert!(matches!(err, SupervisorError::CapabilitiesUnavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("SysResource"), "{err}");
        // Everything available: granted as asked, privileged or not.
        let mut p = process();
        grant_capabilities(&mut p, u64::MAX, false, "app").unwrap();
        assert_eq!(p, process());
    }
}
