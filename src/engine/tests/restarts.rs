//! restartPolicy and crash-loop back-off (kubelet `doBackOff` + `flowcontrol.Backoff`).

use super::sim::*;

fn web(policy: &str) -> String {
    format!(
        r#"
metadata: {{name: web}}
spec:
  restartPolicy: {policy}
  containers:
  - {{name: app, image: "busybox:1.36"}}
"#
    )
}

fn starts(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l.contains("StartContainer"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// The kubelet restarts at once after the first exit (no back-off entry yet), then waits
/// 10s, 20s, 40s, 80s, 160s and 300s (the cap) measured from each exit.
#[test]
fn crash_loop_backoff_sequence_10_20_40_80_160_300_300() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|_| Some((1, 1, false)));
    sim.run_until(2);
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(
        waiting(&app),
        (
            "CrashLoopBackOff".into(),
            "back-off 10s restarting failed container=app pod=web_default(uid-web)".into()
        )
    );
    assert_eq!(term(&app.last_state), Some((1, "Error".into(), 1, 2)));
    assert_eq!(sim.summary(), "CrashLoopBackOff");
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.engine.next_wakeup().map(|w| secs(&w)), Some(12));
    sim.run_until(1000);
    let lines = sim.take();
    assert_eq!(starts(&lines), [0, 1, 12, 33, 74, 155, 316, 617, 918]);
    let gaps: Vec<i64> = starts(&lines).windows(2).map(|w| w[1] - (w[0] + 1)).collect();
    assert_eq!(gaps, [0, 10, 20, 40, 80, 160, 300, 300]);
    // One BackOff warning per back-off period, with the kubelet's text.
    let backoffs: Vec<&String> = lines.iter().filter(|l| l.contains("BackOff")).collect();
    assert_eq!(backoffs.len(), 8);
    assert_eq!(
        backoffs[0],
        "2 Event app Warning BackOff: Back-off restarting failed container app in pod web_default(uid-web)"
    );
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 8);
    assert_eq!(
        waiting(&app).1,
        "back-off 5m0s restarting failed container=app pod=web_default(uid-web)"
    );
}

/// `flowcontrol.Backoff` forgets a key untouched for 2×300s: a container that ran more than
/// 10 minutes restarts at once and the next back-off is 10s again.
#[test]
fn crash_loop_backoff_resets_after_running_ten_minutes() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|a| Some((if a == 3 { 700 } else { 1 }, 1, false)));
    sim.run_until(800);
    assert_eq!(starts(&sim.take()), [0, 1, 12, 33, 733, 744, 765]);
}

#[test]
fn back_off_message_uses_go_duration_format() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|_| Some((1, 1, false)));
    sim.run_until(75); // fifth exit at 75: the back-off is 80s
    assert_eq!(
        waiting(&sim.ctr("app")).1,
        "back-off 1m20s restarting failed container=app pod=web_default(uid-web)"
    );
}

#[test]
fn always_restarts_even_after_exit_0_with_reason_completed() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|_| Some((5, 0, false)));
    sim.run_until(11);
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(waiting(&app).0, "CrashLoopBackOff");
    assert_eq!(term(&app.last_state), Some((0, "Completed".into(), 5, 10)));
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn oom_killed_shows_in_last_state() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|_| Some((3, 137, true)));
    sim.run_until(3);
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(term(&app.last_state), Some((137, "OOMKilled".into(), 0, 3)));
}

#[test]
fn restart_policy_never_exit_1_fails_the_pod_and_never_restarts() {
    let mut sim = Sim::new(&[pod(&web("Never"))]);
    sim.script("app").exit = Box::new(|_| Some((4, 1, false)));
    sim.run_until(1000);
    assert_eq!(starts(&sim.actions()), [0]);
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(sim.summary(), "Error");
    let app = sim.ctr("app");
    assert_eq!(term(&app.state), Some((1, "Error".into(), 0, 4)));
    assert_eq!((app.restart_count, app.ready, app.started), (0, false, Some(false)));
    assert_eq!(
        cond_brief(&sim.cond("Ready")),
        (
            "False".into(),
            "ContainersNotReady".into(),
            "containers with unready status: [app]".into(),
            4
        )
    );
    // The kubelet kills a finished pod's sandbox.
    assert_eq!(cond_brief(&sim.cond("PodReadyToStartContainers")).0, "False");
}

#[test]
fn restart_policy_never_exit_0_succeeds_and_removes_sandbox() {
    let mut sim = Sim::new(&[pod(&web("Never"))]);
    sim.script("app").exit = Box::new(|_| Some((4, 0, false)));
    sim.run_until(1000);
    assert_eq!(
        sim.actions(),
        [
            "0 CreateSandbox",
            "0 PullImage app#0 busybox:1.36",
            "0 StartContainer app#0",
            "4 RemoveSandbox"
        ]
    );
    assert_eq!(sim.phase(), "Succeeded");
    assert_eq!(sim.summary(), "Completed");
    assert_eq!(
        cond_brief(&sim.cond("Ready")),
        ("False".into(), "PodCompleted".into(), "".into(), 4)
    );
    assert_eq!(
        cond_brief(&sim.cond("Initialized")),
        ("True".into(), "PodCompleted".into(), "".into(), 0)
    );
    assert_eq!(sim.engine.next_wakeup(), None);
}

#[test]
fn restart_policy_on_failure_restarts_failures_and_succeeds_on_exit_0() {
    let mut sim = Sim::new(&[pod(&web("OnFailure"))]);
    sim.script("app").exit = Box::new(|a| Some((2, if a < 2 { 1 } else { 0 }, false)));
    sim.run_until(1000);
    // Exit at 2 → at once; exit at 4 → 10s; exit 0 at 16 → done.
    assert_eq!(starts(&sim.take()), [0, 2, 14]);
    assert_eq!(sim.phase(), "Succeeded");
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 2);
    assert_eq!(term(&app.state), Some((0, "Completed".into(), 14, 16)));
    assert_eq!(term(&app.last_state), Some((1, "Error".into(), 2, 4)));
}

/// getPhase: with restartPolicy Never the pod runs while any container runs, and fails once
/// all have terminated with at least one failure.
#[test]
fn never_pod_with_one_failed_container_stays_running_until_all_terminate() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  restartPolicy: Never
  containers:
  - {name: a, image: "busybox:1.36"}
  - {name: b, image: "busybox:1.36"}
"#)]);
    sim.script("a").exit = Box::new(|_| Some((5, 3, false)));
    sim.script("b").exit = Box::new(|_| Some((50, 0, false)));
    sim.run_until(10);
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.summary(), "Error"); // kubectl shows the last container's trouble
    assert_eq!(cond_brief(&sim.cond("Ready")).2, "containers with unready status: [a]");
    sim.run_until(100);
    assert_eq!(sim.phase(), "Failed");
}

/// The kubelet keeps one dead instance per container for `logs --previous`.
#[test]
fn dead_instances_older_than_the_previous_one_are_removed() {
    let mut sim = Sim::new(&[pod(&web("Always"))]);
    sim.script("app").exit = Box::new(|_| Some((1, 1, false)));
    sim.run_until(40);
    let removes: Vec<String> = sim.actions().into_iter().filter(|l| l.contains("Remove")).collect();
    assert_eq!(removes, ["12 RemoveContainer app#0", "33 RemoveContainer app#1"]);
}
