//! Node-pressure eviction and per-pod storage limits (the kubelet's eviction manager), driven
//! by injected readings.

use std::collections::BTreeMap;

use super::admission::{add, node};
use super::sim::*;
use crate::engine::{
    parse_eviction_hard, ContainerUsage, DiskUsage, FsReading, MemoryReading, NodeReadings,
    Observed, PidReading, PodUsage,
};

fn mem_usage(mi: u64) -> PodUsage {
    let c = ContainerUsage { memory: Some(mi << 20), ..Default::default() };
    PodUsage {
        memory: Some(mi << 20),
        containers: BTreeMap::from([("app".to_string(), c)]),
        ..Default::default()
    }
}

fn memory_readings(available_mi: u64, pods: &[(&str, u64)]) -> Observed {
    Observed::NodeReadings(Box::new(NodeReadings {
        memory: Some(MemoryReading { capacity: 1 << 30, available: available_mi << 20 }),
        fs: None,
        pids: None,
        pods: pods.iter().map(|(uid, mi)| (uid.to_string(), mem_usage(*mi))).collect(),
    }))
}

fn pod_yaml(name: &str, spec_extra: &str, resources: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec:\n{spec_extra}  containers:\n  - {{name: app, image: busybox{resources}}}\n"
    )
}

fn evictions(lines: &[String]) -> Vec<String> {
    let evicted = |l: &&String| l.contains("Warning Evicted") && !l.contains("node had condition");
    lines.iter().filter(evicted).cloned().collect()
}

fn brief(sim: &Sim, uid: &str) -> (String, String) {
    let s = sim.status_of(uid).expect("known pod");
    (s.phase.unwrap_or_default(), s.reason.unwrap_or_default())
}

/// rankMemoryPressure: pods using more than they request first, then lower priority, then
/// the larger usage above the request (a BestEffort pod's whole usage counts); one pod per
/// round; a system-critical pod never. The evicted pod's containers are stopped with the
/// kubelet's effective grace of hard eviction (1 s, so SIGKILL follows SIGTERM after the 2 s
/// minimum, whatever terminationGracePeriodSeconds says), and it stays Failed/Evicted with the
/// DisruptionTarget condition.
#[test]
fn memory_pressure_evicts_one_pod_per_round_in_the_kubelets_order() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &pod_yaml("be", "", ""));
    add(&mut sim, "b.yaml", &pod_yaml("bu", "", ", resources: {requests: {memory: 100Mi}}"));
    add(
        &mut sim,
        "c.yaml",
        &pod_yaml(
            "big",
            "  terminationGracePeriodSeconds: 600\n",
            ", resources: {requests: {memory: 10Mi}}",
        ),
    );
    add(&mut sim, "d.yaml", &pod_yaml("hi", "  priority: 1000\n", ""));
    add(&mut sim, "e.yaml", &pod_yaml("crit", "  priorityClassName: system-node-critical\n", ""));
    sim.run_until(0);
    sim.script("app").term = None; // ignores SIGTERM
    sim.take();
    let usage =
        [("uid-be", 10), ("uid-bu", 50), ("uid-big", 200), ("uid-hi", 500), ("uid-crit", 1000)];
    sim.now = 10;
    sim.engine.observe(memory_readings(80, &usage), t(10));
    sim.run_until(12);
    assert_eq!(
        sim.take(),
        [
            "10 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. Container app was using 200Mi, request is 10Mi, has larger consumption of memory. ",
            "10 Event app Normal Killing: Stopping container app",
            "10 Kill app#0 Term",
            "12 Kill app#0 Kill",
            "12 RemoveSandbox",
        ]
    );
    assert_eq!(sim.engine.node_conditions(), ["MemoryPressure"]);
    let s = sim.status_of("uid-big").unwrap();
    assert_eq!(brief(&sim, "uid-big"), ("Failed".into(), "Evicted".into()));
    let dt = s.conditions.unwrap().into_iter().find(|c| c.type_ == "DisruptionTarget").unwrap();
    assert_eq!(
        cond_brief(&dt),
        ("True".into(), "TerminationByKubelet".into(), s.message.clone().unwrap(), 10)
    );
    let app = s.container_statuses.unwrap().remove(0);
    assert_eq!(term(&app.state), Some((137, "Error".into(), 0, 12)));
    for (i, at) in [20, 30, 40, 50, 60].into_iter().enumerate() {
        sim.run_until(at);
        sim.engine.observe(memory_readings(80, &usage[..]), t(at));
        sim.run_until(at);
        let e = evictions(&sim.take());
        let want: &[&str] = match i {
            0 => &["20 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. Container app was using 10Mi, request is 0, has larger consumption of memory. "],
            1 => &["30 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. Container app was using 500Mi, request is 0, has larger consumption of memory. "],
            // Within its request: no container is named.
            2 => &["40 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. "],
            _ => &[],
        };
        assert_eq!(e, want, "round at {at}");
    }
    for uid in ["uid-be", "uid-bu", "uid-hi"] {
        assert_eq!(brief(&sim, uid), ("Failed".into(), "Evicted".into()), "{uid}");
    }
    assert_eq!(brief(&sim, "uid-crit"), ("Running".into(), "".into()));
    // restartPolicy Always, but an evicted pod stays Failed until its manifest changes.
    sim.run_until(500);
    assert_eq!(sim.take(), Vec::<String>::new());
    assert_eq!(brief(&sim, "uid-big"), ("Failed".into(), "Evicted".into()));
}

/// `cmpBool(!p1Found, !p2Found)`: a pod the readings do not cover ranks first.
#[test]
fn a_pod_without_readings_is_evicted_first() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &pod_yaml("hog", "", ""));
    add(&mut sim, "b.yaml", &pod_yaml("new", "", ""));
    sim.run_until(0);
    sim.take();
    sim.now = 10;
    sim.engine.observe(memory_readings(50, &[("uid-hog", 800)]), t(10));
    sim.run_until(10);
    assert_eq!(
        evictions(&sim.take()),
        ["10 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "]
    );
    assert_eq!(brief(&sim, "uid-new").1, "Evicted");
    assert_eq!(brief(&sim, "uid-hog").0, "Running");
}

/// IsCriticalPod: priority >= 2000000000 (spec.priority or the system-*-critical classes) is
/// never evicted, even when it is the only candidate.
#[test]
fn system_critical_pods_are_never_evicted() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &pod_yaml("p", "  priority: 2000000000\n", ""));
    add(&mut sim, "b.yaml", &pod_yaml("c", "  priorityClassName: system-cluster-critical\n", ""));
    sim.run_until(0);
    sim.take();
    sim.now = 10;
    sim.engine.observe(memory_readings(10, &[("uid-p", 500), ("uid-c", 400)]), t(10));
    sim.run_until(10);
    assert_eq!(sim.take(), Vec::<String>::new());
    assert_eq!(
        (brief(&sim, "uid-p").0, brief(&sim, "uid-c").0),
        ("Running".into(), "Running".into())
    );
}

/// waitForPodsCleanup: no further eviction while the evicted pod still runs. Its preStop hook
/// (100 s) gets the 1 s eviction grace, then SIGTERM, which it ignores, then SIGKILL 2 s later.
#[test]
fn the_next_eviction_waits_for_the_evicted_pods_cleanup() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    let slow = "metadata: {name: slow}\nspec:\n  terminationGracePeriodSeconds: 200\n  containers:\n  - name: app\n    image: busybox\n    lifecycle: {preStop: {exec: {command: [sleep, '100']}}}\n";
    add(&mut sim, "a.yaml", slow);
    add(&mut sim, "b.yaml", &pod_yaml("other", "", ", resources: {requests: {memory: 1Mi}}"));
    sim.run_until(0);
    sim.script("app").hook = Box::new(|_, _| (100, Ok(())));
    sim.script("app").term = None;
    sim.take();
    let usage = [("uid-slow", 300), ("uid-other", 1)];
    sim.now = 10;
    sim.engine.observe(memory_readings(50, &usage), t(10));
    sim.run_until(10);
    sim.run_until(12);
    let lines = sim.take();
    assert_eq!(evictions(&lines).len(), 1);
    let stop: Vec<&String> = lines.iter().filter(|l| !l.contains("Event")).collect();
    assert_eq!(stop, ["10 RunHook app#0 PreStop timeout=1s", "11 Kill app#0 Term"], "{lines:?}");
    sim.engine.observe(memory_readings(50, &usage), t(12));
    sim.run_until(12);
    assert_eq!(evictions(&sim.take()), Vec::<String>::new());
    sim.run_until(13);
    assert_eq!(sim.actions(), ["13 Kill app#0 Kill", "13 RemoveSandbox"]);
    sim.engine.observe(memory_readings(50, &usage), t(13));
    sim.run_until(13);
    assert_eq!(
        evictions(&sim.take()),
        ["13 Event Warning Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "]
    );
}

fn disk_usage(rootfs_mi: u64, logs_mi: u64, volumes: &[(&str, u64)]) -> PodUsage {
    let d = |mi: u64| Some(DiskUsage { bytes: mi << 20, inodes: 1 });
    let c = ContainerUsage { memory: Some(1 << 20), rootfs: d(rootfs_mi), logs: d(logs_mi) };
    PodUsage {
        memory: Some(1 << 20),
        containers: BTreeMap::from([("app".to_string(), c)]),
        volumes: volumes
            .iter()
            .map(|(n, mi)| (n.to_string(), DiskUsage { bytes: mi << 20, inodes: 1 }))
            .collect(),
        disk: true,
        processes: None,
    }
}

fn disk_readings(available_mi: u64, pods: Vec<(&str, PodUsage)>) -> Observed {
    Observed::NodeReadings(Box::new(NodeReadings {
        memory: Some(MemoryReading { capacity: 1 << 30, available: 900 << 20 }),
        fs: Some(FsReading {
            capacity: 1000 << 20,
            available: available_mi << 20,
            inodes: 1000,
            inodes_free: 900,
        }),
        pids: None,
        pods: pods.into_iter().map(|(u, p)| (u.to_string(), p)).collect(),
    }))
}

/// rankDiskPressureFunc on nodefs (no dedicated imagefs): containers' writable layers and
/// logs plus local volumes, against the ephemeral-storage request. Under DiskPressure no pod
/// is admitted at all.
#[test]
fn disk_pressure_evicts_by_ephemeral_storage_and_refuses_new_pods() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(
        &mut sim,
        "a.yaml",
        &pod_yaml("within", "", ", resources: {requests: {ephemeral-storage: 10Mi}}"),
    );
    add(&mut sim, "b.yaml", &pod_yaml("writer", "", ""));
    sim.run_until(0);
    sim.take();
    let pods = vec![
        ("uid-within", disk_usage(8, 1, &[])),
        ("uid-writer", disk_usage(3, 1, &[("cache", 2)])),
    ];
    sim.now = 10;
    sim.engine.observe(disk_readings(50, pods), t(10));
    add(&mut sim, "c.yaml", &pod_yaml("late", "", ", resources: {requests: {memory: 1Mi}}"));
    sim.run_until(10);
    // 10% of 1000Mi as the kubelet computes it (float32 percentage).
    assert_eq!(
        evictions(&sim.take()),
        ["10 Event Warning Evicted: The node was low on resource: ephemeral-storage. Threshold quantity: 104857601, available: 50Mi. Container app was using 4Mi, request is 0, has larger consumption of ephemeral-storage. "]
    );
    assert_eq!(brief(&sim, "uid-within").0, "Running");
    assert_eq!(
        sim.status_of("uid-late").unwrap().message.as_deref(),
        Some("Pod was rejected: The node had condition: [DiskPressure]. ")
    );
}

/// localStorageEviction: emptyDir sizeLimit, the pod's summed ephemeral-storage limit and a
/// container's own limit, with the kubelet's messages; every offending pod goes in the same
/// round, without the DisruptionTarget condition, and no node pressure is needed.
#[test]
fn storage_limits_evict_every_offending_pod_with_the_kubelets_messages() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    let scratch = "metadata: {name: scratch}\nspec:\n  volumes:\n  - {name: data, emptyDir: {sizeLimit: 1Mi}}\n  containers:\n  - {name: app, image: busybox}\n";
    let summed = "metadata: {name: summed}\nspec:\n  volumes:\n  - {name: data, emptyDir: {}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {ephemeral-storage: 1Mi}}}\n  - {name: side, image: busybox, resources: {limits: {ephemeral-storage: 1Mi}}}\n";
    // Its pod total stays under the summed limit: the container's own limit catches it.
    let own = "metadata: {name: own}\nspec:\n  containers:\n  - {name: app, image: busybox, resources: {limits: {ephemeral-storage: 512Ki}}}\n  - {name: side, image: busybox, resources: {limits: {ephemeral-storage: 10Mi}}}\n";
    let fine = "metadata: {name: fine}\nspec:\n  volumes:\n  - {name: data, emptyDir: {sizeLimit: 10Mi}}\n  containers:\n  - {name: app, image: busybox}\n";
    for (f, y) in [("a.yaml", scratch), ("b.yaml", summed), ("c.yaml", own), ("d.yaml", fine)] {
        add(&mut sim, f, y);
    }
    sim.run_until(0);
    sim.take();
    let small = |rootfs_kib: u64| {
        let mut u = disk_usage(0, 0, &[]);
        u.containers.get_mut("app").unwrap().rootfs =
            Some(DiskUsage { bytes: rootfs_kib << 10, inodes: 1 });
        u
    };
    let mut own_usage = small(600);
    own_usage.containers.get_mut("app").unwrap().logs = Some(DiskUsage { bytes: 0, inodes: 0 });
    let mut readings = NodeReadings {
        memory: Some(MemoryReading { capacity: 1 << 30, available: 900 << 20 }),
        ..Default::default()
    };
    readings.pods.insert("uid-scratch".into(), disk_usage(0, 0, &[("data", 2)]));
    readings.pods.insert("uid-summed".into(), disk_usage(0, 0, &[("data", 3)]));
    readings.pods.insert("uid-own".into(), own_usage);
    readings.pods.insert("uid-fine".into(), disk_usage(0, 0, &[("data", 9)]));
    sim.now = 10;
    sim.engine.observe(Observed::NodeReadings(Box::new(readings)), t(10));
    sim.run_until(10);
    assert_eq!(
        evictions(&sim.take()),
        [
            "10 Event Warning Evicted: Container app exceeded its local ephemeral storage limit \"512Ki\". ",
            "10 Event Warning Evicted: Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ",
            "10 Event Warning Evicted: Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. ",
        ]
    );
    assert!(sim.engine.node_conditions().is_empty());
    let s = sim.status_of("uid-scratch").unwrap();
    assert!(s.conditions.unwrap().iter().all(|c| c.type_ != "DisruptionTarget"));
    assert_eq!(brief(&sim, "uid-fine").0, "Running");
}

/// An evicted pod is still evicted after an agent restart (the verdict is in its snapshot).
#[test]
fn an_eviction_survives_an_agent_restart() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    add(&mut sim, "a.yaml", &pod_yaml("be", "", ""));
    sim.run_until(0);
    sim.now = 10;
    sim.engine.observe(memory_readings(10, &[("uid-be", 10)]), t(10));
    sim.run_until(20);
    let mut found = sim.found("uid-be", &[]);
    found.sandbox_ready = false;
    found.saved = sim.engine.persist().into_iter().next();
    sim.take();
    sim.restart_agent(30, vec![found]);
    sim.engine.set_node(node());
    sim.run_until(40);
    assert_eq!(sim.take(), Vec::<String>::new());
    assert_eq!(brief(&sim, "uid-be"), ("Failed".into(), "Evicted".into()));
}

/// nodefs.inodesFree: ranked by inodes used (nobody requests inodes), the kubelet's message
/// without a container part.
#[test]
fn inode_pressure_evicts_the_pod_using_most_inodes() {
    let mut sim = Sim::new(&[]);
    let mut n = node();
    n.eviction_hard = crate::engine::parse_eviction_hard("nodefs.inodesFree<5%").unwrap();
    sim.engine.set_node(n);
    add(&mut sim, "a.yaml", &pod_yaml("few", "", ""));
    add(&mut sim, "b.yaml", &pod_yaml("many", "", ""));
    sim.run_until(0);
    sim.take();
    let with_inodes = |inodes: u64| {
        let mut u = disk_usage(1, 0, &[]);
        u.containers.get_mut("app").unwrap().rootfs = Some(DiskUsage { bytes: 1 << 20, inodes });
        u
    };
    let mut r = NodeReadings {
        fs: Some(FsReading {
            capacity: 1 << 30,
            available: 1 << 29,
            inodes: 1000,
            inodes_free: 40,
        }),
        ..Default::default()
    };
    r.pods.insert("uid-few".into(), with_inodes(10));
    r.pods.insert("uid-many".into(), with_inodes(500));
    sim.now = 10;
    sim.engine.observe(Observed::NodeReadings(Box::new(r)), t(10));
    sim.run_until(10);
    assert_eq!(
        evictions(&sim.take()),
        ["10 Event Warning Evicted: The node was low on resource: inodes. Threshold quantity: 50, available: 40. "]
    );
    assert_eq!(brief(&sim, "uid-many").1, "Evicted");
    assert_eq!(sim.engine.node_conditions(), ["DiskPressure"]);
}

/// pid.available (the kubelet's signal, opt-in like there): PIDPressure, new pods rejected,
/// and the lowest-priority pod with the most tasks evicted, with the kubelet's message and no
/// per-container part.
#[test]
fn pid_pressure_evicts_the_pod_with_the_most_tasks() {
    let mut sim = Sim::new(&[]);
    let mut n = node();
    n.eviction_hard = parse_eviction_hard("pid.available<10%").unwrap();
    sim.engine.set_node(n);
    add(&mut sim, "a.yaml", &pod_yaml("few", "", ""));
    add(&mut sim, "b.yaml", &pod_yaml("many", "", ", resources: {requests: {memory: 100Mi}}"));
    add(&mut sim, "c.yaml", &pod_yaml("hi", "  priority: 1000\n", ""));
    sim.run_until(0);
    sim.take();
    let usage = |tasks: u64| PodUsage { processes: Some(tasks), ..Default::default() };
    let readings = NodeReadings {
        pids: Some(PidReading { capacity: 1000, available: 50 }),
        pods: [("uid-few", usage(5)), ("uid-many", usage(800)), ("uid-hi", usage(900))]
            .into_iter()
            .map(|(u, p)| (u.to_string(), p))
            .collect(),
        ..Default::default()
    };
    sim.now = 10;
    sim.engine.observe(Observed::NodeReadings(Box::new(readings)), t(10));
    sim.run_until(10);
    assert_eq!(
        evictions(&sim.take()),
        ["10 Event Warning Evicted: The node was low on resource: pids. Threshold quantity: 100, available: 50. "]
    );
    assert_eq!(brief(&sim, "uid-many"), ("Failed".into(), "Evicted".into()));
    assert_eq!(sim.engine.node_conditions(), ["PIDPressure"]);
    add(&mut sim, "d.yaml", &pod_yaml("late", "", ""));
    sim.run_until(11);
    let s = sim.status_of("uid-late").unwrap();
    assert_eq!(brief(&sim, "uid-late"), ("Failed".into(), "Evicted".into()));
    assert_eq!(
        s.message.as_deref(),
        Some("Pod was rejected: The node had condition: [PIDPressure]. ")
    );
}
