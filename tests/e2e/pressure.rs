//! Admission and eviction with a real agent: a pod that does not fit is rejected
//! while the others run; simulated memory pressure (the `--test-meminfo` hook, the machine is
//! never exhausted) evicts pods in the kubelet's order; a real emptyDir over its sizeLimit and
//! a real writable layer over its ephemeral-storage limit get their pods evicted.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{container_status, phase, pod, Agent, T};
use serde_json::Value;

/// `(pod, reason, message)` of the pod-level warning events, oldest first, from the store.
fn pod_warnings(agent: &Agent) -> Vec<(String, String, String)> {
    let store = outpost::store::Store::open(&agent.state.join("outpost.db")).expect("open store");
    store
        .events(Some("default"))
        .expect("read events")
        .into_iter()
        .filter(|e| e.container.is_none() && e.type_ == "Warning")
        .map(|e| (e.pod_name, e.reason, e.message))
        .collect()
}

fn reason_message(p: &Value) -> (String, String) {
    let s = &p["status"];
    (
        s["reason"].as_str().unwrap_or_default().into(),
        s["message"].as_str().unwrap_or_default().into(),
    )
}

/// A meminfo file as the kernel writes it, with the real MemTotal.
fn write_meminfo(path: &Path, available_kib: u64) {
    let real = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let total = real.lines().find(|l| l.starts_with("MemTotal:")).expect("MemTotal").to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("{total}\nMemFree: {available_kib} kB\nMemAvailable: {available_kib} kB\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The kubelet's rejectPod: phase Failed, reason OutOfcpu, "Pod was rejected: Node didn't
/// have enough resource: cpu, requested: …, used: …, capacity: …", a warning event, no
/// sandbox. The pod already running keeps running.
#[test]
fn a_pod_requesting_more_cpu_than_allocatable_is_rejected_while_others_run() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let small = pod("small", "sleep 3600", "    resources:\n      requests: {cpu: 100m}\n", "");
    agent.apply("small.yaml", &small);
    agent.wait_pod("small", T, |p| phase(p) == "Running");
    let huge = pod("huge", "sleep 3600", "    resources:\n      requests: {cpu: '1000'}\n", "");
    agent.apply("huge.yaml", &huge);
    let p = agent.wait_pod("huge", T, |p| phase(p) == "Failed");
    let cores = std::thread::available_parallelism().unwrap().get();
    let message = format!(
        "Node didn't have enough resource: cpu, requested: 1000000, used: 100, capacity: {}",
        cores * 1000
    );
    assert_eq!(reason_message(&p), ("OutOfcpu".into(), format!("Pod was rejected: {message}")));
    assert_eq!(p["status"]["containerStatuses"], Value::Null);
    let uid = p["metadata"]["uid"].as_str().unwrap();
    assert!(!agent.state.join("pods").join(uid).exists(), "no sandbox for a rejected pod");
    assert_eq!(pod_warnings(&agent), [("huge".into(), "OutOfcpu".into(), message)]);
    assert_eq!(phase(&agent.pod("small").unwrap()), "Running");
}

/// Under (simulated) memory pressure the kubelet evicts one pod per round: pods using more
/// than they request first (a BestEffort pod's whole usage counts), then the others; a
/// system-critical pod never. Hard eviction ignores terminationGracePeriodSeconds (an hour
/// here): a shell that ignores SIGTERM is SIGKILLed 2 s later (137). New BestEffort pods are
/// refused while the pressure lasts.
#[test]
fn memory_pressure_evicts_pods_in_the_kubelets_order() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let meminfo = dir.path().join("meminfo");
    write_meminfo(&meminfo, 8 << 20);
    let agent = Agent::start_with(&[
        "--housekeeping-interval",
        "1s",
        "--test-meminfo",
        meminfo.to_str().unwrap(),
    ]);
    let hour = "  terminationGracePeriodSeconds: 3600\n";
    agent.apply("a-be.yaml", &pod("be", "sleep 3600", "", hour));
    let requests = "    resources:\n      requests: {memory: 64Mi}\n";
    agent.apply("b-bu.yaml", &pod("bu", "sleep 3600", requests, hour));
    let critical = "  priorityClassName: system-node-critical\n";
    agent.apply("c-crit.yaml", &pod("crit", "sleep 3600", "", critical));
    for name in ["be", "bu", "crit"] {
        agent.wait_pod(name, T, |p| phase(p) == "Running");
    }
    write_meminfo(&meminfo, 50 * 1024);
    // Failed at once (as the kubelet's status update), terminated once the kill is seen.
    let killed = |p: &Value| {
        phase(p) == "Failed" && !container_status(p, "app")["state"]["terminated"].is_null()
    };
    let be = agent.wait_pod("be", T, killed);
    let bu = agent.wait_pod("bu", T, killed);
    let low = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. ";
    let (reason, message) = reason_message(&be);
    assert_eq!(reason, "Evicted");
    assert!(
        message.starts_with(&format!("{low}Container app was using "))
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "{message}"
    );
    // Within its request: no container is named.
    assert_eq!(reason_message(&bu), ("Evicted".into(), low.to_string()));
    for p in [&be, &bu] {
        let term = &container_status(p, "app")["state"]["terminated"];
        assert_eq!(term["exitCode"], 137, "{term}");
    }
    let evicted: Vec<String> = pod_warnings(&agent)
        .into_iter()
        .filter(|(_, reason, _)| reason == "Evicted")
        .map(|(pod, _, _)| pod)
        .collect();
    assert_eq!(evicted, ["be", "bu"]);
    agent.apply("d-late.yaml", &pod("late", "sleep 3600", "", ""));
    let late = agent.wait_pod("late", T, |p| phase(p) == "Failed");
    assert_eq!(
        reason_message(&late),
        ("Evicted".into(), "Pod was rejected: The node had condition: [MemoryPressure]. ".into())
    );
    // The critical pod survives several more rounds of pressure.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(phase(&agent.pod("crit").unwrap()), "Running");
    write_meminfo(&meminfo, 8 << 20);
}

#[track_caller]
fn wait_evicted(agent: &Agent, name: &str) -> (String, String) {
    let start = Instant::now();
    loop {
        let p = agent.pod(name).unwrap_or_default();
        if phase(&p) == "Failed" {
            return reason_message(&p);
        }
        assert!(start.elapsed() < T, "pod {name} not evicted: {}", p["status"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The kubelet's localStorageEviction for real: 2 MiB written into a 1Mi emptyDir, and 2 MiB
/// written into the container's own filesystem (its overlay upper dir) against a 1Mi
/// ephemeral-storage limit.
#[test]
fn storage_limits_evict_pods_for_real() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--housekeeping-interval", "1s"]);
    let volume = "    volumeMounts:\n    - {name: data, mountPath: /data}\n";
    let spec = "  volumes:\n  - name: data\n    emptyDir: {sizeLimit: 1Mi}\n";
    let writer = "head -c 2097152 /dev/zero > /data/blob; sleep 3600";
    agent.apply("dir.yaml", &pod("dir", writer, volume, spec));
    let limited = "    resources:\n      limits: {ephemeral-storage: 1Mi}\n";
    let rootfs = "head -c 2097152 /dev/zero > /blob; sleep 3600";
    agent.apply("rootfs.yaml", &pod("rootfs", rootfs, limited, ""));
    agent.apply("calm.yaml", &pod("calm", "sleep 3600", volume, spec));
    assert_eq!(
        wait_evicted(&agent, "dir"),
        ("Evicted".into(), "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ".into())
    );
    assert_eq!(
        wait_evicted(&agent, "rootfs"),
        (
            "Evicted".into(),
            "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ".into()
        )
    );
    assert_eq!(phase(&agent.pod("calm").unwrap()), "Running");
}

/// `--pod-max-pids` caps each pod's tasks in its cgroup: a fork bomb stops at the limit while
/// the neighbour pod stays Ready (its exec probe keeps forking in its own cgroup).
#[test]
fn a_fork_bomb_stops_at_the_pod_pid_limit_and_the_neighbour_stays_ready() {
    let _guard = crate::support::exclusive();
    let agent = Agent::start_with(&["--pod-max-pids", "64"]);
    let probe =
        "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n";
    agent.apply("calm.yaml", &pod("calm", "exec sleep 3600", probe, ""));
    agent.wait_pod("calm", T, |p| container_status(p, "app")["ready"] == true);
    agent.apply("bomb.yaml", &pod("bomb", "f() { f | f & }; f; sleep 3600", "", ""));
    let bomb = agent.wait_pod("bomb", T, |p| phase(p) == "Running");
    let uid = bomb["metadata"]["uid"].as_str().unwrap().to_string();
    // BestEffort: the kubelet's `besteffort` tier, on v1 in the pids hierarchy.
    let cgroup = ["/sys/fs/cgroup/pids/outpost/besteffort", "/sys/fs/cgroup/outpost/besteffort"]
        .iter()
        .map(|base| Path::new(base).join(&uid))
        .find(|p| p.join("pids.max").exists())
        .expect("the pod's pids cgroup");
    assert_eq!(std::fs::read_to_string(cgroup.join("pids.max")).unwrap().trim(), "64");
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let current: u64 =
            std::fs::read_to_string(cgroup.join("pids.current")).unwrap().trim().parse().unwrap();
        peak = peak.max(current);
        let calm = agent.pod("calm").unwrap();
        assert_eq!(container_status(&calm, "app")["ready"], true, "the neighbour lost readiness");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(peak > 32 && peak <= 64, "the bomb peaked at {peak} tasks");
    // The limit is on the pod, so outpost can still stop it.
    agent.delete("bomb.yaml");
    agent.wait_gone("bomb", T);
}
