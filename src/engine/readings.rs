//! What the agent measures on the node each housekeeping interval, handed to the engine as
//! [`super::Observed::NodeReadings`]: the kubelet's stats summary, cut to what admission and
//! eviction use. Byte counts are `u64` as read; `None` means "could not be read".

use std::collections::BTreeMap;

/// One housekeeping round's measurements.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeReadings {
    /// `MemTotal` and `MemAvailable` of /proc/meminfo.
    pub memory: Option<MemoryReading>,
    /// The state directory's filesystem (nodefs; images live there too, so it is imagefs).
    pub fs: Option<FsReading>,
    /// The kernel's pid limit and what is left of it.
    pub pids: Option<PidReading>,
    /// Per pod UID, for pods the agent could measure.
    pub pods: BTreeMap<String, PodUsage>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    pub capacity: u64,
    pub available: u64,
}

/// `kernel.pid_max` (or `kernel.threads-max` if lower) and that minus the tasks that exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidReading {
    pub capacity: u64,
    pub available: u64,
}

/// `statvfs`: bytes available to unprivileged users (`f_bavail`), inodes free (`f_favail`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsReading {
    pub capacity: u64,
    pub available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// Bytes and inodes under a directory tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

impl std::ops::AddAssign for DiskUsage {
    fn add_assign(&mut self, o: DiskUsage) {
        self.bytes += o.bytes;
        self.inodes += o.inodes;
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    /// Working set of the pod cgroup (usage - inactive_file, like cadvisor).
    pub memory: Option<u64>,
    /// Tasks (processes and threads) in the pod cgroup: `pids.current`.
    pub processes: Option<u64>,
    /// Per container name: its newest instance.
    pub containers: BTreeMap<String, ContainerUsage>,
    /// Disk-backed emptyDir volumes, by volume name (measured when the pod has a `sizeLimit`
    /// or an ephemeral-storage limit, or the node is short of disk).
    pub volumes: BTreeMap<String, DiskUsage>,
    /// Whether the disk figures (`rootfs`, `logs`, `volumes`) were measured this round.
    pub disk: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    pub memory: Option<u64>,
    /// The instance's writable layer (overlay upper dir).
    pub rootfs: Option<DiskUsage>,
    /// The instance's CRI log files.
    pub logs: Option<DiskUsage>,
}

impl PodUsage {
    /// Containers' writable layers and logs plus local volumes: the pod's ephemeral storage
    /// as the kubelet's `podDiskUsage` counts it for nodefs (or inodes with `inodes`).
    pub fn disk_total(&self, inodes: bool) -> u64 {
        let pick = |d: &DiskUsage| if inodes { d.inodes } else { d.bytes };
        let containers: u64 = self
            .containers
            .values()
            .map(|c| c.rootfs.as_ref().map_or(0, pick) + c.logs.as_ref().map_or(0, pick))
            .sum();
        containers + self.volumes.values().map(pick).sum::<u64>()
    }
}

/// An extended resource's devices, as its device plugin lists them: all of them (capacity)
/// and the healthy ones (allocatable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCount {
    pub capacity: u64,
    pub allocatable: u64,
}
