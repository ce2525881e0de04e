use super::sim::*;

const WEB: &str = r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "nginx:1.27"}
"#;

#[test]
fn pod_start_sandbox_pull_create_start_in_kubelet_order() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.run_until(0);
    assert_eq!(
        sim.take(),
        [
            "0 CreateSandbox",
            "0 PullImage app#0 nginx:1.27",
            "0 Event app Normal Pulling: Pulling image \"nginx:1.27\"",
            "0 Event app Normal Pulled: Successfully pulled image \"nginx:1.27\" in 1.234s (1.5s including waiting). Image size: 4269694 bytes.",
            "0 StartContainer app#0",
            "0 Event app Normal Created: Created container: app",
            "0 Event app Normal Started: Started container app",
        ]
    );
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.summary(), "Running");
    let app = sim.ctr("app");
    assert_eq!((app.ready, app.started, app.restart_count), (true, Some(true), 0));
    assert_eq!(running_since(&app), Some(0));
    for c in
        ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    {
        assert_eq!(cond_brief(&sim.cond(c)), ("True".into(), "".into(), "".into(), 0), "{c}");
    }
    assert_eq!(sim.engine.next_wakeup(), None);
}

/// `status.qosClass` as the API server sets it (ComputePodQOS), from the first status on. The
/// sim's pods are not defaulted: requests are written out as the manifest module fills them.
#[test]
fn status_carries_the_qos_class() {
    let guaranteed = pod(r#"
metadata: {name: g}
spec:
  containers:
  - {name: app, image: "nginx:1.27", resources: {requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}}
"#);
    let burstable = pod(r#"
metadata: {name: b}
spec:
  containers:
  - {name: app, image: "nginx:1.27", resources: {requests: {memory: 64Mi}}}
"#);
    let mut sim = Sim::new(&[pod(WEB), guaranteed, burstable]);
    sim.run_until(0);
    let qos = |uid: &str| sim.status_of(uid).and_then(|s| s.qos_class);
    assert_eq!(qos("uid-web").as_deref(), Some("BestEffort"));
    assert_eq!(qos("uid-g").as_deref(), Some("Guaranteed"));
    assert_eq!(qos("uid-b").as_deref(), Some("Burstable"));
}
