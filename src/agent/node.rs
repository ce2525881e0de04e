//! What this device offers, discovered once at start: the kubelet's node object, its
//! capacity and allocatable (allocatable also replaces capacity as the downward API's default
//! for unset limits, as in the kubelet).

use std::path::Path;

use crate::engine::{parse_kernel, Kernel, NodeConfig, ResourceList, SysctlAllowlist, Threshold};
use crate::quantity::Quantity;
use crate::runtime::readings::{self, fs_stats};
use crate::runtime::spec::seccomp::SeccompNode;
use crate::runtime::spec::{Allocatable, NodeInfo};

use super::config::NodeSettings;

/// `seccomp_default`: `--seccomp-default`.
pub fn discover(state_dir: &Path, seccomp_default: bool) -> NodeInfo {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let memory = mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let storage = fs_stats(state_dir).map_or(0, |f| i64::try_from(f.capacity).unwrap_or(i64::MAX));
    NodeInfo {
        name,
        host_ips: host_ips(),
        allocatable: Allocatable {
            cpu: Quantity::from_units(cpus),
            memory: Quantity::from_units(memory),
            ephemeral_storage: Quantity::from_units(storage),
        },
        memory_capacity: memory,
        seccomp: SeccompNode::new(seccomp_default, state_dir),
    }
}

/// The running kernel's `major.minor` (which safe sysctls it namespaces).
fn kernel_version() -> Option<Kernel> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel(release.trim())
}

/// The device's node facts with allocatable applied, and the engine's node configuration:
/// capacity (cores, `MemTotal`, the state filesystem's size) less what the flags reserve.
pub fn capacity(settings: &NodeSettings, state: &Path) -> (NodeInfo, NodeConfig) {
    let mut info = discover(state, settings.seccomp_default);
    let memory = readings::meminfo(&settings.meminfo).map_or(info.memory_capacity, |m| m.0 as i64);
    info.memory_capacity = memory;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i128;
    let storage = readings::fs_stats(state).map_or(0, |f| f.capacity as i128);
    let config = NodeConfig {
        capacity: ResourceList {
            cpu_milli: cores * 1000,
            memory: i128::from(memory),
            ephemeral_storage: storage,
        },
        system_reserved: settings.system_reserved,
        kube_reserved: settings.kube_reserved,
        eviction_hard: settings.eviction_hard.clone(),
        max_pods: settings.max_pods,
        pressure_transition: settings.pressure_transition,
        sysctls: SysctlAllowlist::new(kernel_version(), &settings.allowed_unsafe_sysctls),
        labels: super::node_object::labels(&info.name, &settings.labels),
        name: info.name.clone(),
    };
    let a = config.allocatable();
    let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    info.allocatable = Allocatable {
        cpu: Quantity::from_millis(clamp(a.cpu_milli)),
        memory: Quantity::from_units(clamp(a.memory)),
        ephemeral_storage: Quantity::from_units(clamp(a.ephemeral_storage)),
    };
    log::info!(
        "node: capacity cpu={}m memory={} ephemeral-storage={}; allocatable cpu={}m memory={} ephemeral-storage={}; eviction-hard {}",
        config.capacity.cpu_milli,
        config.capacity.memory,
        config.capacity.ephemeral_storage,
        a.cpu_milli,
        a.memory,
        a.ephemeral_storage,
        config.eviction_hard.iter().map(Threshold::to_string).collect::<Vec<_>>().join(",")
    );
    (info, config)
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> i64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Global IPv4 addresses of interfaces that are up, the first being the primary (`hostIP`).
fn host_ips() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut ips = Vec::new();
    for a in addrs {
        let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let loopback = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
        if !up
            || loopback
            || a.interface_name.starts_with("outpost")
            || a.interface_name.starts_with("veth")
        {
            continue;
        }
        if let Some(ip) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip()) {
            if !ips.contains(&ip.to_string()) {
                ips.push(ip.to_string());
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_total_is_read_in_bytes() {
        assert_eq!(
            super::mem_total("MemFree: 1 kB\nMemTotal:       24576000 kB\n"),
            24576000 * 1024
        );
        assert_eq!(super::mem_total("garbage"), 0);
    }
}
