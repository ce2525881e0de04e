//! Container isolation for real (root): what a container can reach of the host through
//! processes the runtime starts in it (exec, probes, hooks) and its own init, and the cgroup
//! filesystem it sees.

mod e2e_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_support::{container_status, Agent, BIN, T};

fn started(agent: &Agent, pod: &str) {
    agent.wait_pod(pod, T, |p| container_status(p, "app")["started"] == true);
}

fn exec(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("exec")
        .arg("--state")
        .arg(&agent.state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run outpost exec")
}

/// Scans every process of the container (except itself) for host objects: descriptors that
/// name an outpost path or a namespace, an `exe` that is not the image's busybox, an
/// environment with the agent's `RUST_LOG`. Each finding is logged as a `HIT` line.
const SCANNER: &str = r#"
while :; do
  ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -e outpost -e 'pid:\[' -e 'mnt:\[' -e 'net:\[' | sed 's/^/HIT fd /'
  readlink /proc/[0-9]*/exe 2>/dev/null | grep -v '^/bin/busybox$' | sed 's/^/HIT exe /'
  cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep RUST_LOG | sed 's/^/HIT environ /'
done
"#;

#[test]
fn exec_d_processes_never_expose_host_objects_before_execve() {
    let agent = Agent::start();
    let probe = "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n";
    agent.apply("scan.yaml", &e2e_support::pod("scan", SCANNER, probe, ""));
    started(&agent, "scan");
    let start = Instant::now();
    let mut execs = 0;
    while start.elapsed() < Duration::from_secs(20) && execs < 600 {
        let out = exec(&agent, &["scan", "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        execs += 1;
        if execs % 50 == 0 && agent.logs("scan", "app", 0).contains("HIT") {
            break;
        }
    }
    // Let the scanner finish its last round.
    std::thread::sleep(Duration::from_millis(500));
    let logs = agent.logs("scan", "app", 0);
    let hits: Vec<&str> = logs.lines().filter(|l| l.starts_with("HIT")).collect();
    assert!(hits.is_empty(), "after {execs} execs the container reached host objects:\n{hits:#?}");
}
