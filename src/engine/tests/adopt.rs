//! Agent restarts: `Engine::adopt` with what the runtime found and the engine's last
//! `persist` snapshot. Running instances are never restarted for the agent's sake.

use super::sim::*;
use crate::engine::{Exit, ProbeKind};
use k8s_openapi::api::core::v1::Pod;

const PROBED: &str = r#"
metadata: {name: web}
spec:
  containers:
  - name: app
    image: "nginx:1.27"
    readinessProbe: {httpGet: {path: /ready, port: 80}, periodSeconds: 10}
    livenessProbe: {httpGet: {path: /healthz, port: 80}, initialDelaySeconds: 5, periodSeconds: 10}
"#;

fn lines_with(lines: &[String], pat: &str) -> Vec<String> {
    lines.iter().filter(|l| l.contains(pat)).cloned().collect()
}

/// A probed container that crashed once, then runs: the agent restarts at 55.
fn probed_sim() -> Sim {
    let mut sim = Sim::new(&[pod(PROBED)]);
    sim.script("app").exit = Box::new(|a| (a == 0).then_some((3, 1, false)));
    sim.script("app").probe = Box::new(|_, _| (2, Ok(())));
    sim.run_until(50);
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, running_since(&app), app.ready), (1, Some(3), true));
    sim.take();
    sim
}

/// Nothing is started again, the restart count and lastState stand, readiness keeps its
/// last result until the first probe (which, like a new kubelet prober worker, runs at once).
#[test]
fn adopted_running_container_is_kept_and_its_probes_resume() {
    let mut sim = probed_sim();
    let mut found = sim.found("uid-web", &[]);
    found.saved = sim.engine.persist().into_iter().next();
    sim.restart_agent(55, vec![found]);
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, running_since(&app)), (1, Some(3)));
    assert_eq!((app.started, app.ready), (Some(true), true));
    assert_eq!(term(&app.last_state), Some((1, "Error".into(), 0, 3)));
    assert_eq!(cond_brief(&sim.cond("Ready")), ("True".into(), "".into(), "".into(), 5));
    sim.run_until(56);
    assert!(sim.ctr("app").ready);
    sim.run_until(80);
    assert_eq!(
        sim.actions(),
        [
            "55 RunProbe app#1 Liveness timeout=1s",
            "55 RunProbe app#1 Readiness timeout=1s",
            "65 RunProbe app#1 Liveness timeout=1s",
            "65 RunProbe app#1 Readiness timeout=1s",
            "75 RunProbe app#1 Liveness timeout=1s",
            "75 RunProbe app#1 Readiness timeout=1s"
        ]
    );
    assert_eq!(sim.ctr("app").restart_count, 1);
}

/// Without a snapshot the kubelet's behaviour: not ready until the first readiness probe
/// answers; the restart count comes from the runtime's attempt number.
#[test]
fn adopted_without_snapshot_is_unready_until_the_first_probe() {
    let mut sim = probed_sim();
    let found = sim.found("uid-web", &[]);
    sim.restart_agent(55, vec![found]);
    sim.run_until(56);
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, app.started, app.ready), (1, Some(true), false));
    assert_eq!(cond_brief(&sim.cond("Ready")).0, "False");
    sim.run_until(57);
    assert!(sim.ctr("app").ready);
    assert_eq!(lines_with(&sim.actions(), "Start"), Vec::<String>::new());
}

/// Without a snapshot, the last state comes from the runtime's previous instance, which it
/// keeps until the next start.
#[test]
fn adopted_without_snapshot_takes_the_last_state_from_the_previous_instance() {
    let mut sim = probed_sim();
    let mut found = sim.found("uid-web", &[]);
    let exit = Exit {
        exit_code: 1,
        signal: None,
        oom_killed: false,
        lost: false,
        at: t(3),
        message: None,
    };
    found.containers[0].previous = Some((t(0), exit));
    sim.restart_agent(55, vec![found]);
    let app = sim.ctr("app");
    assert_eq!((app.restart_count, running_since(&app)), (1, Some(3)));
    assert_eq!(term(&app.last_state), Some((1, "Error".into(), 0, 3)));
    // Without it (an older runtime), nothing is made up.
    let mut sim = probed_sim();
    let found = sim.found("uid-web", &[]);
    sim.restart_agent(55, vec![found]);
    assert_eq!(term(&sim.ctr("app").last_state), None);
}

fn crash_loop() -> Sim {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "busybox:1.36"}
"#)]);
    sim.script("app").exit = Box::new(|_| Some((1, 1, false)));
    sim.run_until(33); // starts at 0, 1, 12, 33: the next back-off is 40s
    sim.take();
    sim
}

/// An instance that exited while the agent was down restarts under the restored back-off,
/// counted from its exit (34 + 40s) as if the agent had been there.
#[test]
fn adopted_exit_restarts_with_the_persisted_back_off() {
    let mut sim = crash_loop();
    let saved = sim.engine.persist().into_iter().next();
    let mut found = sim.found("uid-web", &[("app", 1, 34)]);
    found.saved = saved;
    sim.restart_agent(36, vec![found]);
    let app = sim.ctr("app");
    assert_eq!(app.restart_count, 3);
    assert_eq!(term(&app.state), Some((1, "Error".into(), 33, 34)));
    sim.run_until(36);
    assert_eq!(
        waiting(&sim.ctr("app")),
        (
            "CrashLoopBackOff".into(),
            "back-off 40s restarting failed container=app pod=web_default(uid-web)".into()
        )
    );
    sim.run_until(80);
    // Exactly when the agent that never went down would have (see restarts.rs).
    assert_eq!(lines_with(&sim.actions(), "StartContainer"), ["74 StartContainer app#4"]);
    assert_eq!(sim.ctr("app").restart_count, 4);
}

/// Without a snapshot the back-off is gone, as with a kubelet restart (it keeps it in memory).
#[test]
fn adopted_exit_without_snapshot_restarts_at_once() {
    let mut sim = crash_loop();
    let found = sim.found("uid-web", &[("app", 1, 34)]);
    sim.restart_agent(36, vec![found]);
    sim.run_until(36);
    assert_eq!(lines_with(&sim.actions(), "StartContainer"), ["36 StartContainer app#4"]);
}

/// Under Never an exit seen only at adoption ends the pod like any other.
#[test]
fn adopted_exit_under_never_fails_the_pod_without_restart() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: job}
spec:
  restartPolicy: Never
  containers:
  - {name: work, image: "busybox:1.36"}
"#)]);
    sim.run_until(10);
    sim.take();
    let found = sim.found("uid-job", &[("work", 2, 12)]);
    sim.restart_agent(15, vec![found]);
    sim.run_until(100);
    assert_eq!(sim.actions(), ["15 RemoveSandbox"]);
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(term(&sim.ctr("work").state), Some((2, "Error".into(), 0, 12)));
}

/// A pod whose manifest went away while the agent was down is stopped gracefully.
#[test]
fn adopted_pod_without_manifest_is_stopped_gracefully() {
    let mut sim = probed_sim();
    let found = sim.found("uid-web", &[]);
    sim.delete("web");
    sim.restart_agent(55, vec![found]);
    sim.run_until(100);
    assert_eq!(
        sim.take(),
        [
            "55 Event app Normal Killing: Stopping container app",
            "55 Kill app#1 Term",
            "55 RemoveSandbox",
            "55 RemoveLogs"
        ]
    );
    assert_eq!(sim.engine.pods().count(), 0);
}

/// The snapshot goes through the store as JSON unchanged.
#[test]
fn persisted_pod_round_trips_through_json() {
    let sim = crash_loop();
    let saved = sim.engine.persist();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].uid(), "uid-web");
    let json = serde_json::to_string(&saved).unwrap();
    let back: Vec<crate::engine::PersistedPod> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);
}

/// A startup probe in flight when the agent restarts is lost with the old agent (its probe
/// tasks die with it, so the answer never comes): the new engine probes once at once, and only
/// that answer counts. (The property test once fed the lost answer to the new engine.)
#[test]
fn adopted_startup_probe_in_flight_is_probed_again_once() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  containers:
  - name: app
    image: "nginx:1.27"
    startupProbe: {exec: {command: [s]}, periodSeconds: 3, failureThreshold: 2}
    livenessProbe: {exec: {command: [l]}, periodSeconds: 5}
"#)]);
    sim.script("app").probe = Box::new(|kind, _| match kind {
        ProbeKind::Startup => (4, Ok(())),
        _ => (0, Ok(())),
    });
    sim.run_until(2);
    assert_eq!(
        sim.actions(),
        [
            "0 CreateSandbox",
            "0 PullImage app#0 nginx:1.27",
            "0 StartContainer app#0",
            "0 RunProbe app#0 Startup timeout=1s"
        ]
    );
    let mut found = sim.found("uid-web", &[]);
    found.saved = sim.engine.persist().into_iter().next();
    sim.restart_agent(2, vec![found]);
    sim.run_until(5);
    // The lost answer (due at 4) did not come; the new probe's (at 6) is still to come.
    assert_eq!(sim.actions(), ["2 RunProbe app#0 Startup timeout=1s"]);
    assert_eq!(sim.ctr("app").started, Some(false));
    sim.run_until(12);
    assert_eq!(
        sim.actions(),
        [
            "6 RunProbe app#0 Liveness timeout=1s",
            "7 RunProbe app#0 Liveness timeout=1s",
            "12 RunProbe app#0 Liveness timeout=1s"
        ]
    );
    let app = sim.ctr("app");
    assert_eq!((app.started, app.restart_count), (Some(true), 0));
}

/// kubectl's AGE reads `metadata.creationTimestamp`, which the API server stamps; a static pod
/// gets it when the engine first sees it, and keeps it across agent restarts (the store has
/// the pod as the engine last showed it). A pod stored without one dates from its start.
#[test]
fn creation_timestamp_is_first_sight_and_survives_an_agent_restart() {
    let mut sim = probed_sim();
    let created = |sim: &Sim| {
        let pod = sim.engine.pod("uid-web").expect("pod");
        pod.metadata.creation_timestamp.map(|t| secs(&t.0))
    };
    assert_eq!(created(&sim), Some(0));
    let mut stored = sim.found("uid-web", &[]);
    stored.pod = sim.engine.pod("uid-web").map(|p| Pod { status: None, ..p }).unwrap();
    sim.restart_agent(55, vec![stored]);
    assert_eq!(created(&sim), Some(0));

    let unstamped = sim.found("uid-web", &[]);
    assert!(unstamped.pod.metadata.creation_timestamp.is_none());
    let started = unstamped.containers.iter().map(|c| secs(&c.started_at)).min();
    sim.restart_agent(60, vec![unstamped]);
    assert_eq!(created(&sim), started);
}
