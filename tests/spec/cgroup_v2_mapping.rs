//! Requests and limits → cgroup v2 files, end to end without a v2 host: the `linux.resources`
//! our spec module builds for real pods, applied by libcontainer's own v2 cgroup manager
//! (`libcgroups::v2::manager::Manager`, the code that runs on a v2 device) to a fake cgroupfs
//! tree in a tempdir, then the files read back. The v1 files are the OCI values 1:1
//! (libcgroups v1 writes them unconverted); `tests/e2e_resources.rs` checks them on the real
//! v1 host.
//!
//! Two findings this pins down:
//! - cpu.weight uses the quadratic shares→weight conversion (runc ≥ 1.3.2 and crun ≥ 1.23
//!   after kubernetes/kubernetes#131216), not runc's older linear `1 + ((shares-2)*9999)/262142`;
//!   the kubelet's own e2e tests accept either. Both are listed below for comparison.
//! - memory.swap.max: libcontainer writes nothing when swap == limit (runc writes "0"), so a
//!   limited container could swap on a v2 host with swap. `disable_swap_v2` (the kubelet's
//!   NoSwap: `unified["memory.swap.max"] = "0"`) closes that; the supervisor applies it where
//!   the kernel offers memory.swap.max.

use std::path::{Path, PathBuf};

use crate::support::{pod_with, Case};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use outpost::runtime::spec::disable_swap_v2;
use serde_json::json;

/// The leaf's files as a fresh v2 cgroup shows them. libcgroups opens without truncating (the
/// kernel replaces the value on each write), so files start empty and an empty file afterwards
/// means "not written: the kernel default stays". `cpu.max` is read for a period-only update
/// and starts with its real default.
const LEAF_FILES: [(&str, &str); 7] = [
    ("cpu.weight", ""),
    ("cpu.max", "max 100000"),
    ("memory.max", ""),
    ("memory.swap.max", ""),
    ("memory.low", ""),
    ("pids.max", ""),
    ("cpuset.cpus", ""),
];

struct FakeCgroupfs {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl FakeCgroupfs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n")
            .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        Self { _dir: dir, root }
    }

    /// Applies `resources` to `cgroup` with libcontainer's v2 manager; returns each leaf file,
    /// `None` where nothing was written (cpu.max: its value either way).
    fn apply(
        &self,
        cgroup: &str,
        resources: &LinuxResources,
    ) -> Vec<(&'static str, Option<String>)> {
        let leaf = self.root.join(cgroup.trim_start_matches('/'));
        std::fs::create_dir_all(&leaf).unwrap();
        for (file, initial) in LEAF_FILES {
            std::fs::write(leaf.join(file), initial).unwrap();
        }
        let manager =
            libcgroups::v2::manager::Manager::new(self.root.clone(), PathBuf::from(cgroup))
                .expect("v2 manager on the fake tree");
        let opt = ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        manager.apply(&opt).expect("libcontainer applies the resources");
        LEAF_FILES
            .iter()
            .map(|(file, _)| {
                let text = std::fs::read_to_string(leaf.join(file)).unwrap();
                let text = text.trim();
                (*file, (!text.is_empty()).then(|| text.to_string()))
            })
            .collect()
    }
}

/// `linux.resources` of the pod's first container, as the supervisor receives it.
fn resources(resources: serde_json::Value) -> LinuxResources {
    let spec = Case::new(pod_with(json!({"resources": resources}))).build().unwrap();
    spec.spec.linux().as_ref().unwrap().resources().clone().unwrap()
}

fn written<'a>(files: &'a [(&str, Option<String>)], name: &str) -> Option<&'a str> {
    files.iter().find(|(f, _)| *f == name).and_then(|(_, v)| v.as_deref())
}

/// One pod: its v1 values (from the OCI resources) and what libcontainer wrote on v2.
struct Expect {
    name: &'static str,
    resources: serde_json::Value,
    cgroup: &'static str,
    // v1: cpu.shares, cpu.cfs_quota_us (None: -1, unlimited), memory.limit_in_bytes and
    // memory.memsw.limit_in_bytes (None: unlimited).
    shares: u64,
    quota: Option<i64>,
    memory: Option<i64>,
    // v2.
    weight: &'static str,
    linear_weight: u64,
    cpu_max: &'static str,
    memory_max: Option<&'static str>,
}

fn cases() -> Vec<Expect> {
    vec![
        Expect {
            name: "guaranteed",
            resources: json!({
                "requests": {"cpu": "500m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "64Mi"},
            }),
            cgroup: "/outpost/uid-g/app.0",
            shares: 512,
            quota: Some(50_000),
            memory: Some(67_108_864),
            weight: "59",
            linear_weight: 20,
            cpu_max: "50000 100000",
            memory_max: Some("67108864"),
        },
        Expect {
            name: "burstable with cpu and memory limits",
            resources: json!({
                "requests": {"cpu": "100m", "memory": "32Mi"},
                "limits": {"cpu": "1", "memory": "128Mi"},
            }),
            cgroup: "/outpost/burstable/uid-b/app.0",
            shares: 102,
            quota: Some(100_000),
            memory: Some(134_217_728),
            weight: "17",
            linear_weight: 4,
            cpu_max: "100000 100000",
            memory_max: Some("134217728"),
        },
        Expect {
            name: "burstable with a cpu request only",
            resources: json!({"requests": {"cpu": "1"}}),
            cgroup: "/outpost/burstable/uid-c/app.0",
            shares: 1024,
            quota: None,
            memory: None,
            weight: "100",
            linear_weight: 39,
            // Period only: libcontainer keeps the current quota ("max") and sets the period.
            cpu_max: "max 100000",
            memory_max: None,
        },
        Expect {
            name: "besteffort",
            resources: json!({}),
            cgroup: "/outpost/besteffort/uid-e/app.0",
            shares: 2,
            quota: None,
            memory: None,
            weight: "1",
            linear_weight: 1,
            cpu_max: "max 100000",
            memory_max: None,
        },
    ]
}

#[test]
fn v1_values_are_the_kubelets() {
    for e in cases() {
        let r = resources(e.resources.clone());
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(e.shares), "{}: cpu.shares", e.name);
        assert_eq!(cpu.period(), Some(100_000), "{}: cpu.cfs_period_us", e.name);
        assert_eq!(cpu.quota(), e.quota, "{}: cpu.cfs_quota_us", e.name);
        let memory = r.memory().as_ref();
        assert_eq!(memory.and_then(|m| m.limit()), e.memory, "{}: memory.limit_in_bytes", e.name);
        // memsw = limit: no swap beyond the limit, the kubelet's NoSwap on v1.
        assert_eq!(memory.and_then(|m| m.swap()), e.memory, "{}: memory.memsw", e.name);
        assert_eq!(r.pids(), &None, "{}: no pids limit (the kubelet sets it per pod)", e.name);
        assert_eq!(r.unified(), &None, "{}: nothing v2-only in the spec", e.name);
    }
}

#[test]
fn libcontainer_writes_these_v2_files() {
    let fs = FakeCgroupfs::new();
    for e in cases() {
        let files = fs.apply(e.cgroup, &resources(e.resources.clone()));
        assert_eq!(written(&files, "cpu.weight"), Some(e.weight), "{}: cpu.weight", e.name);
        let linear = 1 + ((e.shares - 2) * 9999) / 262_142;
        assert_eq!(linear, e.linear_weight, "{}: runc's older linear weight", e.name);
        assert_eq!(written(&files, "cpu.max"), Some(e.cpu_max), "{}: cpu.max", e.name);
        assert_eq!(written(&files, "memory.max"), e.memory_max, "{}: memory.max", e.name);
        // swap == limit is "swap.max 0" for runc, nothing at all for libcontainer.
        assert_eq!(written(&files, "memory.swap.max"), None, "{}: memory.swap.max", e.name);
        for untouched in ["memory.low", "pids.max", "cpuset.cpus"] {
            assert_eq!(written(&files, untouched), None, "{}: {untouched}", e.name);
        }
    }
}

#[test]
fn disable_swap_v2_writes_swap_max_zero_like_the_kubelet() {
    let fs = FakeCgroupfs::new();
    for e in cases() {
        let mut r = resources(e.resources.clone());
        disable_swap_v2(&mut r);
        let files = fs.apply(e.cgroup, &r);
        // Every container, limited or not, as the kubelet's NoSwap does.
        assert_eq!(written(&files, "memory.swap.max"), Some("0"), "{}", e.name);
        assert_eq!(written(&files, "memory.max"), e.memory_max, "{}", e.name);
        assert_eq!(written(&files, "cpu.max"), Some(e.cpu_max), "{}", e.name);
    }
}

#[test]
fn disable_swap_v2_keeps_other_unified_keys() {
    let mut r = resources(json!({}));
    let mut unified = std::collections::HashMap::new();
    unified.insert("memory.high".to_string(), "1000".to_string());
    r.set_unified(Some(unified));
    disable_swap_v2(&mut r);
    let mut keys: Vec<(String, String)> = r.unified().clone().unwrap().into_iter().collect();
    keys.sort();
    assert_eq!(
        keys,
        [("memory.high".into(), "1000".into()), ("memory.swap.max".into(), "0".into())]
    );
}

#[test]
fn a_missing_cgroup_file_is_an_error_not_a_silent_skip() {
    // What a v2 host without swap accounting looks like to the unified key: no such file.
    let fs = FakeCgroupfs::new();
    let leaf = fs.root.join("outpost/uid-x/app.0");
    std::fs::create_dir_all(&leaf).unwrap();
    for (file, initial) in LEAF_FILES.iter().filter(|(f, _)| *f != "memory.swap.max") {
        std::fs::write(leaf.join(file), initial).unwrap();
    }
    let mut r = resources(json!({}));
    disable_swap_v2(&mut r);
    let manager = libcgroups::v2::manager::Manager::new(
        fs.root.clone(),
        Path::new("/outpost/uid-x/app.0").to_path_buf(),
    )
    .unwrap();
    let opt = ControllerOpt {
        resources: &r,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    };
    assert!(
        manager.apply(&opt).is_err(),
        "so the supervisor applies it only where the file exists"
    );
}
