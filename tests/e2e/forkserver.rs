//! Supervisors come from the agent's fork server (for the supervisors' memory), the agent execs
//! them once the server is gone, and the server never outlives the agent.

use std::time::{Duration, Instant};

use crate::support::{phase, pod, Agent, T};

/// `comm` and parent pid of a process, `None` once it is gone or a zombie.
fn comm_and_ppid(pid: i32) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_string();
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    (state != "Z").then_some((comm, ppid))
}

/// The agent's fork server: its child named `outpost-fork`.
fn fork_server(agent: &Agent) -> Option<i32> {
    let agent_pid = agent.pid()? as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| comm_and_ppid(*pid) == Some(("outpost-fork".into(), agent_pid)))
}

/// The pod's supervisor pid, from its record.
fn supervisor(agent: &Agent, name: &str) -> i32 {
    let uid = agent.pod(name).unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
    let record = agent.state.join("pods").join(uid).join("supervisor.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

fn wait_not_running(pid: i32, what: &str) {
    let start = Instant::now();
    while comm_and_ppid(pid).is_some() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what} (pid {pid}) still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn supervisors_are_forked_by_the_fork_server_and_exec_d_once_it_is_gone() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let server = fork_server(&agent).expect("the agent has a fork server child");
    agent.apply("a.yaml", &pod("a", "sleep 3600", "", ""));
    agent.wait_pod("a", T, |p| phase(p) == "Running");
    let sup = supervisor(&agent, "a");
    let (comm, ppid) = comm_and_ppid(sup).expect("the supervisor runs");
    assert_eq!(comm, "outpost-sup", "a supervisor forked by the fork server is named so");
    assert_ne!(ppid, server, "the supervisor was re-parented away from the fork server");
    // Its command line is the one an exec'd supervisor has (ps, and the tests' own lookups).
    assert!(agent.supervisors().contains(&sup), "`supervise --pod-dir` in its command line");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::SIGKILL).unwrap();
    agent.apply("b.yaml", &pod("b", "sleep 3600", "", ""));
    agent.wait_pod("b", T, |p| phase(p) == "Running");
    let (comm, _) = comm_and_ppid(supervisor(&agent, "b")).expect("the supervisor runs");
    assert_eq!(comm, "outpost", "without the fork server the supervisor is exec'd");
    assert!(
        agent.agent_log().iter().any(|l| l.contains("fork server") && l.contains("is gone")),
        "the fallback is logged"
    );
    // The agent reaped it: no zombie left behind.
    assert!(!std::path::Path::new(&format!("/proc/{server}")).exists(), "fork server reaped");
    assert_eq!(agent.wait_pod("a", T, |p| phase(p) == "Running")["status"]["phase"], "Running");
}

#[test]
fn the_fork_server_dies_with_the_agent_and_its_pods_are_adopted() {
    let _guard = crate::support::shared();
    let mut agent = Agent::start();
    let server = fork_server(&agent).expect("the agent has a fork server child");
    agent.apply("keep.yaml", &pod("keep", "sleep 3600", "", ""));
    agent.wait_pod("keep", T, |p| phase(p) == "Running");
    let sup = supervisor(&agent, "keep");

    agent.kill();
    wait_not_running(server, "the fork server of a killed agent");
    assert!(comm_and_ppid(sup).is_some(), "the supervisor outlives the agent");

    agent.spawn();
    let new_server = fork_server(&agent).expect("the new agent has a fork server");
    assert_ne!(new_server, server);
    agent.wait_pod("keep", T, |p| phase(p) == "Running");
    assert_eq!(supervisor(&agent, "keep"), sup, "the pod was adopted, not recreated");
    agent.apply("new.yaml", &pod("new", "sleep 3600", "", ""));
    agent.wait_pod("new", T, |p| phase(p) == "Running");
    assert_eq!(comm_and_ppid(supervisor(&agent, "new")).unwrap().0, "outpost-sup");
}
