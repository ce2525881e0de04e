//! Requests and limits reach the cgroups, QoS classes show in status, OOM kills are reported.

use std::path::PathBuf;

use crate::support::{container_status, phase, pod, Agent, T};

/// A cgroup v1 file of a container instance (CI and this machine are v1 hybrid).
fn cgroup_file(controller: &str, parent: &str, uid: &str, file: &str) -> String {
    let path = PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(parent.trim_start_matches('/'))
        .join(uid)
        .join("app.0")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_reach_the_cgroups_and_qos_classes_are_reported() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let guaranteed =
        pod("gua", "sleep 3600", "    resources:\n      limits: {cpu: 200m, memory: 32Mi}\n", "");
    agent.apply("gua.yaml", &guaranteed);
    agent.apply("be.yaml", &pod("be", "sleep 3600", "", ""));
    agent.apply(
        "bu.yaml",
        &pod("bu", "sleep 3600", "    resources:\n      requests: {memory: 16Mi}\n", ""),
    );
    let g = agent.wait_pod("gua", T, |p| phase(p) == "Running");
    let b = agent.wait_pod("be", T, |p| phase(p) == "Running");
    let u = agent.wait_pod("bu", T, |p| phase(p) == "Running");
    assert_eq!(g["status"]["qosClass"], "Guaranteed");
    assert_eq!(b["status"]["qosClass"], "BestEffort");
    assert_eq!(u["status"]["qosClass"], "Burstable");
    let uid = |p: &serde_json::Value| p["metadata"]["uid"].as_str().unwrap().to_string();
    // runc's conversions: 200m → quota 20000 of period 100000, shares 200*1024/1000 = 204.
    assert_eq!(cgroup_file("memory", "/outpost", &uid(&g), "memory.limit_in_bytes"), "33554432");
    assert_eq!(cgroup_file("cpu", "/outpost", &uid(&g), "cpu.cfs_quota_us"), "20000");
    assert_eq!(cgroup_file("cpu", "/outpost", &uid(&g), "cpu.shares"), "204");
    // BestEffort gets the minimum shares, and lives under its QoS parent.
    assert_eq!(cgroup_file("cpu", "/outpost/besteffort", &uid(&b), "cpu.shares"), "2");
    assert!(
        !cgroup_file("memory", "/outpost/burstable", &uid(&u), "memory.limit_in_bytes").is_empty()
    );
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    // A command substitution keeps its whole output in the shell: 64 MiB against 16 MiB.
    let hog = pod(
        "hog",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}",
        "    resources:\n      limits: {memory: 16Mi}\n",
        "  restartPolicy: Never\n",
    );
    agent.apply("hog.yaml", &hog);
    let p = agent.wait_pod("hog", T, |p| phase(p) == "Failed" || phase(p) == "Succeeded");
    let term = &container_status(&p, "app")["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{term}");
    assert_eq!(term["exitCode"], 137);
    assert_eq!(phase(&p), "Failed");
}
