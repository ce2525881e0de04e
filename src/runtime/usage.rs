//! Per-pod and per-container resource usage, read from the cgroup tree: cumulative CPU time and
//! the memory working set, the two figures the kubelet's resource metrics (and so `kubectl
//! top`) and its memory-pressure eviction use.
//!
//! ```text
//!             cgroup v1 (and hybrid)                      cgroup v2
//! cpu         cpuacct/<cg>/cpuacct.usage (ns)             <cg>/cpu.stat usage_usec (µs)
//! memory      memory/<cg>/memory.usage_in_bytes           <cg>/memory.current
//! inactive    memory/<cg>/memory.stat total_inactive_file <cg>/memory.stat inactive_file
//! ```
//! The working set is usage minus inactive file pages, floored at 0, as cadvisor computes it:
//! page cache the kernel can drop at no cost does not count. A hybrid host (v1 controllers, a
//! v2 `unified` mount holding no cpu or memory controller) reads like v1.
//!
//! Three small reads per cgroup, no process spawned. The cgroup root is a parameter so tests
//! run on a fake tree.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::types::InstanceId;
use crate::engine::QosClass;

/// Where cgroup hierarchies are mounted on a real host.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The cgroup is gone or was never created: the pod or container does not run.
    #[error("no cgroup at {path}: not running")]
    NotFound { path: PathBuf },
    /// A cgroup file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A cgroup file holds something other than the kernel's format.
    #[error("{path}: no {field} value in the kernel's format")]
    Parse { path: PathBuf, field: &'static str },
}

pub type Result<T, E = UsageError> = std::result::Result<T, E>;

/// One reading of a cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since the cgroup was created, in nanoseconds (a counter).
    pub cpu_usage_ns: u64,
    /// All memory charged to the cgroup, page cache included.
    pub memory_usage_bytes: u64,
    /// `memory_usage_bytes` minus inactive file pages: what `kubectl top` shows and what
    /// memory-pressure eviction ranks by.
    pub memory_working_set_bytes: u64,
}

/// The cgroup hierarchies under a root, as far as cpu and memory go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per controller (also hybrid hosts).
    V1 { cpuacct: PathBuf, memory: PathBuf },
    /// The unified hierarchy.
    V2 { root: PathBuf },
}

impl Layout {
    /// A root with `cgroup.controllers` is v2; anything else is read as v1, where cpuacct is
    /// usually comounted with cpu (`cpu,cpuacct`, with a `cpuacct` alias most distributions
    /// add).
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            return Self::V2 { root: root.to_path_buf() };
        }
        let cpuacct = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .map(|name| root.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| root.join("cpuacct"));
        Self::V1 { cpuacct, memory: root.join("memory") }
    }

    /// Reads one cgroup, given relative to each hierarchy's root (like `/outpost/<uid>`).
    pub fn read(&self, cgroup: &Path) -> Result<Usage> {
        let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
        match self {
            Self::V1 { cpuacct, memory } => {
                let (cpu_dir, mem_dir) = (cpuacct.join(rel), memory.join(rel));
                let cpu_file = cpu_dir.join("cpuacct.usage");
                let cpu_usage_ns = parse_u64(&read(&cpu_file)?, &cpu_file, "cpuacct.usage")?;
                let usage_file = mem_dir.join("memory.usage_in_bytes");
                let usage = parse_u64(&read(&usage_file)?, &usage_file, "memory.usage_in_bytes")?;
                let stat = mem_dir.join("memory.stat");
                let inactive = keyed(&read(&stat)?, "total_inactive_file")
                    .ok_or(UsageError::Parse { path: stat, field: "total_inactive_file" })?;
                Ok(Usage::new(cpu_usage_ns, usage, inactive))
            }
            Self::V2 { root } => {
                let dir = root.join(rel);
                let cpu_file = dir.join("cpu.stat");
                let usec = keyed(&read(&cpu_file)?, "usage_usec")
                    .ok_or(UsageError::Parse { path: cpu_file, field: "usage_usec" })?;
                let current = dir.join("memory.current");
                let usage = parse_u64(&read(&current)?, &current, "memory.current")?;
                let stat = dir.join("memory.stat");
                let inactive = keyed(&read(&stat)?, "inactive_file")
                    .ok_or(UsageError::Parse { path: stat, field: "inactive_file" })?;
                Ok(Usage::new(usec.saturating_mul(1000), usage, inactive))
            }
        }
    }
}

impl Usage {
    fn new(cpu_usage_ns: u64, memory_usage_bytes: u64, inactive_file: u64) -> Self {
        Self {
            cpu_usage_ns,
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
        }
    }
}

/// The whole pod: its cgroup holds the supervisor, the pause process and every container.
pub fn pod_usage(root: &Path, pod_cgroup: &Path) -> Result<Usage> {
    Layout::detect(root).read(pod_cgroup)
}

/// One container instance: the `<name>.<attempt>` leaf under the pod cgroup.
pub fn container_usage(root: &Path, pod_cgroup: &Path, id: &InstanceId) -> Result<Usage> {
    Layout::detect(root).read(&pod_cgroup.join(id.key()))
}

/// Tasks (processes and threads) in a cgroup and below it: `pids.current` of the pids
/// controller (`<root>/pids/<cg>` on v1). `None` without that controller.
pub fn processes(root: &Path, cgroup: &Path) -> Option<u64> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let dir = match Layout::detect(root) {
        Layout::V2 { root } => root.join(rel),
        Layout::V1 { .. } => root.join("pids").join(rel),
    };
    std::fs::read_to_string(dir.join("pids.current")).ok()?.trim().parse().ok()
}

/// The kubelet's cgroup tree, named after outpost: Guaranteed pods directly under `/outpost`,
/// the others under `/outpost/burstable` and `/outpost/besteffort`.
pub fn qos_cgroup_parent(pod: &Pod) -> PathBuf {
    match QosClass::of(pod) {
        Ok(QosClass::Guaranteed) => PathBuf::from("/outpost"),
        Ok(QosClass::Burstable) => PathBuf::from("/outpost/burstable"),
        Ok(QosClass::BestEffort) | Err(_) => PathBuf::from("/outpost/besteffort"),
    }
}

/// A pod's cgroup (relative to each hierarchy's root), from its QoS class and UID.
pub fn pod_cgroup(pod: &Pod) -> Option<PathBuf> {
    let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    Some(qos_cgroup_parent(pod).join(uid))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            UsageError::NotFound { path: path.parent().unwrap_or(path).to_path_buf() }
        }
        _ => UsageError::Read { path: path.to_path_buf(), source },
    })
}

fn parse_u64(text: &str, path: &Path, field: &'static str) -> Result<u64> {
    text.trim().parse().map_err(|_| UsageError::Parse { path: path.to_path_buf(), field })
}

/// The value of `key` in a flat-keyed file (`key value` per line, like memory.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_come_from_the_pids_controller() {
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "pids/outpost/u1", "pids.current", "17\n");
        assert_eq!(processes(v1.path(), Path::new("/outpost/u1")), Some(17));
        assert_eq!(processes(v1.path(), Path::new("/outpost/u2")), None);
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "", "cgroup.controllers", "cpu memory pids\n");
        write(v2.path(), "outpost/u1", "pids.current", "3\n");
        assert_eq!(processes(v2.path(), Path::new("/outpost/u1")), Some(3));
    }

    fn write(root: &Path, rel: &str, file: &str, text: &str) {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// What a v1 kernel shows (abridged memory.stat: the local counters come first, the
    /// hierarchical `total_` ones after; only `total_inactive_file` counts).
    fn v1_tree(root: &Path, cg: &str, cpu_ns: u64, usage: u64, inactive: u64) {
        write(root, &format!("cpu,cpuacct/{cg}"), "cpuacct.usage", &format!("{cpu_ns}\n"));
        write(root, &format!("memory/{cg}"), "memory.usage_in_bytes", &format!("{usage}\n"));
        write(
            root,
            &format!("memory/{cg}"),
            "memory.stat",
            &format!(
                "cache 999\nrss 1\ninactive_file 7\nactive_file 8\n\
                 total_cache 4096\ntotal_rss 2\ntotal_inactive_file {inactive}\n\
                 total_active_file 12288\n"
            ),
        );
    }

    fn v2_tree(root: &Path, cg: &str, usec: u64, current: u64, inactive: u64) {
        write(root, "", "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        write(
            root,
            cg,
            "cpu.stat",
            &format!(
                "usage_usec {usec}\nuser_usec 100\nsystem_usec 23\nnr_periods 0\n\
                 nr_throttled 0\nthrottled_usec 0\n"
            ),
        );
        write(root, cg, "memory.current", &format!("{current}\n"));
        write(
            root,
            cg,
            "memory.stat",
            &format!(
                "anon 1\nfile 8192\nkernel 0\nshmem 0\nactive_anon 1\n\
                 inactive_file {inactive}\nactive_file 4096\nunevictable 0\n"
            ),
        );
    }

    #[test]
    fn v1_reads_cpuacct_and_working_set() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // The cpuacct name is the comounted hierarchy's alias, as on Debian and systemd hosts.
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
        v1_tree(root, "outpost/burstable/u1", 5_000_000_000, 25_165_824, 4_194_304);
        v1_tree(root, "outpost/burstable/u1/app.2", 1_234_567_890, 20_971_520, 1_048_576);
        assert_eq!(
            Layout::detect(root),
            Layout::V1 { cpuacct: root.join("cpuacct"), memory: root.join("memory") }
        );
        let pod = Path::new("/outpost/burstable/u1");
        assert_eq!(
            pod_usage(root, pod).unwrap(),
            Usage {
                cpu_usage_ns: 5_000_000_000,
                memory_usage_bytes: 25_165_824,
                memory_working_set_bytes: 20_971_520,
            }
        );
        assert_eq!(
            container_usage(root, pod, &InstanceId::new("app", 2)).unwrap(),
            Usage {
                cpu_usage_ns: 1_234_567_890,
                memory_usage_bytes: 20_971_520,
                memory_working_set_bytes: 19_922_944,
            }
        );
    }

    #[test]
    fn v2_reads_cpu_stat_in_microseconds_and_working_set() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        v2_tree(root, "outpost/u2", 3_000_123, 12_582_912, 8_192);
        v2_tree(root, "outpost/u2/web.0", 2_500_000, 8_388_608, 4_096);
        assert_eq!(Layout::detect(root), Layout::V2 { root: root.to_path_buf() });
        let pod = Path::new("/outpost/u2");
        assert_eq!(
            pod_usage(root, pod).unwrap(),
            Usage {
                cpu_usage_ns: 3_000_123_000,
                memory_usage_bytes: 12_582_912,
                memory_working_set_bytes: 12_574_720,
            }
        );
        assert_eq!(
            container_usage(root, pod, &InstanceId::new("web", 0)).unwrap(),
            Usage {
                cpu_usage_ns: 2_500_000_000,
                memory_usage_bytes: 8_388_608,
                memory_working_set_bytes: 8_384_512,
            }
        );
    }

    #[test]
    fn v1_without_the_cpuacct_alias_reads_the_comounted_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        v1_tree(tmp.path(), "outpost/u6", 7, 10, 2);
        let u = pod_usage(tmp.path(), Path::new("/outpost/u6")).unwrap();
        assert_eq!((u.cpu_usage_ns, u.memory_working_set_bytes), (7, 8));
    }

    #[test]
    fn hybrid_hosts_read_the_v1_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // systemd's hybrid layout: a v2 mount at `unified` without cpu or memory.
        write(root, "unified", "cgroup.controllers", "hugetlb\n");
        std::fs::create_dir_all(root.join("cpuacct")).unwrap();
        v1_tree(root, "outpost/u3", 42, 100, 10);
        std::fs::rename(root.join("cpu,cpuacct/outpost"), root.join("cpuacct/outpost")).unwrap();
        let u = pod_usage(root, Path::new("outpost/u3")).unwrap();
        assert_eq!((u.cpu_usage_ns, u.memory_working_set_bytes), (42, 90));
    }

    #[test]
    fn inactive_file_above_usage_floors_the_working_set_at_zero() {
        let tmp = tempfile::tempdir().unwrap();
        v2_tree(tmp.path(), "p", 1, 4096, 8192);
        assert_eq!(pod_usage(tmp.path(), Path::new("p")).unwrap().memory_working_set_bytes, 0);
    }

    #[test]
    fn missing_cgroups_and_garbage_are_errors_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        v2_tree(root, "outpost/u4", 1, 2, 0);
        match container_usage(root, Path::new("/outpost/u4"), &InstanceId::new("gone", 0)) {
            Err(UsageError::NotFound { path }) => assert_eq!(path, root.join("outpost/u4/gone.0")),
            other => panic!("expected NotFound, got {other:?}"),
        }
        write(root, "outpost/u4", "memory.current", "max\n");
        match pod_usage(root, Path::new("/outpost/u4")) {
            Err(UsageError::Parse { path, field: "memory.current" }) => {
                assert_eq!(path, root.join("outpost/u4/memory.current"))
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        write(root, "outpost/u4", "memory.current", "2\n");
        write(root, "outpost/u4", "cpu.stat", "user_usec 1\n");
        assert!(matches!(
            pod_usage(root, Path::new("/outpost/u4")),
            Err(UsageError::Parse { field: "usage_usec", .. })
        ));
    }

    #[test]
    fn pod_cgroups_follow_the_qos_class() {
        let pod = |resources: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "uid": "u5"},
                "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]},
            }))
            .unwrap()
        };
        let limited = serde_json::json!({
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        });
        assert_eq!(pod_cgroup(&pod(limited)), Some(PathBuf::from("/outpost/u5")));
        let requested = serde_json::json!({"requests": {"memory": "1Gi"}});
        assert_eq!(pod_cgroup(&pod(requested)), Some(PathBuf::from("/outpost/burstable/u5")));
        assert_eq!(
            pod_cgroup(&pod(serde_json::json!({}))),
            Some(PathBuf::from("/outpost/besteffort/u5"))
        );
    }
}
