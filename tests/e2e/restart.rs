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
