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

/// The supervisor leaves the agent's cgroups for `<pod>/supervisor` in every hierarchy, so
/// stopping the agent's unit never takes pods down; the container's init is in its own leaf
/// wherever libcontainer places it, and elsewhere (name=systemd, a hybrid host's unified) in
/// the supervisor's.
#[test]
fn the_supervisor_and_its_container_leave_the_agents_cgroups() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("leaf.yaml", &pod("leaf", "sleep 3600", "", ""));
    let p = agent.wait_pod("leaf", T, |p| phase(p) == "Running");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cgroups = |pid: u32| -> Vec<(String, String)> {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                Some((controllers.to_string(), path.to_string()))
            })
            .collect()
    };
    let agent_pid = agent.pid().unwrap();
    let [sup] = agent.supervisors()[..] else { panic!("one supervisor expected") };
    let leaf = format!("/outpost/besteffort/{uid}/supervisor");
    for (controllers, path) in cgroups(sup as u32) {
        if controllers == "cpuset" {
            continue;
        }
        assert_eq!(path, leaf, "supervisor in hierarchy {controllers:?}");
    }
    let agents: Vec<(String, String)> = cgroups(agent_pid);
    assert!(agents.iter().all(|(_, path)| !path.contains(&uid)), "{agents:?}");
    let init = container_status(&p, "app")["containerID"].as_str().unwrap_or_default().to_string();
    let pid: u32 = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children"))
        .unwrap()
        .split_whitespace()
        .find_map(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("the supervisor has no child ({init})"));
    for (controllers, path) in cgroups(pid) {
        assert!(
            path == leaf
                || path == format!("/outpost/besteffort/{uid}/app.0")
                || controllers == "cpuset",
            "container init in {controllers:?} at {path}"
        );
        if controllers.contains("memory") {
            assert_eq!(path, format!("/outpost/besteffort/{uid}/app.0"));
        }
    }
}
