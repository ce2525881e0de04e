//! What this device offers, discovered once at start: the kubelet's node object.

use std::path::Path;

use crate::runtime::readings::fs_stats;
use crate::runtime::spec::seccomp::SeccompNode;
use crate::runtime::spec::{Allocatable, NodeInfo, Quantity};

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
