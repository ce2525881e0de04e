//! Lifecycle hooks: postStart blocks (kubelet startContainer), preStop precedes TERM
//! (kubelet killContainer) and eats into the grace period.

use super::sim::*;
use crate::engine::HookKind;

const HOOKED: &str = r#"
metadata: {name: web}
spec:
  restartPolicy: Always
  containers:
  - name: app
    image: "nginx:1.27"
    lifecycle:
      postStart: {exec: {command: [warm-up]}}
      preStop: {exec: {command: [drain]}}
  - {name: second, image: "busybox:1.36"}
"#;

/// The container is neither Running nor started until postStart returns, and the kubelet
/// starts the next container only after it (startContainer runs the hook synchronously).
#[test]
fn post_start_holds_running_state_and_next_container() {
    let mut sim = Sim::new(&[pod(HOOKED)]);
    sim.script("app").hook =
        Box::new(|k, _| (if k == HookKind::PostStart { 5 } else { 0 }, Ok(())));
    sim.run_until(3);
    let app = sim.ctr("app");
    assert_eq!(waiting(&app).0, "ContainerCreating");
    assert_eq!((app.started, app.ready), (Some(false), false));
    assert_eq!(sim.phase(), "Pending");
    sim.run_until(10);
    let app = sim.ctr("app");
    assert_eq!((running_since(&app), app.started, app.ready), (Some(0), Some(true), true));
    assert_eq!(
        sim.actions(),
        [
            "0 CreateSandbox",
            "0 PullImage app#0 nginx:1.27",
            "0 StartContainer app#0",
            "0 RunHook app#0 PostStart",
            "5 PullImage second#0 busybox:1.36",
            "5 StartContainer second#0"
        ]
    );
    assert_eq!(sim.phase(), "Running");
}

/// postStart failure: FailedPostStartHook event, the container is killed (preStop first),
/// and restarted under the restart policy.
#[test]
fn post_start_failure_kills_container_and_restarts() {
    let mut sim = Sim::new(&[pod(HOOKED)]);
    sim.script("app").hook = Box::new(|k, a| {
        let fail = k == HookKind::PostStart && a == 0;
        (
            if fail { 1 } else { 0 },
            if fail {
                Err("Exec lifecycle hook ([warm-up]) for Container \"app\" in Pod \"web_default(uid-web)\" failed - error: command 'warm-up' exited with 1: , message: \"\"".into())
            } else {
                Ok(())
            },
        )
    });
    sim.script("app").term = Some(2);
    sim.run_until(2);
    // Being killed, never came up: waiting with the kubelet's reason, not running.
    let app = sim.ctr("app");
    assert_eq!(waiting(&app).0, "PostStartHookError");
    assert!(waiting(&app).1.starts_with("Exec lifecycle hook ([warm-up])"));
    assert_eq!((app.started, app.ready), (Some(false), false));
    sim.run_until(3);
    assert_eq!(
        sim.take().into_iter().filter(|l| !l.starts_with("0 ")).collect::<Vec<_>>(),
        [
            // As the kubelet: no hook output in events (it may hold secrets); the status has it.
            "1 Event app Warning FailedPostStartHook: PostStartHook failed",
            "1 Event app Normal Killing: FailedPostStartHook",
            "1 RunHook app#0 PreStop timeout=30s",
            // The start pipeline is free again: the kubelet moves on to the next container.
            "1 PullImage second#0 busybox:1.36",
            "1 Kill app#0 Term",
            "1 Event second Normal Pulling: Pulling image \"busybox:1.36\"",
            "1 Event second Normal Pulled: Successfully pulled image \"busybox:1.36\" in 1.234s (1.5s including waiting). Image size: 4269694 bytes.",
            "1 StartContainer second#0",
            "1 Event second Normal Created: Created container: second",
            "1 Event second Normal Started: Started container second",
            "3 PullImage app#1 nginx:1.27",
            "3 Event app Normal Pulling: Pulling image \"nginx:1.27\"",
            "3 Event app Normal Pulled: Successfully pulled image \"nginx:1.27\" in 1.234s (1.5s including waiting). Image size: 4269694 bytes.",
            "3 StartContainer app#1",
            "3 Event app Normal Created: Created container: app",
            "3 Event app Normal Started: Started container app",
            "3 RunHook app#1 PostStart",
        ]
    );
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(term(&app.last_state), Some((143, "Error".into(), 0, 3)));
}

#[test]
fn post_start_failure_under_never_shows_post_start_hook_error_then_fails() {
    let mut sim = Sim::new(&[pod(&HOOKED.replace("Always", "Never"))]);
    sim.script("app").hook = Box::new(|k, _| {
        (0, if k == HookKind::PostStart { Err("hook failed".into()) } else { Ok(()) })
    });
    sim.run_until(1);
    let app = sim.ctr("app");
    assert_eq!(term(&app.state), Some((143, "Error".into(), 0, 0)));
    assert_eq!(app.restart_count, 0);
    assert_eq!(sim.actions().iter().filter(|l| l.contains("StartContainer app")).count(), 1);
}

/// preStop runs before SIGTERM on every stop; the time it takes comes out of the grace period.
#[test]
fn pre_stop_runs_before_term_on_deletion() {
    let mut sim = Sim::new(&[pod(HOOKED)]);
    sim.script("app").hook = Box::new(|k, _| (if k == HookKind::PreStop { 5 } else { 0 }, Ok(())));
    sim.run_until(10);
    sim.take();
    sim.delete("web");
    sim.run_until(100);
    assert_eq!(
        sim.take(),
        [
            "10 Event app Normal Killing: Stopping container app",
            "10 RunHook app#0 PreStop timeout=30s",
            "10 Event second Normal Killing: Stopping container second",
            "10 Kill second#0 Term",
            "15 Kill app#0 Term",
            "15 RemoveSandbox",
            "15 RemoveLogs",
        ]
    );
    assert_eq!(sim.engine.pods().count(), 0);
}

/// A preStop hook that outlives the grace period is abandoned: TERM at the deadline, and
/// KILL after the kubelet's 2 s minimum.
#[test]
fn pre_stop_longer_than_grace_then_term_then_kill_after_two_seconds() {
    let mut p = pod(HOOKED);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(10);
    let mut sim = Sim::new(&[p]);
    sim.script("app").hook = Box::new(|k, _| (if k == HookKind::PreStop { 60 } else { 0 }, Ok(())));
    sim.script("app").term = None;
    sim.run_until(10);
    sim.take();
    sim.delete("web");
    sim.run_until(100);
    let app: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("app") || l.contains("Sandbox")).collect();
    assert_eq!(
        app,
        [
            "10 RunHook app#0 PreStop timeout=10s",
            "20 Kill app#0 Term",
            "22 Kill app#0 Kill",
            "22 RemoveSandbox"
        ]
    );
}

#[test]
fn pre_stop_failure_is_reported_and_term_follows_at_once() {
    let mut sim = Sim::new(&[pod(HOOKED)]);
    sim.script("app").hook = Box::new(|k, _| {
        (1, if k == HookKind::PreStop { Err("drain: exit 3".into()) } else { Ok(()) })
    });
    sim.run_until(10);
    sim.take();
    sim.delete("web");
    sim.run_until(100);
    let app: Vec<String> = sim.take().into_iter().filter(|l| l.contains("app")).collect();
    assert_eq!(
        app,
        [
            "10 Event app Normal Killing: Stopping container app",
            "10 RunHook app#0 PreStop timeout=30s",
            // As the kubelet: no hook output in events (it may hold secrets).
            "11 Event app Warning FailedPreStopHook: PreStopHook failed",
            "11 Kill app#0 Term"
        ]
    );
}

/// The kubelet runs preStop on every kill, liveness kills included.
#[test]
fn pre_stop_runs_on_liveness_kill_too() {
    let mut sim = Sim::new(&[pod(&HOOKED.replace(
        "      preStop: {exec: {command: [drain]}}",
        "      preStop: {exec: {command: [drain]}}\n    livenessProbe: {exec: {command: [ok]}, failureThreshold: 1, initialDelaySeconds: 1}",
    ))]);
    sim.script("app").probe =
        Box::new(|_, now| (0, if now == 21 { Err("boom".into()) } else { Ok(()) }));
    sim.run_until(21);
    let app: Vec<String> =
        sim.actions().into_iter().filter(|l| l.starts_with("21") && l.contains("app")).collect();
    assert_eq!(
        app,
        [
            "21 RunProbe app#0 Liveness timeout=1s",
            "21 RunHook app#0 PreStop timeout=30s",
            "21 Kill app#0 Term",
            "21 PullImage app#1 nginx:1.27",
            "21 StartContainer app#1",
            "21 RunHook app#1 PostStart"
        ]
    );
}

/// A failed postStart is killed inside the kubelet's startContainer with no restart decided;
/// the next sync's ShouldContainerBeRestarted goes by the exit code. Under OnFailure a
/// container that exits 0 on SIGTERM therefore stays down...
#[test]
fn post_start_failure_under_on_failure_exit_0_is_not_restarted() {
    let mut sim = Sim::new(&[pod(&HOOKED.replace("Always", "OnFailure"))]);
    sim.script("app").hook = Box::new(|k, _| {
        (0, if k == HookKind::PostStart { Err("hook failed".into()) } else { Ok(()) })
    });
    sim.script("app").graceful = true;
    sim.run_until(100);
    let starts: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("StartContainer")).collect();
    assert_eq!(starts, ["0 StartContainer app#0", "0 StartContainer second#0"]);
    let app = sim.ctr("app");
    assert_eq!(term(&app.state), Some((0, "Completed".into(), 0, 0)));
    assert_eq!(app.restart_count, 0);
    assert_eq!(sim.phase(), "Running"); // `second` still runs
}

/// ...while one killed by the signal (exit 143) comes back.
#[test]
fn post_start_failure_under_on_failure_killed_by_signal_is_restarted() {
    let mut sim = Sim::new(&[pod(&HOOKED.replace("Always", "OnFailure"))]);
    sim.script("app").hook = Box::new(|k, a| {
        (0, if k == HookKind::PostStart && a == 0 { Err("hook failed".into()) } else { Ok(()) })
    });
    sim.run_until(100);
    let starts: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("StartContainer app")).collect();
    assert_eq!(starts, ["0 StartContainer app#0", "0 StartContainer app#1"]);
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, running_since(&app)), (1, Some(0)));
    assert_eq!(term(&app.last_state), Some((143, "Error".into(), 0, 0)));
}
