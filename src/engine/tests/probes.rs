//! Probes (prober worker: initial delay, period, thresholds; startup gates the others).

use super::sim::*;
use crate::engine::ProbeKind;

fn with_probes(policy: &str, probes: &str) -> String {
    format!(
        r#"
metadata: {{name: web}}
spec:
  restartPolicy: {policy}
  containers:
  - name: app
    image: "nginx:1.27"
{probes}
"#
    )
}

fn lines_with<'a>(lines: &'a [String], pat: &str) -> Vec<&'a str> {
    lines.iter().filter(|l| l.contains(pat)).map(String::as_str).collect()
}

const LIVENESS: &str = "    livenessProbe: {httpGet: {path: /healthz, port: 80}, initialDelaySeconds: 5, periodSeconds: 10}";

/// Liveness: failureThreshold (3) consecutive failures → Killing with the kubelet's message,
/// SIGTERM, and a restart under the restart policy (first at once, later with back-off).
#[test]
fn liveness_failure_kills_and_restarts_with_kubelet_message() {
    let mut sim = Sim::new(&[pod(&with_probes("Always", LIVENESS))]);
    sim.script("app").probe = Box::new(|_, now| {
        (0, if now < 20 { Ok(()) } else { Err("HTTP probe failed with statuscode: 500".into()) })
    });
    sim.run_until(45);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Probe"),
        [
            "5 RunProbe app#0 Liveness timeout=1s",
            "15 RunProbe app#0 Liveness timeout=1s",
            "25 RunProbe app#0 Liveness timeout=1s",
            "35 RunProbe app#0 Liveness timeout=1s",
            "45 RunProbe app#0 Liveness timeout=1s"
        ]
    );
    assert_eq!(lines_with(&lines, "Unhealthy")[0], "25 Event app Warning Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 500");
    assert_eq!(lines_with(&lines, "Unhealthy").len(), 3);
    assert_eq!(
        lines
            .iter()
            .skip_while(|l| !l.contains("Killing"))
            .map(String::as_str)
            .filter(|l| !l.contains("Event app Normal P"))
            .collect::<Vec<_>>(),
        [
            "45 Event app Normal Killing: Container app failed liveness probe, will be restarted",
            "45 Kill app#0 Term",
            "45 PullImage app#1 nginx:1.27",
            "45 StartContainer app#1",
            "45 Event app Normal Created: Created container: app",
            "45 Event app Normal Started: Started container app"
        ]
    );
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(term(&app.last_state), Some((143, "Error".into(), 0, 45)));
    // The new instance fails at 50, 60, 70 → killed again and restarted at once: the kubelet
    // restarts in the killing sync, where doBackOff sees only the exit before (45), with no
    // back-off entry yet (kubernetes#22240).
    sim.run_until(80);
    let lines = sim.actions();
    assert_eq!(lines_with(&lines, "StartContainer"), ["70 StartContainer app#2"]);
    assert_eq!(lines_with(&lines, "Kill"), ["70 Kill app#1 Term"]);
}

/// Probe kills restart in the same kubelet sync, so `doBackOff` measures from the exit before
/// the killed one: the back-off (10s, 20s, 40s after each check) only bites once it outlasts
/// the time between kills; then the wait counts from the kill (145 + 40).
#[test]
fn liveness_kill_back_off_counts_from_the_exit_before_the_killed_one() {
    let mut sim = Sim::new(&[pod(&with_probes("Always", LIVENESS))]);
    sim.script("app").probe = Box::new(|_, now| {
        (0, if now < 20 { Ok(()) } else { Err("HTTP probe failed with statuscode: 500".into()) })
    });
    sim.run_until(200);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Kill app"),
        [
            "45 Kill app#0 Term",
            "70 Kill app#1 Term",
            "95 Kill app#2 Term",
            "120 Kill app#3 Term",
            "145 Kill app#4 Term"
        ]
    );
    assert_eq!(
        lines_with(&lines, "StartContainer"),
        [
            "0 StartContainer app#0",
            "45 StartContainer app#1",
            "70 StartContainer app#2",
            "95 StartContainer app#3",
            "120 StartContainer app#4",
            "185 StartContainer app#5"
        ]
    );
    assert_eq!(
        lines_with(&lines, "BackOff"),
        ["145 Event app Warning BackOff: Back-off restarting failed container app in pod web_default(uid-web)"]
    );
}

/// computePodActions decides the restart when it kills for a failed liveness probe
/// (`restart := shouldRestartOnFailure(pod)`): under OnFailure the container comes back even
/// though it exits 0 on SIGTERM.
#[test]
fn liveness_kill_under_on_failure_restarts_even_after_exit_0() {
    let mut sim = Sim::new(&[pod(&with_probes("OnFailure", LIVENESS))]);
    sim.script("app").probe = Box::new(|_, now| {
        (
            0,
            if (20..50).contains(&now) {
                Err("HTTP probe failed with statuscode: 500".into())
            } else {
                Ok(())
            },
        )
    });
    sim.script("app").graceful = true;
    sim.run_until(60);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Kill"),
        [
            "45 Event app Normal Killing: Container app failed liveness probe, will be restarted",
            "45 Kill app#0 Term"
        ]
    );
    assert_eq!(
        lines_with(&lines, "StartContainer"),
        ["0 StartContainer app#0", "45 StartContainer app#1"]
    );
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 1);
    assert_eq!(running_since(&app), Some(45));
    assert_eq!(term(&app.last_state), Some((0, "Completed".into(), 0, 45)));
    assert_eq!(sim.phase(), "Running");
}

/// The same decision for a failed startup probe.
#[test]
fn startup_kill_under_on_failure_restarts_even_after_exit_0() {
    let probes =
        "    startupProbe: {exec: {command: [up]}, periodSeconds: 10, failureThreshold: 2}";
    let mut sim = Sim::new(&[pod(&with_probes("OnFailure", probes))]);
    sim.script("app").probe =
        Box::new(|_, now| (0, if now < 20 { Err("not started".into()) } else { Ok(()) }));
    sim.script("app").graceful = true;
    sim.run_until(30);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Kill"),
        [
            "10 Event app Normal Killing: Container app failed startup probe, will be restarted",
            "10 Kill app#0 Term"
        ]
    );
    assert_eq!(
        lines_with(&lines, "StartContainer"),
        ["0 StartContainer app#0", "10 StartContainer app#1"]
    );
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, app.started, app.ready), (1, Some(true), true));
    assert_eq!(sim.phase(), "Running");
}

/// Under Never nothing is restarted, and a container that exits 0 when killed completes the
/// pod: getPhase sees every container terminated with 0.
#[test]
fn liveness_kill_under_never_with_exit_0_succeeds_without_restart() {
    let mut sim = Sim::new(&[pod(&with_probes("Never", LIVENESS))]);
    sim.script("app").probe = Box::new(|_, _| (0, Err("dial tcp: connection refused".into())));
    sim.script("app").graceful = true;
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "StartContainer"), ["0 StartContainer app#0"]);
    assert_eq!(
        lines_with(&lines, "Killing"),
        ["25 Event app Normal Killing: Container app failed liveness probe"]
    );
    assert_eq!(sim.phase(), "Succeeded");
    assert_eq!(term(&sim.ctr("app").state), Some((0, "Completed".into(), 0, 25)));
}

#[test]
fn liveness_failure_under_never_kills_without_restart_and_fails_pod() {
    let mut sim = Sim::new(&[pod(&with_probes("Never", LIVENESS))]);
    sim.script("app").probe = Box::new(|_, _| (0, Err("dial tcp: connection refused".into())));
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Kill"),
        ["25 Event app Normal Killing: Container app failed liveness probe", "25 Kill app#0 Term"]
    );
    assert_eq!(lines_with(&lines, "StartContainer").len(), 1);
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(term(&sim.ctr("app").state), Some((143, "Error".into(), 0, 25)));
}

/// Probe-level terminationGracePeriodSeconds overrides the pod's for liveness kills.
#[test]
fn liveness_kill_uses_probe_level_grace_then_sigkill() {
    let probes = "    livenessProbe: {exec: {command: [check]}, periodSeconds: 10, failureThreshold: 1, terminationGracePeriodSeconds: 5}";
    let mut p = pod(&with_probes("Always", probes));
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(60);
    let mut sim = Sim::new(&[p]);
    sim.script("app").probe =
        Box::new(|_, now| (0, if now == 10 { Err("exit 1".into()) } else { Ok(()) }));
    sim.script("app").term = None;
    sim.run_until(16);
    let lines = sim.actions();
    assert_eq!(lines_with(&lines, "Kill"), ["10 Kill app#0 Term", "15 Kill app#0 Kill"]);
    assert_eq!(
        lines_with(&lines, "StartContainer"),
        ["0 StartContainer app#0", "15 StartContainer app#1"]
    );
    assert_eq!(term(&sim.ctr("app").last_state), Some((137, "Error".into(), 0, 15)));
}

/// Readiness: starts false, needs successThreshold successes, goes false after
/// failureThreshold failures, never restarts the container; Ready follows with transition times.
#[test]
fn readiness_flapping_toggles_ready_and_never_restarts() {
    let probes = "    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 5, successThreshold: 2, failureThreshold: 1}";
    let mut sim = Sim::new(&[pod(&with_probes("Always", probes))]);
    sim.script("app").probe = Box::new(|_, now| {
        (0, if (20..30).contains(&now) { Err("refused".into()) } else { Ok(()) })
    });
    let mut seen = vec![];
    for at in [0, 5, 20, 25, 30, 35, 60] {
        sim.run_until(at);
        let ready = cond_brief(&sim.cond("Ready"));
        seen.push((at, sim.ctr("app").ready, ready.0, ready.3));
    }
    let f = |s: &str| s.to_string();
    assert_eq!(
        seen,
        [
            (0, false, f("False"), 0),
            (5, true, f("True"), 5),
            (20, false, f("False"), 20),
            (25, false, f("False"), 20),
            (30, false, f("False"), 20),
            (35, true, f("True"), 35),
            (60, true, f("True"), 35)
        ]
    );
    let lines = sim.take();
    assert!(lines_with(&lines, "Kill").is_empty());
    assert_eq!(lines_with(&lines, "StartContainer").len(), 1);
    assert_eq!(
        lines_with(&lines, "Unhealthy"),
        [
            "20 Event app Warning Unhealthy: Readiness probe failed: refused",
            "25 Event app Warning Unhealthy: Readiness probe failed: refused"
        ]
    );
    assert_eq!(sim.ctr("app").restart_count, 0);
}

#[test]
fn readiness_failing_forever_keeps_pod_running_not_ready() {
    let probes = "    readinessProbe: {exec: {command: [check]}}";
    let mut sim = Sim::new(&[pod(&with_probes("Always", probes))]);
    sim.script("app").probe = Box::new(|_, _| (0, Err("not ready".into())));
    sim.run_until(600);
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Running", "Running"));
    assert_eq!(
        cond_brief(&sim.cond("ContainersReady")),
        (
            "False".into(),
            "ContainersNotReady".into(),
            "containers with unready status: [app]".into(),
            0
        )
    );
    let app = sim.ctr("app");
    assert_eq!((app.started, app.ready, app.restart_count), (Some(true), false, 0));
    assert_eq!(lines_with(&sim.take(), "RunProbe").len(), 61); // 0, 10, ..., 600
}

/// Startup probe: liveness and readiness wait for it; failureThreshold failures → killed with
/// "failed startup probe, will be restarted".
#[test]
fn startup_probe_timeout_kills_and_gates_liveness() {
    let probes =
        "    startupProbe: {exec: {command: [up]}, periodSeconds: 10, failureThreshold: 3}\n"
            .to_string()
            + LIVENESS;
    let mut sim = Sim::new(&[pod(&with_probes("Always", &probes))]);
    sim.script("app").probe = Box::new(|kind, _| {
        assert_eq!(kind, ProbeKind::Startup, "liveness must not run before startup succeeds");
        (0, Err("not started".into()))
    });
    sim.run_until(15);
    let app = sim.ctr("app");
    assert_eq!((running_since(&app), app.started, app.ready), (Some(0), Some(false), false));
    sim.run_until(50);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Kill"),
        [
            "20 Event app Normal Killing: Container app failed startup probe, will be restarted",
            "20 Kill app#0 Term",
            "40 Event app Normal Killing: Container app failed startup probe, will be restarted",
            "40 Kill app#1 Term"
        ]
    );
    assert_eq!(
        lines_with(&lines, "StartContainer"),
        // Both restarts at once: doBackOff checks the exit before each kill (see above).
        ["0 StartContainer app#0", "20 StartContainer app#1", "40 StartContainer app#2"]
    );
}

#[test]
fn startup_success_starts_liveness_and_readiness() {
    let probes = "    startupProbe: {exec: {command: [up]}, periodSeconds: 3, failureThreshold: 10}\n    readinessProbe: {exec: {command: [ready]}, periodSeconds: 10}\n".to_string() + LIVENESS;
    let mut sim = Sim::new(&[pod(&with_probes("Always", &probes))]);
    sim.script("app").probe = Box::new(|kind, now| {
        (0, if kind == ProbeKind::Startup && now < 6 { Err("no".into()) } else { Ok(()) })
    });
    sim.run_until(20);
    assert_eq!(
        sim.actions().into_iter().filter(|l| l.contains("Probe")).collect::<Vec<_>>(),
        [
            "0 RunProbe app#0 Startup timeout=1s",
            "3 RunProbe app#0 Startup timeout=1s",
            "6 RunProbe app#0 Startup timeout=1s",
            "6 RunProbe app#0 Liveness timeout=1s",
            "6 RunProbe app#0 Readiness timeout=1s",
            // The cadence stays anchored at start + initialDelaySeconds, like the worker's ticker.
            "10 RunProbe app#0 Readiness timeout=1s",
            "15 RunProbe app#0 Liveness timeout=1s",
            "20 RunProbe app#0 Readiness timeout=1s"
        ]
    );
    assert_eq!(cond_brief(&sim.cond("Ready")), ("True".into(), "".into(), "".into(), 6));
}

/// Only one probe of a kind is in flight: a slow probe delays the next one (like the
/// kubelet's ticker, which keeps one pending tick).
#[test]
fn slow_probe_is_never_run_twice_concurrently() {
    let probes =
        "    readinessProbe: {exec: {command: [slow]}, periodSeconds: 2, timeoutSeconds: 5}";
    let mut sim = Sim::new(&[pod(&with_probes("Always", probes))]);
    sim.script("app").probe = Box::new(|_, _| (3, Ok(())));
    sim.run_until(10);
    assert_eq!(
        sim.actions().into_iter().filter(|l| l.contains("Probe")).collect::<Vec<_>>(),
        [
            "0 RunProbe app#0 Readiness timeout=5s",
            "3 RunProbe app#0 Readiness timeout=5s",
            "6 RunProbe app#0 Readiness timeout=5s",
            "9 RunProbe app#0 Readiness timeout=5s"
        ]
    );
    assert!(sim.ctr("app").ready);
}

/// An HTTP redirect the prober did not follow: a success (the container turns ready) and, each
/// time, the kubelet's `ProbeWarning` event with the prober's message.
#[test]
fn a_probe_warning_is_a_success_and_an_event() {
    let probes = "    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 5}";
    let mut sim = Sim::new(&[pod(&with_probes("Always", probes))]);
    sim.script("app").probe_warning = Some(
        "Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>.".into(),
    );
    sim.run_until(5);
    assert!(sim.ctr("app").ready);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "ProbeWarning"),
        [
            "0 Event app Warning ProbeWarning: Readiness probe warning: Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>.",
            "5 Event app Warning ProbeWarning: Readiness probe warning: Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>."
        ]
    );
    assert!(lines_with(&lines, "Unhealthy").is_empty());
}
