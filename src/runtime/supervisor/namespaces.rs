//! The pod's namespaces without a process. The supervisor's only thread enters new uts and ipc
//! namespaces (and net, when the agent made none), sets the hostname, `lo` and the pod's
//! sysctls there, pins each namespace at `<pod dir>/ns/<type>` (a bind mount, as the agent pins
//! network namespaces) and steps back into the host's. Containers join the pins. A pause process
//! is only made to hold a shared pid namespace, which cannot be pinned (its first process is its
//! init), as CRI-O drops its infra container.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};

use super::error::{IoContext, Result, SupervisorError};
use crate::network::netns;
use crate::runtime::paths::PodDir;
use crate::runtime::types::SandboxConfig;

/// Where app containers (and a pause) find the pod's namespaces; `None`: the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The pod's own user namespace (`hostUsers: false`), pinned by the agent; joined first.
    pub user: Option<PathBuf>,
    pub net: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
}

/// `<pod dir>/ns`: the pins of one pod.
pub fn pin_dir(dir: &PodDir) -> PathBuf {
    dir.path().join("ns")
}

/// The procfs path of a sysctl given in the kubelet's dotted form, where a `/` stands for a
/// dot inside a name (`net.ipv4.conf.eth0/100.forwarding`): dots and slashes swap.
pub fn sysctl_path(key: &str) -> PathBuf {
    let swapped: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(swapped)
}

/// Makes, configures and pins the pod's namespaces (see the module doc).
pub fn make(dir: &PodDir, config: &SandboxConfig) -> Result<PodNamespaces> {
    let own_net = !config.host_network && config.netns.is_none();
    let mut flags = CloneFlags::empty();
    if !config.host_network {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if !config.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if own_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let pod_net = config.netns.as_ref().filter(|_| !config.host_network);
    // The agent's netns is entered only to write sysctls there.
    let join_net = pod_net.filter(|_| !config.sysctls.is_empty());
    // The host's namespaces this thread leaves, to come back to.
    let mut back = Vec::new();
    for (name, flag) in [
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("net", CloneFlags::CLONE_NEWNET),
    ] {
        let leaves =
            flags.contains(flag) || (flag == CloneFlags::CLONE_NEWNET && join_net.is_some());
        if leaves {
            let path = format!("/proc/thread-self/ns/{name}");
            back.push((File::open(&path).io("open", &path)?, flag));
        }
    }
    let pins = pin_dir(dir);
    let mut made = PodNamespaces {
        net: pod_net.cloned(),
        user: config.userns.as_ref().map(|u| u.pin.clone()),
        ..Default::default()
    };
    let result = match &config.userns {
        // Made owned by the pod's user namespace (a child makes and this process pins them),
        // then entered like the agent's netns, for the hostname, `lo` and sysctls.
        Some(userns) => owned_by(&userns.pin, flags, &pins, &mut made)
            .and_then(|()| configure_pinned(flags, join_net, config, &made)),
        None => inside(flags, join_net, config, &pins, &mut made),
    };
    for (ns, flag) in &back {
        // Must get back, or every later socket, file and child of the supervisor would be in
        // the pod's namespaces; the kernel refusing a namespace we were just in leaves no sane
        // way to continue.
        if let Err(e) = setns(ns, *flag) {
            log::error!("pod {}: setns back to the host's namespace: {e}", config.pod_name);
            std::process::abort();
        }
    }
    if let Err(e) = result {
        release(dir);
        return Err(e);
    }
    Ok(made)
}

/// New namespaces of `flags` owned by the user namespace pinned at `userns`, pinned.
fn owned_by(userns: &Path, flags: CloneFlags, pins: &Path, made: &mut PodNamespaces) -> Result<()> {
    use crate::runtime::userns::{create, Kind, Owner};
    let mut list = Vec::new();
    for (kind, flag, name) in [
        (Kind::Uts, CloneFlags::CLONE_NEWUTS, "uts"),
        (Kind::Ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (Kind::Net, CloneFlags::CLONE_NEWNET, "net"),
    ] {
        if flags.contains(flag) {
            list.push((kind, pins.join(name)));
        }
    }
    let refs: Vec<_> = list.iter().map(|(k, p)| (*k, p.as_path())).collect();
    create(Owner::Pinned(userns), &refs).map_err(|e| SupervisorError::Userns(e.to_string()))?;
    for (kind, pin) in list {
        match kind {
            Kind::Uts => made.uts = Some(pin),
            Kind::Ipc => made.ipc = Some(pin),
            _ => made.net = Some(pin),
        }
    }
    Ok(())
}

/// The hostname and sysctls of namespaces made by [`owned_by`]: this thread enters them
/// (the host's root may, it owns every user namespace) and [`make`] brings it back.
fn configure_pinned(
    flags: CloneFlags,
    join_net: Option<&PathBuf>,
    config: &SandboxConfig,
    made: &PodNamespaces,
) -> Result<()> {
    let sys = |what| move |source| SupervisorError::Sys { what, source };
    for (pin, flag) in [
        (&made.uts, CloneFlags::CLONE_NEWUTS),
        (&made.ipc, CloneFlags::CLONE_NEWIPC),
        (&made.net, CloneFlags::CLONE_NEWNET),
    ] {
        let join = match pin {
            Some(pin) if flags.contains(flag) => Some(pin),
            _ if flag == CloneFlags::CLONE_NEWNET => join_net,
            _ => None,
        };
        if let Some(path) = join {
            let ns = File::open(path).io("open", path)?;
            setns(&ns, flag).map_err(sys("setns(pod namespace)"))?;
        }
    }
    if flags.contains(CloneFlags::CLONE_NEWUTS) {
        nix::unistd::sethostname(&config.hostname).map_err(sys("sethostname"))?;
    }
    for (key, value) in &config.sysctls {
        // Validation refuses host namespaces with hostUsers: false; never write the host's.
        let net = key.starts_with("net.");
        if (net && made.net.is_none() && join_net.is_none()) || (!net && made.ipc.is_none()) {
            return Err(SupervisorError::Sysctl {
                sysctl: format!("{key}={value}"),
                path: sysctl_path(key),
                source: std::io::Error::other("the pod uses the host's namespace for it"),
            });
        }
        write_sysctl(key, value)?;
    }
    Ok(())
}

/// The part done inside the pod's namespaces.
fn inside(
    flags: CloneFlags,
    join_net: Option<&PathBuf>,
    config: &SandboxConfig,
    pins: &Path,
    made: &mut PodNamespaces,
) -> Result<()> {
    let sys = |what| move |source| SupervisorError::Sys { what, source };
    unshare(flags).map_err(sys("unshare the pod's namespaces"))?;
    if let Some(path) = join_net {
        let ns = File::open(path).io("open", path)?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(sys("setns(pod netns)"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWUTS) {
        nix::unistd::sethostname(&config.hostname).map_err(sys("sethostname"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        netns::loopback_up().map_err(sys("bring lo up"))?;
    }
    for (key, value) in &config.sysctls {
        // Admission refuses these (the kubelet's rule); never write the host's value anyway.
        let net = key.starts_with("net.");
        if (net && config.host_network) || (!net && config.host_ipc) {
            return Err(SupervisorError::Sysctl {
                sysctl: format!("{key}={value}"),
                path: sysctl_path(key),
                source: std::io::Error::other("the pod uses the host's namespace for it"),
            });
        }
        write_sysctl(key, value)?;
    }
    let pin = |name: &str| -> Result<PathBuf> {
        let pin = pins.join(name);
        netns::pin(Path::new(&format!("/proc/thread-self/ns/{name}")), &pin)?;
        Ok(pin)
    };
    if flags.contains(CloneFlags::CLONE_NEWUTS) {
        made.uts = Some(pin("uts")?);
    }
    if flags.contains(CloneFlags::CLONE_NEWIPC) {
        made.ipc = Some(pin("ipc")?);
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        made.net = Some(pin("net")?);
    }
    Ok(())
}

/// Written from inside the pod's namespaces: `/proc/sys/net` and the ipc sysctls are those of
/// the writer's namespaces, so the host's values are never touched.
fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    written.map_err(|source| SupervisorError::Sysctl {
        sysctl: format!("{key}={value}"),
        path,
        source,
    })
}

/// Unpins whatever [`make`] pinned for the pod and removes the pin directory; missing pins
/// (never made, or gone with a reboot) are fine. Before any `remove_dir_all` of the pod
/// directory: removing a mount point fails, and nothing must be deleted through a mount.
pub fn release(dir: &PodDir) {
    let pins = pin_dir(dir);
    for name in ["uts", "ipc", "net"] {
        if let Err(e) = netns::unpin(&pins.join(name)) {
            log::warn!("{e}");
        }
    }
    match std::fs::remove_dir(&pins) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            log::warn!("remove {}: {e}", pins.display());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_to_procfs_with_dots_and_slashes_swapped() {
        assert_eq!(
            sysctl_path("kernel.shm_rmid_forced"),
            Path::new("/proc/sys/kernel/shm_rmid_forced")
        );
        // The kubelet's dotted form of net/ipv4/conf/eth0.100/forwarding.
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.forwarding"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }
}
