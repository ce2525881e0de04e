//! Pod security settings the kubelet enforces, on real pods: `runAsNonRoot` and `sysctls`.

use std::time::Duration;

use crate::support::{container_status, phase, pod, Agent, T};
use serde_json::Value;

fn waiting(p: &Value) -> (String, String) {
    let w = &container_status(p, "app")["state"]["waiting"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&w["reason"]), s(&w["message"]))
}

/// busybox runs as root: refused with the kubelet's reason and message, retried, never
/// started; with `runAsUser: 1000` the same image runs as uid 1000.
#[test]
fn run_as_non_root_refuses_a_root_image_and_runs_a_non_root_user() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let non_root = "  securityContext: {runAsNonRoot: true}\n";
    agent.apply("root.yaml", &pod("root", "id -u; sleep 3600", "", non_root));
    agent.apply(
        "user.yaml",
        &pod(
            "user",
            "id -u; sleep 3600",
            "",
            "  securityContext: {runAsNonRoot: true, runAsUser: 1000}\n",
        ),
    );
    agent.wait_logs("user", "app", "1000", T);
    assert_eq!(agent.logs("user", "app", 0), "1000");
    let p = agent.wait_pod("root", T, |p| waiting(p).0 == "CreateContainerConfigError");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let want = format!(
        "container has runAsNonRoot and image will run as root (pod: \"root_default({uid})\", container: app)"
    );
    assert_eq!(waiting(&p).1, want);
    // Past the next retry (10 s): still waiting, never started.
    std::thread::sleep(Duration::from_secs(12));
    let p = agent.pod("root").unwrap();
    let c = container_status(&p, "app");
    assert_eq!((phase(&p), waiting(&p)), ("Pending", ("CreateContainerConfigError".into(), want)));
    assert_eq!((c["restartCount"].as_i64(), c["lastState"].get("terminated")), (Some(0), None));
    assert_eq!(agent.logs("root", "app", 0), "");
    let (_, events) = agent.get("/api/v1/namespaces/default/events");
    let failed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "root" && e["reason"] == "Failed")
        .count();
    assert!(failed >= 1, "no Failed event: {events}");
}

fn host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

const PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
const SHM_RMID: &str = "/proc/sys/kernel/shm_rmid_forced";
const MSGMAX: &str = "/proc/sys/kernel/msgmax";

/// Safe sysctls are set in the pod's own net and ipc namespaces, not the host's; an unsafe one
/// is rejected at admission unless `--allowed-unsafe-sysctls` allows it.
#[test]
fn sysctls_apply_inside_the_pod_and_unsafe_ones_need_the_flag() {
    let _guard = crate::support::shared();
    let before = (host(PORT_START), host(SHM_RMID), host(MSGMAX));
    assert_ne!(
        (before.0.as_str(), before.1.as_str()),
        ("0", "1"),
        "host already has the pod's values"
    );
    assert_ne!(before.2, "65000");
    let agent = Agent::start();
    let safe = "  securityContext:\n    sysctls:\n    - {name: net.ipv4.ip_unprivileged_port_start, value: \"0\"}\n    - {name: kernel.shm_rmid_forced, value: \"1\"}\n";
    let script = format!("cat {PORT_START} {SHM_RMID}; sleep 3600");
    agent.apply("safe.yaml", &pod("safe", &script, "", safe));
    let unsafe_spec =
        "  securityContext:\n    sysctls:\n    - {name: kernel.msgmax, value: \"65000\"}\n";
    let msg_script = format!("cat {MSGMAX}; sleep 3600");
    agent.apply("msg.yaml", &pod("msg", &msg_script, "", unsafe_spec));
    agent.wait_logs("safe", "app", "1", T);
    assert_eq!(agent.logs("safe", "app", 0), "0\n1");
    let p = agent.wait_pod("msg", T, |p| phase(p) == "Failed");
    assert_eq!(
        (p["status"]["reason"].as_str(), p["status"]["message"].as_str()),
        (
            Some("SysctlForbidden"),
            Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted")
        )
    );
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let cmdlines: Vec<String> = agent
        .supervisors()
        .iter()
        .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect();
    assert!(
        !cmdlines.iter().any(|c| c.contains(uid)),
        "a supervisor for the rejected pod: {cmdlines:?}"
    );
    assert!(!agent.state.join("pods").join(uid).exists(), "a pod directory for the rejected pod");
    assert_eq!((host(PORT_START), host(SHM_RMID), host(MSGMAX)), before);
    drop(agent);

    let agent = Agent::start_with(&["--allowed-unsafe-sysctls", "kernel.msg*"]);
    agent.apply("msg.yaml", &pod("msg", &msg_script, "", unsafe_spec));
    agent.wait_logs("msg", "app", "65000", T);
    assert_eq!((host(PORT_START), host(SHM_RMID), host(MSGMAX)), before);
}

/// A non-namespaced sysctl can never be allowed: the agent refuses to start.
#[test]
fn the_agent_refuses_a_non_namespaced_unsafe_sysctl() {
    let _guard = crate::support::shared();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["run", "--allowed-unsafe-sysctls", "net.*,vm.swappiness"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sysctl \"vm.swappiness\" is not known to be namespaced: only kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* (ipc) and net.* (network) can be allowed"),
        "{stderr}"
    );
}

/// A value the kernel refuses fails the sandbox (FailedCreatePodSandBox, retried) with an
/// error naming the sysctl, its file and the kernel's answer; the host keeps its value.
#[test]
fn an_invalid_sysctl_value_fails_the_sandbox_naming_the_sysctl() {
    let _guard = crate::support::shared();
    let before = host(PORT_START);
    let agent = Agent::start();
    let bad = "  securityContext:\n    sysctls:\n    - {name: net.ipv4.ip_unprivileged_port_start, value: \"abc\"}\n";
    agent.apply("bad.yaml", &pod("bad", "sleep 3600", "", bad));
    let needle = "FailedCreatePodSandBox: Failed to create pod sandbox";
    let start = std::time::Instant::now();
    let line = loop {
        if let Some(l) = agent.agent_log().into_iter().find(|l| l.contains(needle)) {
            break l;
        }
        assert!(start.elapsed() < T, "no {needle}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for part in [
        "cannot set the pod's sysctl net.ipv4.ip_unprivileged_port_start=abc",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        "Invalid argument",
        "check that it is a sysctl of this kernel and its value is valid",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    let p = agent.pod("bad").unwrap();
    assert_eq!((phase(&p), waiting(&p).0.as_str()), ("Pending", "ContainerCreating"));
    assert_eq!(host(PORT_START), before);
}
