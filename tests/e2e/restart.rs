//! Restarting the agent must not restart running containers.

use std::time::Duration;

use crate::support::{container_status, phase, pod, Agent, T};

fn container_pid(agent: &Agent, pod: &str) -> i32 {
    let uid = agent.pod(pod).unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
    let status =
        agent.state.join("pods").join(uid).join("containers").join("app.0").join("status.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(status).unwrap()).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

#[test]
fn kill_9_of_the_agent_keeps_pods_running_and_adopted() {
    let _guard = crate::support::shared();
    let mut agent = Agent::start();
    let probe =
        "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n";
    agent.apply("keep.yaml", &pod("keep", "sleep 3600", probe, ""));
    agent.apply("crash.yaml", &pod("crash", "sleep 1; exit 1", "", "  restartPolicy: Never\n"));
    agent
        .apply("gone.yaml", &pod("gone", "sleep 3600", "", "  terminationGracePeriodSeconds: 1\n"));
    let before = agent.wait_pod("keep", T, |p| container_status(p, "app")["ready"] == true);
    agent.wait_pod("gone", T, |p| phase(p) == "Running");
    let pid = container_pid(&agent, "keep");
    let started = container_status(&before, "app")["state"]["running"]["startedAt"].clone();

    agent.kill();
    // While the agent is down: one manifest vanishes, one is added, one pod's container exits.
    agent.delete("gone.yaml");
    agent.apply("new.yaml", &pod("new", "sleep 3600", "", ""));
    std::thread::sleep(Duration::from_secs(2));
    agent.spawn();

    let after = agent.wait_pod("keep", T, |p| container_status(p, "app")["ready"] == true);
    assert_eq!(container_pid(&agent, "keep"), pid, "the running container was restarted");
    assert_eq!(container_status(&after, "app")["restartCount"], 0);
    assert_eq!(container_status(&after, "app")["state"]["running"]["startedAt"], started);
    let crash = agent.wait_pod("crash", T, |p| phase(p) == "Failed");
    assert_eq!(container_status(&crash, "app")["state"]["terminated"]["exitCode"], 1);
    agent.wait_pod("new", T, |p| phase(p) == "Running");
    agent.wait_gone("gone", T);
}

/// The agent and the pod's supervisor killed together (an OOM kill of the service's processes,
/// `pkill -9 outpost`): the container runs on with no parent that could ever report its exit.
/// The kubelet reports such a container `ContainerStatusUnknown` (exit 137) and recreates the
/// pod; outpost must too, and kill the orphan, rather than wait forever for an exit.
#[test]
fn a_container_whose_supervisor_died_with_the_agent_is_reported_lost_killed_and_restarted() {
    let _guard = crate::support::shared();
    let mut agent = Agent::start();
    agent.apply("lost.yaml", &pod("lost", "sleep 3600", "", ""));
    agent.wait_pod("lost", T, |p| phase(p) == "Running");
    let pid = container_pid(&agent, "lost");

    agent.kill();
    for s in agent.supervisors() {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(s, libc::SIGKILL) };
    }
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let start = std::time::Instant::now();
    while !agent.supervisors().is_empty() && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(alive(pid), "the container died with its supervisor: nothing to test");
    agent.spawn();

    let p = agent.wait_pod("lost", T, |p| {
        let c = container_status(p, "app");
        c["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
            && c["state"]["running"].is_object()
    });
    let last = &container_status(&p, "app")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137);
    assert_eq!(last["message"], "The container could not be located when the pod was terminated");
    assert_eq!(container_status(&p, "app")["restartCount"], 1, "{}", container_status(&p, "app"));
    let start = std::time::Instant::now();
    while alive(pid) && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the orphaned container process {pid} still runs");
}

/// The same with the agent running: its supervisor connection breaks (`SupervisorLost`).
#[test]
fn a_container_whose_supervisor_died_is_reported_lost_killed_and_restarted() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("lost2.yaml", &pod("lost2", "sleep 3600", "", ""));
    agent.wait_pod("lost2", T, |p| phase(p) == "Running");
    let pid = container_pid(&agent, "lost2");
    for s in agent.supervisors() {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(s, libc::SIGKILL) };
    }
    let p = agent.wait_pod("lost2", T, |p| {
        let c = container_status(p, "app");
        c["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
            && c["state"]["running"].is_object()
    });
    assert_eq!(container_status(&p, "app")["restartCount"], 1, "{}", container_status(&p, "app"));
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let start = std::time::Instant::now();
    while alive(pid) && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the orphaned container process {pid} still runs");
}
