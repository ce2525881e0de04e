//! Pod removal, replacement, grace periods and activeDeadlineSeconds.

use super::sim::*;

const FULL: &str = r#"
metadata: {name: web}
spec:
  initContainers:
  - {name: proxy, image: "envoy:1.30", restartPolicy: Always}
  - {name: logs, image: "fluentbit:3", restartPolicy: Always}
  containers:
  - {name: a, image: "nginx:1.27"}
  - {name: b, image: "nginx:1.27"}
"#;

/// Removal: app containers stop together, then sidecars one at a time in reverse order, each
/// SIGTERM escalating to SIGKILL at the end of the grace period; then the sandbox goes.
#[test]
fn removal_stops_apps_then_sidecars_in_reverse_with_grace_then_sandbox() {
    let mut sim = Sim::new(&[pod(FULL)]);
    sim.script("a").term = Some(2);
    sim.script("b").term = None;
    sim.script("logs").term = Some(1);
    sim.run_until(10);
    assert_eq!(sim.summary(), "Running");
    sim.take();
    sim.delete("web");
    sim.run_until(15);
    let pods: Vec<_> = sim.engine.pods().collect();
    assert_eq!(super::super::summary(&pods[0]), "Terminating");
    assert_eq!(pods[0].metadata.deletion_grace_period_seconds, Some(30));
    sim.run_until(100);
    assert_eq!(
        sim.actions(),
        [
            "10 Kill a#0 Term",
            "10 Kill b#0 Term",
            "40 Kill b#0 Kill",
            "40 Kill logs#0 Term",
            "41 Kill proxy#0 Term",
            "41 RemoveSandbox",
            "41 RemoveLogs"
        ]
    );
    assert_eq!(sim.engine.pods().count(), 0);
    assert_eq!(sim.status_of("uid-web"), None);
    assert_eq!(sim.engine.next_wakeup(), None);
}

/// Deleting a pod whose container waits in CrashLoopBackOff: nothing to kill, the sandbox goes
/// at once and the pending restart never happens.
#[test]
fn deletion_during_backoff_removes_sandbox_and_never_restarts() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "busybox:1.36"}
"#)]);
    sim.script("app").exit = Box::new(|_| Some((1, 1, false)));
    sim.run_until(5);
    assert_eq!(sim.summary(), "CrashLoopBackOff");
    sim.take();
    sim.delete("web");
    sim.run_until(1000);
    assert_eq!(sim.take(), ["5 RemoveSandbox", "5 RemoveLogs"]);
    assert_eq!(sim.engine.pods().count(), 0);
}

/// A pull in flight when the pod goes away is abandoned; its late result is ignored.
#[test]
fn deletion_while_pulling_abandons_the_start() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "huge:1"}
"#)]);
    sim.script("app").pull = Box::new(|_| (60, Ok(())));
    sim.run_until(5);
    sim.take();
    sim.delete("web");
    sim.run_until(100);
    assert_eq!(sim.take(), ["5 RemoveSandbox", "5 RemoveLogs"]);
    assert_eq!(sim.engine.pods().count(), 0);
}

/// A manifest restored with identical content has the same UID: the kubelet lets the old
/// instance terminate fully, then starts it afresh.
#[test]
fn re_adding_a_pod_being_removed_restarts_it_after_termination() {
    let p = pod(r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "busybox:1.36"}
"#);
    let mut sim = Sim::new(std::slice::from_ref(&p));
    sim.script("app").term = None;
    sim.run_until(5);
    sim.delete("web");
    sim.run_until(10);
    sim.apply(p);
    sim.take();
    sim.run_until(100);
    assert_eq!(
        sim.actions(),
        [
            "35 Kill app#0 Kill",
            "35 RemoveSandbox",
            "35 RemoveLogs",
            "35 CreateSandbox",
            "35 PullImage app#0 busybox:1.36",
            "35 StartContainer app#0"
        ]
    );
    assert_eq!(running_since(&sim.ctr("app")), Some(35));
    assert_eq!(sim.ctr("app").restart_count, 0);
}

/// activeDeadlineSeconds counts from the pod's startTime; the pod fails with DeadlineExceeded
/// and its containers are stopped, never restarted.
#[test]
fn active_deadline_fails_pod_with_deadline_exceeded() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: job}
spec:
  activeDeadlineSeconds: 30
  restartPolicy: OnFailure
  containers:
  - {name: work, image: "busybox:1.36"}
"#)]);
    sim.run_until(29);
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.engine.next_wakeup().map(|w| secs(&w)), Some(30));
    sim.take();
    sim.run_until(1000);
    assert_eq!(
        sim.take(),
        [
            "30 Event Normal DeadlineExceeded: Pod was active on the node longer than the specified deadline",
            "30 Event work Normal Killing: Stopping container work",
            "30 Kill work#0 Term",
            "30 RemoveSandbox",
        ]
    );
    let s = sim.status();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        s.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(sim.summary(), "Error"); // kubectl lets the container's reason win
    assert_eq!(term(&sim.ctr("work").state), Some((143, "Error".into(), 0, 30)));
    assert_eq!(secs(&s.start_time.unwrap().0), 0);
    assert_eq!(sim.engine.next_wakeup(), None);
}

/// A finished pod stays visible until its manifest goes, then is forgotten at once.
#[test]
fn completed_pod_is_forgotten_when_manifest_is_deleted() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: job}
spec:
  restartPolicy: Never
  containers:
  - {name: work, image: "busybox:1.36"}
"#)]);
    sim.script("work").exit = Box::new(|_| Some((3, 0, false)));
    sim.run_until(50);
    assert_eq!(sim.phase(), "Succeeded");
    sim.take();
    sim.delete("job");
    sim.run_until(60);
    // Nothing runs any more: the pod is forgotten, and its logs go with it.
    assert_eq!(sim.take(), ["50 RemoveLogs"]);
    assert_eq!(sim.engine.pods().count(), 0);
}

const SLOW: &str = r#"
metadata: {name: web}
spec:
  containers:
  - name: app
    image: "huge:1"
    lifecycle:
      postStart: {exec: {command: [warm-up]}}
"#;

/// Delete and restore of the same manifest (same UID) while a pull is in flight: the old
/// copy's pull answers after the new copy asked for its own, and must not be taken for it.
#[test]
fn restored_pod_ignores_the_late_pull_of_its_deleted_copy() {
    let p = pod(SLOW);
    let mut sim = Sim::new(std::slice::from_ref(&p));
    sim.script("app").pull = Box::new(|_| (60, Ok(())));
    sim.run_until(5);
    sim.delete("web");
    sim.run_until(6);
    sim.apply(p);
    sim.take();
    sim.run_until(100);
    assert_eq!(
        sim.actions(),
        [
            "6 CreateSandbox",
            "6 PullImage app#0 huge:1",
            "66 StartContainer app#0",
            "66 RunHook app#0 PostStart"
        ]
    );
}

/// The same for a postStart hook still running when the pod was deleted: its late success
/// must not bring the restored copy's container up before its own hook has run.
#[test]
fn restored_pod_ignores_the_late_post_start_hook_of_its_deleted_copy() {
    let p = pod(SLOW);
    let mut sim = Sim::new(std::slice::from_ref(&p));
    sim.script("app").hook = Box::new(|_, _| (30, Ok(())));
    sim.run_until(5);
    sim.delete("web");
    sim.run_until(6);
    assert_eq!(sim.engine.pods().count(), 0);
    sim.apply(p);
    sim.run_until(31); // the old hook answered at 30
    let app = sim.ctr("app");
    assert_eq!((waiting(&app).0.as_str(), app.started), ("ContainerCreating", Some(false)));
    sim.run_until(36);
    let app = sim.ctr("app");
    assert_eq!((running_since(&app), app.started, app.ready), (Some(6), Some(true), true));
}
