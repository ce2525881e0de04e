//! Init containers and sidecars (computeInitContainerActions, getPhase, Initialized condition).

use super::sim::*;

fn two_inits(policy: &str) -> String {
    format!(
        r#"
metadata: {{name: web}}
spec:
  restartPolicy: {policy}
  initContainers:
  - {{name: init1, image: "busybox:1.36"}}
  - {{name: init2, image: "busybox:1.36"}}
  containers:
  - {{name: app, image: "nginx:1.27"}}
"#
    )
}

#[test]
fn init_containers_run_one_at_a_time_then_app_with_kubectl_statuses() {
    let mut sim = Sim::new(&[pod(&two_inits("Always"))]);
    sim.script("init1").exit = Box::new(|_| Some((3, 0, false)));
    sim.script("init2").exit = Box::new(|_| Some((4, 0, false)));
    sim.script("app").pull = Box::new(|_| (5, Ok(())));
    sim.run_until(1);
    assert_eq!((sim.summary().as_str(), sim.phase().as_str()), ("Init:0/2", "Pending"));
    assert_eq!(
        cond_brief(&sim.cond("Initialized")),
        (
            "False".into(),
            "ContainersNotInitialized".into(),
            "containers with incomplete status: [init1 init2]".into(),
            0
        )
    );
    assert_eq!(waiting(&sim.ctr("app")).0, "PodInitializing");
    assert_eq!(waiting(&sim.ctr("init2")).0, "PodInitializing");
    let init1 = sim.ctr("init1");
    assert_eq!((init1.started, init1.ready), (Some(true), false));
    sim.run_until(5);
    assert_eq!(sim.summary(), "Init:1/2");
    assert_eq!(
        cond_brief(&sim.cond("Initialized")).2,
        "containers with incomplete status: [init2]"
    );
    let init1 = sim.ctr("init1");
    assert_eq!(term(&init1.state), Some((0, "Completed".into(), 0, 3)));
    assert_eq!((init1.started, init1.ready), (Some(false), true));
    sim.run_until(8);
    assert_eq!((sim.summary().as_str(), sim.phase().as_str()), ("PodInitializing", "Pending"));
    assert_eq!(cond_brief(&sim.cond("Initialized")), ("True".into(), "".into(), "".into(), 7));
    sim.run_until(20);
    assert_eq!((sim.summary().as_str(), sim.phase().as_str()), ("Running", "Running"));
    assert_eq!(
        sim.actions(),
        [
            "0 CreateSandbox",
            "0 PullImage init1#0 busybox:1.36",
            "0 StartContainer init1#0",
            "3 PullImage init2#0 busybox:1.36",
            "3 StartContainer init2#0",
            "7 PullImage app#0 nginx:1.27",
            "12 StartContainer app#0",
        ]
    );
}

fn init_failure(policy: &str) -> Sim {
    let mut sim = Sim::new(&[pod(&two_inits(policy))]);
    sim.script("init1").exit = Box::new(|a| Some((2, if a < 2 { 1 } else { 0 }, false)));
    sim.script("init2").exit = Box::new(|_| Some((1, 0, false)));
    sim
}

/// Under Always and OnFailure a failed init container is restarted (with back-off) and the
/// app waits; the kubelet never reruns init containers that succeeded.
#[test]
fn init_failure_under_always_and_on_failure_restarts_the_init_container() {
    for policy in ["Always", "OnFailure"] {
        let mut sim = init_failure(policy);
        sim.run_until(5);
        assert_eq!(sim.summary(), "Init:CrashLoopBackOff", "{policy}");
        assert_eq!(sim.phase(), "Pending");
        let init1 = sim.ctr("init1");
        assert_eq!(init1.restart_count, 1);
        assert_eq!(term(&init1.last_state), Some((1, "Error".into(), 2, 4)));
        sim.run_until(100);
        let starts: Vec<String> =
            sim.actions().into_iter().filter(|l| l.contains("Start")).collect();
        assert_eq!(
            starts,
            [
                "0 StartContainer init1#0",
                "2 StartContainer init1#1",
                "14 StartContainer init1#2",
                "16 StartContainer init2#0",
                "17 StartContainer app#0"
            ],
            "{policy}"
        );
        assert_eq!(sim.phase(), "Running");
    }
}

/// getPhase: a failed init container with restartPolicy Never fails the pod at once.
#[test]
fn init_failure_under_never_fails_the_pod() {
    let mut sim = init_failure("Never");
    sim.run_until(100);
    assert_eq!(
        sim.actions(),
        [
            "0 CreateSandbox",
            "0 PullImage init1#0 busybox:1.36",
            "0 StartContainer init1#0",
            "2 RemoveSandbox"
        ]
    );
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Failed", "Init:Error"));
    assert_eq!(term(&sim.ctr("init1").state), Some((1, "Error".into(), 0, 2)));
    assert_eq!(waiting(&sim.ctr("app")).0, "PodInitializing");
    assert_eq!(
        cond_brief(&sim.cond("Initialized")).2,
        "containers with incomplete status: [init1 init2]"
    );
}

const SIDECARS: &str = r#"
metadata: {name: web}
spec:
  restartPolicy: Never
  initContainers:
  - name: proxy
    image: "envoy:1.30"
    restartPolicy: Always
    startupProbe: {exec: {command: [ready]}, periodSeconds: 5, failureThreshold: 10}
  - {name: migrate, image: "busybox:1.36"}
  - {name: logs, image: "fluentbit:3", restartPolicy: Always}
  containers:
  - {name: app, image: "nginx:1.27"}
"#;

/// Sidecars (restartable init containers) start in order, must have *started* (startup probe)
/// before the next init container, and keep running next to the app.
#[test]
fn sidecars_start_in_order_gate_on_startup_and_keep_running() {
    let mut sim = Sim::new(&[pod(SIDECARS)]);
    sim.script("proxy").probe =
        Box::new(|_, now| (0, if now < 10 { Err("not yet".into()) } else { Ok(()) }));
    sim.script("migrate").exit = Box::new(|_| Some((1, 0, false)));
    sim.script("app").exit = Box::new(|_| Some((100, 0, false)));
    sim.run_until(6);
    assert_eq!(sim.summary(), "Init:0/3");
    assert_eq!(
        cond_brief(&sim.cond("Initialized")).2,
        "containers with incomplete status: [proxy migrate logs]"
    );
    let proxy = sim.ctr("proxy");
    assert_eq!((running_since(&proxy), proxy.started, proxy.ready), (Some(0), Some(false), false));
    sim.run_until(50);
    assert_eq!(
        sim.actions()
            .into_iter()
            .filter(|l| l.contains("Start") || l.contains("Probe"))
            .collect::<Vec<_>>(),
        [
            "0 StartContainer proxy#0",
            "0 RunProbe proxy#0 Startup timeout=1s",
            "5 RunProbe proxy#0 Startup timeout=1s",
            "10 RunProbe proxy#0 Startup timeout=1s",
            "10 StartContainer migrate#0",
            "11 StartContainer logs#0",
            "11 StartContainer app#0",
        ]
    );
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Running", "Running"));
    let proxy = sim.ctr("proxy");
    assert_eq!((proxy.started, proxy.ready), (Some(true), true));
    assert_eq!(cond_brief(&sim.cond("Ready")), ("True".into(), "".into(), "".into(), 11));
}

/// When every app container is done (policy not Always) the kubelet stops the sidecars, in
/// reverse order, and the pod completes: terminated sidecars do not count against it.
#[test]
fn sidecars_stop_in_reverse_after_app_completes_and_pod_succeeds() {
    let mut sim = Sim::new(&[pod(SIDECARS)]);
    sim.script("migrate").exit = Box::new(|_| Some((1, 0, false)));
    sim.script("app").exit = Box::new(|_| Some((20, 0, false)));
    sim.script("logs").term = Some(3);
    sim.run_until(100);
    let tail: Vec<String> =
        sim.actions().into_iter().skip_while(|l| !l.starts_with("21")).collect();
    assert_eq!(tail, ["21 Kill logs#0 Term", "24 Kill proxy#0 Term", "24 RemoveSandbox"]);
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Succeeded", "Completed"));
    assert_eq!(term(&sim.ctr("logs").state), Some((143, "Error".into(), 1, 24)));
}

/// A sidecar that dies after initialization is restarted with back-off; the app is untouched.
#[test]
fn sidecar_restarts_with_backoff_even_in_never_pods() {
    let mut sim = Sim::new(&[pod(SIDECARS)]);
    sim.script("migrate").exit = Box::new(|_| Some((1, 0, false)));
    sim.script("logs").exit = Box::new(|_| Some((5, 1, false)));
    sim.run_until(30);
    let logs: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("StartContainer")).collect();
    assert_eq!(
        logs,
        [
            "0 StartContainer proxy#0",
            "0 StartContainer migrate#0",
            "1 StartContainer logs#0",
            "1 StartContainer app#0",
            "6 StartContainer logs#1",
            "21 StartContainer logs#2"
        ]
    );
    assert_eq!(sim.phase(), "Running");
    assert_eq!(running_since(&sim.ctr("app")), Some(1));
}

/// Editing the manifest gives a new UID: the kubelet kills the old pod (grace period, then
/// KILL) and starts the new one only once the old one is gone.
#[test]
fn edit_during_init_stops_old_pod_then_starts_new_one() {
    let mut sim = Sim::new(&[pod(&two_inits("Always"))]);
    sim.script("init1").term = None; // ignores SIGTERM
    sim.run_until(5);
    sim.take();
    let mut v2 = pod(&two_inits("Always").replace("nginx:1.27", "nginx:1.28"));
    v2.metadata.uid = Some("uid-web-2".into());
    sim.apply(v2);
    sim.run_until(20);
    assert_eq!(
        sim.take(),
        ["5 Event init1 Normal Killing: Stopping container init1", "5 Kill init1#0 Term"]
    );
    let pods: Vec<_> = sim.engine.pods().collect();
    assert_eq!(pods.len(), 2);
    assert_eq!(
        super::super::summary(
            pods.iter().find(|p| p.metadata.uid.as_deref() == Some("uid-web")).unwrap()
        ),
        "Terminating"
    );
    let new = sim.status_of("uid-web-2").unwrap();
    assert_eq!(new.phase.as_deref(), Some("Pending"));
    sim.run_until(40);
    assert_eq!(
        sim.actions(),
        [
            "35 Kill init1#0 Kill",
            "35 RemoveSandbox",
            "35 RemoveLogs",
            "35 CreateSandbox",
            "35 PullImage init1#0 busybox:1.36",
            "35 StartContainer init1#0"
        ]
    );
    assert_eq!(sim.status_of("uid-web"), None);
    assert_eq!(sim.engine.pods().count(), 1);
    assert_eq!(term(&sim.ctr("init1").state), None);
}
