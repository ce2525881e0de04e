//! Admission (the kubelet's `canAdmitPod` / `rejectPod`): resource fit against allocatable,
//! first come first served in file order, once per UID, and pressure conditions.

use std::path::PathBuf;

use super::sim::*;
use crate::engine::{
    parse_eviction_hard, MemoryReading, NodeConfig, NodeReadings, Observed, ResourceList,
};
use crate::manifest::DesiredPod;

/// 2 cores with 100m reserved (allocatable 1900m), 1 GiB with memory.available<100Mi.
pub fn node() -> NodeConfig {
    let mut n = NodeConfig::unreserved(ResourceList {
        cpu_milli: 2000,
        memory: 1 << 30,
        ephemeral_storage: 10 << 30,
    });
    n.system_reserved.cpu_milli = 100;
    n.eviction_hard = parse_eviction_hard("memory.available<100Mi,nodefs.available<10%").unwrap();
    n
}

/// A pod from `file` (admission order follows files).
pub fn add(sim: &mut Sim, file: &str, yaml: &str) {
    let dp =
        DesiredPod { pod: pod(yaml).into(), source: PathBuf::from(format!("/etc/edge.d/{file}")) };
    sim.desired_mut().pods.insert(dp.key(), dp);
}

pub fn cpu_pod(name: &str, cpu: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec:\n  containers:\n  - {{name: app, image: busybox, resources: {{requests: {{cpu: '{cpu}'}}}}}}\n"
    )
}

fn phase_reason_message(sim: &Sim, uid: &str) -> (String, String, String) {
    let s = sim.status_of(uid).expect("known pod");
    (s.phase.unwrap_or_default(), s.reason.unwrap_or_default(), s.message.unwrap_or_default())
}

/// `rejectPod`: phase Failed, reason OutOfcpu, "Pod was rejected: " + the
/// InsufficientResourceError message, a warning event; no sandbox, no containers; the pod
/// already running is untouched.
#[test]
fn a_pod_that_does_not_fit_is_rejected_out_of_cpu_like_the_kubelet() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &cpu_pod("small", "500m"));
    sim.run_until(0);
    sim.take();
    sim.now = 5;
    add(&mut sim, "b.yaml", &cpu_pod("huge", "2"));
    sim.run_until(5);
    assert_eq!(
        sim.take(),
        ["5 Event Warning OutOfcpu: Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity: 1900"]
    );
    assert_eq!(
        phase_reason_message(&sim, "uid-huge"),
        (
            "Failed".into(),
            "OutOfcpu".into(),
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity: 1900".into()
        )
    );
    let s = sim.status_of("uid-huge").unwrap();
    // Only what rejectPod sets.
    assert_eq!((s.conditions, s.container_statuses, s.start_time), (None, None, None));
    assert_eq!(s.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(sim.status_of("uid-small").unwrap().phase.as_deref(), Some("Running"));
    let huge = sim.engine.pods().find(|p| p.metadata.name.as_deref() == Some("huge")).unwrap();
    assert_eq!(crate::engine::summary(&huge), "OutOfcpu");
    // It stays rejected; the next passes do nothing for it.
    sim.run_until(100);
    assert_eq!(sim.take(), Vec::<String>::new());
}

/// Memory is checked after cpu, with requests summed like PodRequests (init max, overhead).
#[test]
fn memory_requests_are_checked_after_cpu() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(
        &mut sim,
        "a.yaml",
        "metadata: {name: big}\nspec:\n  initContainers:\n  - {name: init, image: busybox, resources: {requests: {memory: 950Mi}}}\n  containers:\n  - {name: app, image: busybox, resources: {requests: {memory: 100Mi}}}\n",
    );
    sim.run_until(0);
    let (phase, reason, message) = phase_reason_message(&sim, "uid-big");
    assert_eq!((phase.as_str(), reason.as_str()), ("Failed", "OutOfmemory"));
    assert_eq!(
        message,
        format!(
            "Pod was rejected: Node didn't have enough resource: memory, requested: {}, used: 0, capacity: {}",
            950u64 << 20,
            (1u64 << 30) - (100 << 20)
        )
    );
}

/// HandlePodAdditions admits new pods one at a time, each against those admitted before it;
/// the file source lists a directory by file name, so the earlier file wins whatever the
/// pod names are.
#[test]
fn new_pods_are_admitted_first_come_first_served_in_file_order() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "20-second.yaml", &cpu_pod("aaa", "1200m"));
    add(&mut sim, "10-first.yaml", &cpu_pod("zzz", "1200m"));
    sim.run_until(0);
    assert_eq!(phase_reason_message(&sim, "uid-zzz").0, "Running");
    let (phase, reason, _) = phase_reason_message(&sim, "uid-aaa");
    assert_eq!((phase.as_str(), reason.as_str()), ("Failed", "OutOfcpu"));
}

/// Admission is once per UID: an edited manifest is a new pod, admitted anew, and the pod it
/// replaces no longer counts (the kubelet removes it from its pod manager first).
#[test]
fn an_edit_is_admitted_anew_and_the_replaced_pod_does_not_count() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &cpu_pod("web", "1500m"));
    sim.run_until(0);
    let mut edited = pod(&cpu_pod("web", "1800m"));
    edited.metadata.uid = Some("uid-web-2".into());
    let dp = DesiredPod { pod: edited.into(), source: PathBuf::from("/etc/edge.d/a.yaml") };
    sim.desired_mut().pods.insert(dp.key(), dp);
    sim.run_until(10);
    assert_eq!(phase_reason_message(&sim, "uid-web-2").0, "Running");
    assert!(sim.status_of("uid-web").is_none(), "the old pod is gone");
    // A rejected pod whose manifest is fixed runs.
    add(&mut sim, "b.yaml", &cpu_pod("late", "1"));
    sim.run_until(11);
    assert_eq!(phase_reason_message(&sim, "uid-late").1, "OutOfcpu");
    let mut fixed = pod(&cpu_pod("late", "100m"));
    fixed.metadata.uid = Some("uid-late-2".into());
    let dp = DesiredPod { pod: fixed.into(), source: PathBuf::from("/etc/edge.d/b.yaml") };
    sim.desired_mut().pods.insert(dp.key(), dp);
    sim.run_until(12);
    assert_eq!(phase_reason_message(&sim, "uid-late-2").0, "Running");
}

/// Pods that finished (Succeeded here) release their requests (`filterOutInactivePods`).
#[test]
fn finished_pods_do_not_count() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    let job = "metadata: {name: job}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: app, image: busybox, resources: {requests: {cpu: '1500m'}}}\n";
    add(&mut sim, "a.yaml", job);
    sim.script("app").exit = Box::new(|_| Some((5, 0, false)));
    sim.run_until(10);
    assert_eq!(phase_reason_message(&sim, "uid-job").0, "Succeeded");
    add(&mut sim, "b.yaml", &cpu_pod("next", "1500m"));
    sim.run_until(11);
    assert_eq!(phase_reason_message(&sim, "uid-next").0, "Running");
}

/// Pods found running after an agent restart are taken over, never rejected (even if they
/// no longer fit, e.g. after a larger --system-reserved), and count for new pods; a pod that
/// was rejected stays rejected.
#[test]
fn adopted_pods_are_never_rejected_and_rejections_survive_a_restart() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &cpu_pod("one", "1"));
    add(&mut sim, "b.yaml", &cpu_pod("two", "900m"));
    add(&mut sim, "c.yaml", &cpu_pod("three", "500m"));
    sim.run_until(0);
    assert_eq!(phase_reason_message(&sim, "uid-three").1, "OutOfcpu");
    sim.take();
    let saved = sim.engine.persist();
    let mut found = vec![sim.found("uid-one", &[]), sim.found("uid-two", &[])];
    for f in &mut found {
        f.saved = saved.iter().find(|s| Some(s.uid()) == f.pod.metadata.uid.as_deref()).cloned();
    }
    let mut rejected = sim.found("uid-three", &[]);
    rejected.sandbox_ready = false;
    rejected.saved = saved.iter().find(|s| s.uid() == "uid-three").cloned();
    found.push(rejected);
    sim.restart_agent(20, found);
    let mut smaller = node();
    smaller.system_reserved.cpu_milli = 1000;
    sim.engine.set_node(smaller);
    sim.run_until(21);
    assert_eq!(sim.take(), Vec::<String>::new(), "nothing restarted, nothing created");
    assert_eq!(phase_reason_message(&sim, "uid-one").0, "Running");
    assert_eq!(phase_reason_message(&sim, "uid-two").0, "Running");
    assert_eq!(phase_reason_message(&sim, "uid-three").1, "OutOfcpu");
    add(&mut sim, "d.yaml", &cpu_pod("four", "100m"));
    sim.run_until(22);
    assert_eq!(
        phase_reason_message(&sim, "uid-four").2,
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 100, used: 1900, capacity: 1000"
    );
}

fn pressure(available_mi: u64) -> Observed {
    Observed::NodeReadings(Box::new(NodeReadings {
        memory: Some(MemoryReading { capacity: 1 << 30, available: available_mi << 20 }),
        ..Default::default()
    }))
}

/// The eviction manager's admit handler: under MemoryPressure BestEffort pods are refused
/// ("The node had condition: [MemoryPressure]. ", reason Evicted), others admitted. The
/// condition lasts the pressure transition period (5 min) after the last crossing.
#[test]
fn best_effort_pods_are_not_admitted_under_memory_pressure() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    sim.engine.observe(pressure(500), t(0));
    assert!(sim.engine.node_conditions().is_empty());
    sim.engine.observe(pressure(80), t(10));
    assert_eq!(sim.engine.node_conditions(), ["MemoryPressure"]);
    sim.now = 10;
    add(
        &mut sim,
        "a.yaml",
        "metadata: {name: be}\nspec:\n  containers:\n  - {name: app, image: busybox}\n",
    );
    add(&mut sim, "b.yaml", &cpu_pod("bu", "100m"));
    sim.run_until(10);
    assert_eq!(
        phase_reason_message(&sim, "uid-be"),
        (
            "Failed".into(),
            "Evicted".into(),
            "Pod was rejected: The node had condition: [MemoryPressure]. ".into()
        )
    );
    assert_eq!(phase_reason_message(&sim, "uid-bu").0, "Running");
    // Relieved at 20, but the condition stays until 20 + 5 min after the last crossing (10).
    sim.engine.observe(pressure(500), t(20));
    assert_eq!(sim.engine.node_conditions(), ["MemoryPressure"]);
    sim.engine.observe(pressure(500), t(309));
    assert_eq!(sim.engine.node_conditions(), ["MemoryPressure"]);
    sim.engine.observe(pressure(500), t(310));
    assert!(sim.engine.node_conditions().is_empty());
    sim.run_until(310);
    add(
        &mut sim,
        "c.yaml",
        "metadata: {name: later}\nspec:\n  containers:\n  - {name: app, image: busybox}\n",
    );
    sim.run_until(311);
    assert_eq!(phase_reason_message(&sim, "uid-later").0, "Running");
}

/// Without a node configuration (tests, or before the agent sets it) everything is admitted.
#[test]
fn without_a_node_configuration_everything_is_admitted() {
    let mut sim = Sim::new(&[]);
    add(&mut sim, "a.yaml", &cpu_pod("huge", "64"));
    sim.run_until(0);
    assert_eq!(phase_reason_message(&sim, "uid-huge").0, "Running");
}

/// The sysctl allowlist (`SysctlForbidden`): rejected like any admission failure, nothing
/// started; with the pattern allowed, the same pod is admitted.
#[test]
fn a_pod_with_a_forbidden_sysctl_is_rejected() {
    let pod = "metadata: {name: ipc}\nspec:\n  securityContext:\n    sysctls: [{name: kernel.shm_rmid_forced, value: '1'}, {name: kernel.msgmax, value: '65536'}]\n  containers:\n  - {name: app, image: busybox}\n";
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", pod);
    sim.run_until(0);
    assert_eq!(
        sim.take(),
        ["0 Event Warning SysctlForbidden: forbidden sysctl: \"kernel.msgmax\" not allowlisted"]
    );
    assert_eq!(
        phase_reason_message(&sim, "uid-ipc"),
        (
            "Failed".into(),
            "SysctlForbidden".into(),
            "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted".into()
        )
    );

    let mut allowed = node();
    allowed.sysctls =
        crate::engine::SysctlAllowlist::new(Some((6, 1)), &"kernel.msg*".parse().unwrap());
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(allowed);
    add(&mut sim, "a.yaml", pod);
    sim.run_until(0);
    assert_eq!(sim.actions()[0], "0 CreateSandbox");
    assert_eq!(phase_reason_message(&sim, "uid-ipc").0, "Running");
}

fn device_pod(name: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec:\n  containers:\n  - {{name: app, image: busybox, resources: {{limits: {{example.com/dev: '1'}}}}}}\n"
    )
}

/// The device plugins' counts arrive as a fact: pods asking for a device are admitted while
/// a healthy one is free beside the admitted pods' requests, then rejected like the
/// kubelet; before any plugin offers the resource, rejected too (capacity 0).
#[test]
fn extended_resources_are_admitted_against_the_plugins_healthy_devices() {
    use crate::engine::DeviceCount;
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &device_pod("early"));
    sim.run_until(0);
    assert_eq!(
        sim.take(),
        ["0 Event Warning OutOfexample.com/dev: Node didn't have enough resource: example.com/dev, requested: 1, used: 0, capacity: 0"]
    );
    let counts = [("example.com/dev".to_string(), DeviceCount { capacity: 3, allocatable: 2 })];
    sim.engine.observe(Observed::Devices(counts.into()), crate::format::now());
    sim.now = 5;
    add(&mut sim, "b.yaml", &device_pod("first"));
    add(&mut sim, "c.yaml", &device_pod("second"));
    add(&mut sim, "d.yaml", &device_pod("third"));
    sim.run_until(5);
    sim.take();
    assert_eq!(sim.status_of("uid-first").unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(sim.status_of("uid-second").unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        phase_reason_message(&sim, "uid-third"),
        (
            "Failed".into(),
            "OutOfexample.com/dev".into(),
            "Pod was rejected: Node didn't have enough resource: example.com/dev, requested: 1, used: 2, capacity: 2".into()
        )
    );
}
