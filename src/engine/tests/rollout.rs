//! Safe updates (issue 23): prefetch while the old revision runs, the health gate, rollback to
//! the last Ready revision, and rolling forward with a good edit.

use std::time::Duration;

use super::admission::node;
use super::sim::*;
use crate::engine::{HistoryChange, Revision, RevisionResult, RolloutConfig};
use crate::manifest::ObjectKey;

fn on() -> RolloutConfig {
    RolloutConfig { rollback: true, deadline: Duration::from_secs(300) }
}

/// Revision `rev` of pod `web`: container `name` (each has its own script), its own UID.
fn web(rev: u32, name: &str, image: &str, extra: &str) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod(&format!(
        r#"
metadata:
  name: web
  annotations: {{outpost.dev/rollout-deadline-seconds: "60"}}
spec:
  containers:
  - name: {name}
    image: "{image}"
{extra}"#
    ));
    p.metadata.uid = Some(format!("rev{rev}-uid"));
    p
}

fn ready(sim: &Sim, uid: &str) -> bool {
    sim.status_of(uid).is_some_and(|s| {
        s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The revisions journaled since the last call (panics on anything else).
fn recorded(sim: &mut Sim) -> Vec<Revision> {
    let changes = sim.engine.take_revisions().into_iter();
    changes
        .map(|c| match c {
            HistoryChange::Recorded(r) => r,
            other => panic!("not a revision: {other:?}"),
        })
        .collect()
}

fn results(sim: &mut Sim) -> Vec<(String, RevisionResult)> {
    recorded(sim).into_iter().map(|r| (r.hash, r.result)).collect()
}

/// A running revision 1 (Ready for the stable period), rollback on.
fn running() -> Sim {
    let mut sim = Sim::new(&[web(1, "app", "nginx:1.27", "")]);
    sim.engine.set_rollout(on());
    sim.run_until(10);
    assert!(ready(&sim, "rev1-uid"));
    assert_eq!(results(&mut sim), [("rev1-uid".into(), RevisionResult::Ready)]);
    sim.take();
    sim
}

fn lines_with(lines: &[String], pat: &str) -> Vec<String> {
    lines.iter().filter(|l| l.contains(pat)).cloned().collect()
}

#[test]
fn new_images_are_pulled_while_the_old_revision_keeps_running() {
    let mut sim = running();
    // The prefetch goes to the registry; the pod's own pull finds the image stored.
    let pulls = std::sync::atomic::AtomicU32::new(0);
    sim.script("app2").pull = Box::new(move |_| {
        let first = pulls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
        (if first { 20 } else { 0 }, Ok(()))
    });
    sim.now = 10;
    sim.apply(web(2, "app2", "nginx:1.28", ""));
    sim.run_until(25);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "PullImage"), ["10 PullImage app2#0 nginx:1.28"]);
    assert_eq!(
        lines_with(&lines, "Pulling"),
        ["10 Event app2 Normal Pulling: Pulling image \"nginx:1.28\" for revision rev2-uid"]
    );
    assert!(lines_with(&lines, "Kill").is_empty(), "{lines:?}");
    assert!(ready(&sim, "rev1-uid"), "the old revision runs during the pull");
    assert!(sim.status_of("rev2-uid").is_none());
    // Image collection under disk pressure keeps the image being prefetched.
    assert_eq!(sim.engine.rollout_images(), ["nginx:1.27", "nginx:1.28"]);
    sim.run_until(40);
    let lines = sim.actions();
    assert_eq!(lines[0], "30 Kill app#0 Term", "{lines:?}");
    assert!(lines.contains(&"30 StartContainer app2#0".to_string()), "{lines:?}");
    assert!(ready(&sim, "rev2-uid"));
    assert!(sim.status_of("rev1-uid").is_none());
    assert_eq!(
        results(&mut sim),
        [("rev2-uid".into(), RevisionResult::Pending), ("rev2-uid".into(), RevisionResult::Ready)]
    );
}

#[test]
fn a_failed_pull_keeps_the_old_revision_and_is_not_retried() {
    let mut sim = running();
    sim.script("app2").pull = Box::new(|_| (2, Err("manifest unknown".into())));
    sim.now = 10;
    sim.apply(web(2, "app2", "nginx:nope", ""));
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "PullImage").len(), 1, "{lines:?}");
    assert!(lines_with(&lines, "Kill").is_empty(), "{lines:?}");
    assert_eq!(
        lines_with(&lines, "Warning"),
        [
            "12 Event app2 Warning ErrImagePull: Failed to pull image \"nginx:nope\" for revision rev2-uid: manifest unknown; the running revision rev1-uid stays",
            "12 Event Warning RolledBack: Revision rev2-uid failed (ErrImagePull): rolled back to revision rev1-uid",
        ]
    );
    assert!(ready(&sim, "rev1-uid"));
    assert_eq!(
        results(&mut sim),
        [("rev2-uid".into(), RevisionResult::Failed("ErrImagePull".into()))]
    );
    assert_eq!(sim.engine.rollout_failures(), 1);
    // The running pod names both revisions.
    let mut pod = sim.engine.pod("rev1-uid").unwrap();
    assert!(pod.metadata.annotations.as_ref().unwrap().get("outpost.dev/revision").is_none());
    sim.engine.decorate(&mut pod);
    let a = pod.metadata.annotations.unwrap();
    assert_eq!(a["outpost.dev/revision"], "rev1-uid");
    assert_eq!(a["outpost.dev/failed-revision"], "rev2-uid");
    let c = pod.status.unwrap().conditions.unwrap();
    let c = c.iter().find(|c| c.type_ == "outpost.dev/RolledBack").unwrap();
    assert_eq!(c.reason.as_deref(), Some("ErrImagePull"));
    assert_eq!(
        c.message.as_deref(),
        Some("revision rev2-uid failed (ErrImagePull); revision rev1-uid runs")
    );
}

/// The failed revision runs, crash-loops, and the good one comes back.
#[test]
fn crash_loop_rolls_back_to_the_last_ready_revision() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.now = 10;
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(60);
    let lines = sim.take();
    assert!(lines.contains(&"10 Kill app#0 Term".to_string()), "{lines:?}");
    assert_eq!(
        lines_with(&lines, "RolledBack"),
        ["10 Event Warning RolledBack: Revision rev2-uid failed (CrashLoopBackOff): rolled back to revision rev1-uid"]
    );
    assert!(ready(&sim, "rev1-uid"), "{lines:?}");
    assert!(sim.status_of("rev2-uid").is_none());
    assert_eq!(
        results(&mut sim),
        [
            ("rev2-uid".into(), RevisionResult::Pending),
            ("rev2-uid".into(), RevisionResult::Failed("CrashLoopBackOff".into()))
        ]
    );
    // Not retried while the file stays as it is.
    sim.run_until(400);
    assert!(lines_with(&sim.take(), "StartContainer bad").is_empty());
}

/// Under its gate the new revision runs alone, yet the last Ready revision's image stays
/// needed: a rollback must not depend on a pull (the device may be offline).
#[test]
fn the_image_to_roll_back_to_is_kept_while_the_new_revision_is_gated() {
    let mut sim = running();
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(12);
    assert!(sim.status_of("rev1-uid").is_none(), "the old revision is stopped");
    assert_eq!(sim.engine.rollout_images(), ["nginx:1.27"]);
    sim.run_until(40);
    assert!(ready(&sim, "rev2-uid"));
    assert_eq!(sim.engine.rollout_images(), ["busybox"], "passed: the new one is the good one");
}

#[test]
fn a_readiness_probe_that_never_passes_is_rolled_back_at_the_deadline() {
    let mut sim = running();
    sim.script("slow").probe =
        Box::new(|_, _| (0, Err("HTTP probe failed with statuscode: 503".into())));
    sim.now = 10;
    let probe = "    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 10, failureThreshold: 1}\n";
    sim.apply(web(2, "slow", "busybox", probe));
    sim.run_until(69);
    assert!(lines_with(&sim.take(), "RolledBack").is_empty());
    sim.run_until(80);
    assert_eq!(
        lines_with(&sim.take(), "RolledBack"),
        ["70 Event Warning RolledBack: Revision rev2-uid failed (ProgressDeadlineExceeded): rolled back to revision rev1-uid"]
    );
    assert!(ready(&sim, "rev1-uid"));
}

#[test]
fn a_failing_startup_probe_fails_the_revision_at_once() {
    let mut sim = running();
    sim.script("slow").probe = Box::new(|_, _| (0, Err("connection refused".into())));
    sim.now = 10;
    let probe =
        "    startupProbe: {tcpSocket: {port: 80}, periodSeconds: 1, failureThreshold: 2}\n";
    sim.apply(web(2, "slow", "busybox", probe));
    sim.run_until(59);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "RolledBack"),
        ["11 Event Warning RolledBack: Revision rev2-uid failed (StartupProbeFailed): rolled back to revision rev1-uid"],
        "{lines:?}"
    );
    assert!(ready(&sim, "rev1-uid"));
}

#[test]
fn an_admission_rejection_fails_the_revision_at_once() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(node());
    sim.engine.set_rollout(on());
    sim.apply(web(1, "app", "nginx:1.27", ""));
    sim.run_until(10);
    assert!(ready(&sim, "rev1-uid"));
    sim.apply(web(2, "app2", "nginx:1.27", "  nodeSelector: {site: elsewhere}\n"));
    sim.run_until(20);
    assert_eq!(
        lines_with(&sim.take(), "RolledBack"),
        ["10 Event Warning RolledBack: Revision rev2-uid failed (NodeAffinity): rolled back to revision rev1-uid"]
    );
    assert!(ready(&sim, "rev1-uid"));
}

#[test]
fn a_good_edit_after_a_rollback_rolls_forward() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.now = 10;
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(60);
    assert!(ready(&sim, "rev1-uid"));
    sim.take();
    sim.apply(web(3, "good", "busybox", ""));
    sim.run_until(100);
    let lines = sim.take();
    assert!(lines_with(&lines, "RolledBack").is_empty(), "{lines:?}");
    assert!(ready(&sim, "rev3-uid"));
    assert!(sim.status_of("rev1-uid").is_none());
    let last = results(&mut sim).pop().unwrap();
    assert_eq!(last, ("rev3-uid".into(), RevisionResult::Ready));
    // The condition is about the failure that is over: the new revision does not carry it.
    let mut pod = sim.engine.pod("rev3-uid").unwrap();
    sim.engine.decorate(&mut pod);
    assert!(pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .all(|c| c.type_ != "outpost.dev/RolledBack"));
}

/// A first version has nothing to roll back to: it crash-loops as the kubelet's would.
#[test]
fn a_first_version_that_never_worked_keeps_retrying() {
    let mut sim = Sim::new(&[web(1, "bad", "busybox", "")]);
    sim.engine.set_rollout(on());
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.run_until(120);
    let lines = sim.take();
    assert!(lines_with(&lines, "RolledBack").is_empty());
    assert!(lines_with(&lines, "StartContainer bad").len() > 3, "{lines:?}");
}

/// Deleting the manifest ends the pod's history (as deleting a Deployment deletes its
/// ReplicaSets): the name is forgotten in the store, and a broken pod of that name added
/// later is a first version that keeps retrying, not a rollback to what was deleted.
#[test]
fn a_deleted_pod_is_forgotten_and_comes_back_as_a_first_version() {
    let mut sim = running();
    sim.take();
    results(&mut sim);
    sim.now = 10;
    sim.delete("web");
    sim.run_until(20);
    assert_eq!(
        sim.engine.take_revisions(),
        [HistoryChange::Forgotten(ObjectKey::new("default", "web"))]
    );
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(140);
    let lines = sim.take();
    assert!(lines_with(&lines, "RolledBack").is_empty(), "{lines:?}");
    assert!(lines_with(&lines, "StartContainer bad").len() > 3, "{lines:?}");
}

/// A manifest deleted while the agent was down: the restored history of that name is
/// forgotten at the first reconcile, as if the agent had seen the deletion.
#[test]
fn history_of_a_pod_deleted_while_the_agent_was_down_is_forgotten() {
    let mut sim = Sim::new(&[web(1, "app", "nginx:1.27", "")]);
    sim.delete("web");
    sim.engine.set_rollout(on());
    let key = ObjectKey::new("default", "web");
    sim.engine.restore_revisions(
        vec![Revision {
            key: key.clone(),
            hash: "rev1-uid".into(),
            pod: web(1, "app", "nginx:1.27", "").into(),
            config: Default::default(),
            at: t(0),
            result: RevisionResult::Ready,
        }],
        t(0),
    );
    sim.run_until(1);
    assert_eq!(sim.engine.take_revisions(), [HistoryChange::Forgotten(key)]);
}

/// `outpost.dev/rollback: "false"` on the new revision: the kubelet's replacement, at once.
#[test]
fn rollback_off_for_the_pod_replaces_it_as_the_kubelet_does() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.now = 10;
    let mut p = web(2, "bad", "busybox", "");
    p.metadata.annotations.as_mut().unwrap().insert("outpost.dev/rollback".into(), "false".into());
    sim.apply(p);
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "PullImage")[0], "10 PullImage bad#0 busybox", "{lines:?}");
    assert!(
        lines.iter().position(|l| l == "10 Kill app#0 Term")
            < lines.iter().position(|l| l.contains("PullImage"))
    );
    assert!(lines_with(&lines, "RolledBack").is_empty());
    assert!(sim.status_of("rev1-uid").is_none());
}

/// The gate's state survives an agent restart through the stored history: the deadline
/// starts over, and the failed revision still goes back to the good one.
#[test]
fn a_restart_mid_gate_resumes_the_gate_from_the_history() {
    let mut sim = running();
    sim.script("slow").probe = Box::new(|_, _| (0, Err("HTTP probe failed".into())));
    sim.now = 10;
    let probe = "    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 10, failureThreshold: 1}\n";
    sim.apply(web(2, "slow", "busybox", probe));
    sim.run_until(12);
    let mut history = vec![crate::engine::Revision {
        key: crate::manifest::ObjectKey::new("default", "web"),
        hash: "rev1-uid".into(),
        pod: web(1, "app", "nginx:1.27", "").into(),
        config: Default::default(),
        at: t(0),
        result: RevisionResult::Ready,
    }];
    history.extend(recorded(&mut sim));
    assert_eq!(history.last().unwrap().result, RevisionResult::Pending);
    let found = sim.found("rev2-uid", &[]);
    sim.restart_agent(12, vec![found]);
    sim.engine.set_rollout(on());
    sim.engine.restore_revisions(history, t(12));
    sim.take();
    sim.run_until(200);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "RolledBack"),
        ["72 Event Warning RolledBack: Revision rev2-uid failed (ProgressDeadlineExceeded): rolled back to revision rev1-uid"]
    );
    assert!(ready(&sim, "rev1-uid"));
}

/// The good revision comes back with the ConfigMaps it was Ready with: the edit renamed the
/// key it reads, which would leave it in CreateContainerConfigError.
#[test]
fn a_rollback_runs_with_the_config_maps_of_the_good_revision() {
    let env = |key: &str| {
        format!("    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {{name: cfg, key: {key}}}\n")
    };
    let cfg =
        |key: &str| (crate::manifest::ObjectKey::new("default", "cfg"), config_map("cfg", &[key]));
    let mut sim = Sim::new(&[web(1, "app", "nginx:1.27", &env("old"))]);
    sim.desired_mut().config_maps.extend([cfg("old")]);
    sim.engine.set_rollout(on());
    sim.run_until(10);
    assert!(ready(&sim, "rev1-uid"));
    let stored = recorded(&mut sim).pop().unwrap();
    assert_eq!(stored.result, RevisionResult::Ready);
    assert!(stored.config.config_maps.values().any(|c| c
        .data
        .as_ref()
        .unwrap()
        .contains_key("old")));
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.now = 10;
    sim.desired_mut().config_maps.extend([cfg("new")]);
    sim.apply(web(2, "bad", "busybox", &env("new")));
    sim.run_until(60);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "RolledBack").len(), 1, "{lines:?}");
    assert!(ready(&sim, "rev1-uid"), "{lines:?}");
    let seen = sim.engine.effective_desired().unwrap();
    let cm = &seen.config_maps[&crate::manifest::ObjectKey::new("default", "cfg")];
    assert!(cm.data.as_ref().unwrap().contains_key("old"));
}

/// Without a readiness probe a container is Ready when it starts: a wrong command that exits
/// a moment later must not pass the gate in that moment.
#[test]
fn ready_must_hold_for_a_while_before_the_revision_passes() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((3, 127, false)));
    sim.now = 10;
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(12);
    assert!(ready(&sim, "rev2-uid"), "Ready at first");
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "RolledBack").len(), 1, "{lines:?}");
    assert!(ready(&sim, "rev1-uid"));
    let results = results(&mut sim);
    assert!(!results.contains(&("rev2-uid".into(), RevisionResult::Ready)), "{results:?}");
}

/// A revision that stays Ready passes once it has been Ready for the stable period.
#[test]
fn a_revision_passes_after_being_ready_for_the_stable_period() {
    let mut sim = running();
    sim.now = 10;
    sim.apply(web(2, "good", "busybox", ""));
    sim.run_until(19);
    assert_eq!(results(&mut sim), [("rev2-uid".into(), RevisionResult::Pending)]);
    sim.run_until(20);
    assert_eq!(results(&mut sim), [("rev2-uid".into(), RevisionResult::Ready)]);
    assert_eq!(sim.engine.next_wakeup(), None);
}

/// The failed content is not retried while the file stays as it is; once the file changed,
/// coming back to that content is a new edit (the operator may have fixed what made it fail,
/// such as a missing image): it rolls forward through the gate again.
#[test]
fn a_failed_revision_is_retried_when_the_file_comes_back_to_it() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.now = 10;
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(60);
    assert_eq!(lines_with(&sim.take(), "RolledBack").len(), 1);
    // An edit to something else, then back to the content that failed, now fixed.
    sim.apply(web(3, "good", "busybox", ""));
    sim.run_until(100);
    assert!(ready(&sim, "rev3-uid"));
    sim.take();
    sim.script("bad").exit = Box::new(|_| None);
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(140);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "StartContainer bad").len(), 1, "{lines:?}");
    assert!(ready(&sim, "rev2-uid"), "{lines:?}");
    assert_eq!(results(&mut sim).pop().unwrap(), ("rev2-uid".into(), RevisionResult::Ready));
}

/// The same after an agent restart: a failure followed by another Ready revision in the
/// stored history does not keep the failed content from being retried.
#[test]
fn a_restored_failure_followed_by_a_ready_revision_does_not_block_a_retry() {
    let mut sim = Sim::new(&[web(3, "good", "busybox", "")]);
    sim.engine.set_rollout(on());
    sim.run_until(20);
    assert!(ready(&sim, "rev3-uid"));
    sim.take();
    let key = ObjectKey::new("default", "web");
    let rev = |n: u32, name: &str, result| Revision {
        key: key.clone(),
        hash: format!("rev{n}-uid"),
        pod: web(n, name, "busybox", "").into(),
        config: Default::default(),
        at: t(0),
        result,
    };
    let history = vec![
        rev(1, "app", RevisionResult::Ready),
        rev(2, "bad", RevisionResult::Failed("CrashLoopBackOff".into())),
        rev(3, "good", RevisionResult::Ready),
    ];
    // The file went back to revision 2 while the agent was down.
    let found = sim.found("rev3-uid", &[]);
    sim.apply(web(2, "bad", "busybox", ""));
    sim.restart_agent(30, vec![found]);
    sim.engine.set_rollout(on());
    sim.engine.restore_revisions(history, t(30));
    sim.run_until(60);
    let lines = sim.take();
    assert_eq!(lines_with(&lines, "StartContainer bad").len(), 1, "{lines:?}");
    assert!(ready(&sim, "rev2-uid"), "{lines:?}");
}

/// Revision 2 is under its gate when revision 3 arrives: revision 2 keeps running (and its
/// gate goes on) while revision 3's images are pulled, instead of revision 1 coming back for
/// the pull only to be stopped again.
#[test]
fn an_edit_during_a_gate_keeps_the_gated_revision_running_during_the_pull() {
    let mut sim = running();
    sim.script("app3").pull = Box::new(|_| (20, Ok(())));
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(14);
    assert!(ready(&sim, "rev2-uid"));
    sim.take();
    sim.apply(web(3, "app3", "nginx:1.29", ""));
    sim.run_until(80);
    let lines = sim.take();
    assert!(lines_with(&lines, "StartContainer app#").is_empty(), "{lines:?}");
    assert_eq!(lines_with(&lines, "Kill app"), ["34 Kill app2#0 Term"], "{lines:?}");
    assert_eq!(
        lines_with(&lines, "for revision"),
        ["14 Event app3 Normal Pulling: Pulling image \"nginx:1.29\" for revision rev3-uid"]
    );
    assert!(ready(&sim, "rev3-uid"));
    assert_eq!(
        results(&mut sim),
        [
            ("rev2-uid".into(), RevisionResult::Pending),
            ("rev2-uid".into(), RevisionResult::Ready),
            ("rev3-uid".into(), RevisionResult::Pending),
            ("rev3-uid".into(), RevisionResult::Ready),
        ]
    );
}

/// The gated revision that keeps running during the next pull still fails its gate: the
/// last Ready revision comes back, and the pull goes on.
#[test]
fn a_gated_revision_that_fails_during_the_next_pull_is_rolled_back() {
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((3, 1, false)));
    sim.script("app3").pull = Box::new(|_| (20, Ok(())));
    sim.now = 10;
    sim.apply(web(2, "bad", "busybox", ""));
    sim.run_until(11);
    sim.apply(web(3, "app3", "nginx:1.29", ""));
    sim.run_until(60);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "RolledBack"),
        ["16 Event Warning RolledBack: Revision rev2-uid failed (CrashLoopBackOff): rolled back to revision rev1-uid"],
        "{lines:?}"
    );
    // Revision 1 until revision 3's images are there (the sim pulls them again for the pod).
    assert_eq!(lines_with(&lines, "Kill app#0"), ["10 Kill app#0 Term", "31 Kill app#0 Term"]);
    assert_eq!(
        lines_with(&lines, "StartContainer app"),
        ["16 StartContainer app#0", "51 StartContainer app3#0"]
    );
    assert!(ready(&sim, "rev3-uid"));
}

/// The next revision's pull fails while the gated one runs: the gated one stays, under its
/// gate, and the events name it as the revision that runs.
#[test]
fn a_failed_pull_during_a_gate_keeps_the_gated_revision() {
    let mut sim = running();
    sim.script("app3").pull = Box::new(|_| (2, Err("manifest unknown".into())));
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(12);
    sim.take();
    sim.apply(web(3, "app3", "nginx:nope", ""));
    sim.run_until(60);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "Warning"),
        [
            "14 Event app3 Warning ErrImagePull: Failed to pull image \"nginx:nope\" for revision rev3-uid: manifest unknown; the running revision rev2-uid stays",
            "14 Event Warning RolledBack: Revision rev3-uid failed (ErrImagePull): rolled back to revision rev2-uid",
        ]
    );
    assert!(lines_with(&lines, "Kill").is_empty(), "{lines:?}");
    assert!(ready(&sim, "rev2-uid"));
    assert_eq!(
        results(&mut sim),
        [
            ("rev2-uid".into(), RevisionResult::Pending),
            ("rev3-uid".into(), RevisionResult::Failed("ErrImagePull".into())),
            ("rev2-uid".into(), RevisionResult::Ready),
        ]
    );
    // Revision 2 passing does not end revision 3's failure: the file still has it.
    let mut pod = sim.engine.pod("rev2-uid").unwrap();
    sim.engine.decorate(&mut pod);
    let a = pod.metadata.annotations.unwrap();
    assert_eq!(a["outpost.dev/failed-revision"], "rev3-uid");
}

/// After a restart, the history of a failed pull during a gate, the gated revision passing
/// afterwards: the file still has the content whose pull failed, which is not retried.
#[test]
fn a_restored_pull_failure_during_a_gate_is_not_retried() {
    let mut sim = running();
    sim.script("app3").pull = Box::new(|_| (2, Err("manifest unknown".into())));
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(12);
    sim.apply(web(3, "app3", "nginx:nope", ""));
    sim.run_until(40);
    let mut history = vec![Revision {
        key: ObjectKey::new("default", "web"),
        hash: "rev1-uid".into(),
        pod: web(1, "app", "nginx:1.27", "").into(),
        config: Default::default(),
        at: t(0),
        result: RevisionResult::Ready,
    }];
    history.extend(recorded(&mut sim));
    assert_eq!(history.last().unwrap().result, RevisionResult::Ready);
    // Revision 2 runs (`found` reads its spec from the desired state).
    sim.apply(web(2, "app2", "busybox", ""));
    let found = sim.found("rev2-uid", &[]);
    sim.apply(web(3, "app3", "nginx:nope", ""));
    sim.restart_agent(40, vec![found]);
    sim.engine.set_rollout(on());
    sim.engine.restore_revisions(history, t(40));
    sim.take();
    sim.run_until(100);
    let lines = sim.take();
    assert!(lines_with(&lines, "nginx:nope").is_empty(), "{lines:?}");
    assert!(ready(&sim, "rev2-uid"));
}

/// Back to a revision whose pod is still stopping (it failed its gate and takes its grace
/// period): the prefetch's answers belong to the rollout, not to that pod, or the rollout
/// waits for them for ever.
#[test]
fn a_prefetch_for_a_revision_still_stopping_completes() {
    let mut sim = running();
    sim.script("slow").probe = Box::new(|_, _| (0, Err("HTTP probe failed".into())));
    sim.script("slow").term = None;
    sim.script("other").pull = Box::new(|_| (10, Ok(())));
    sim.now = 10;
    let probe = "    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 10, failureThreshold: 1}\n";
    sim.apply(web(2, "slow", "busybox", probe));
    sim.run_until(71);
    assert_eq!(lines_with(&sim.take(), "RolledBack").len(), 1);
    assert!(sim.status_of("rev2-uid").is_some(), "revision 2 is still stopping");
    // Another edit, and back before revision 2 is gone, its probe fixed.
    sim.apply(web(3, "other", "busybox", ""));
    sim.run_until(72);
    sim.script("slow").probe = Box::new(|_, _| (0, Ok(())));
    sim.apply(web(2, "slow", "busybox", probe));
    sim.run_until(200);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "StartContainer slow"),
        ["100 StartContainer slow#0"],
        "{lines:?}"
    );
    assert!(ready(&sim, "rev2-uid"), "{lines:?}");
}

/// A ConfigMap edited alone does not change the pod (no gate: its volumes are updated in
/// place, as the kubelet does). The Ready revision reading it then runs with the new version,
/// and a later rollback to it must not bring back the version from before that edit.
#[test]
fn a_rollback_keeps_a_config_map_edit_made_while_the_good_revision_ran() {
    let env = "    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {name: cfg, key: old}\n";
    let cfg = |keys: &[&str]| (ObjectKey::new("default", "cfg"), config_map("cfg", keys));
    let mut sim = Sim::new(&[web(1, "app", "nginx:1.27", env)]);
    sim.desired_mut().config_maps.extend([cfg(&["old"])]);
    sim.engine.set_rollout(on());
    sim.run_until(20);
    assert!(ready(&sim, "rev1-uid"));
    recorded(&mut sim);
    sim.desired_mut().config_maps.extend([cfg(&["old", "added"])]);
    sim.run_until(40);
    let stored = recorded(&mut sim);
    assert_eq!(stored.len(), 1, "the stored revision follows the edit");
    assert!(stored[0].config.config_maps.values().any(|c| c
        .data
        .as_ref()
        .unwrap()
        .contains_key("added")));
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.apply(web(2, "bad", "busybox", env));
    sim.run_until(100);
    assert_eq!(lines_with(&sim.take(), "RolledBack").len(), 1);
    assert!(ready(&sim, "rev1-uid"));
    let seen = sim.engine.effective_desired().unwrap();
    let cm = &seen.config_maps[&ObjectKey::new("default", "cfg")];
    assert!(cm.data.as_ref().unwrap().contains_key("added"), "{cm:?}");
}

/// `--rollback=false` with a history stored while it was on: nothing can be rolled back to,
/// so image collection must not keep the old revisions' images for ever.
#[test]
fn rollback_off_keeps_no_images_for_a_stored_history() {
    let mut sim = Sim::new(&[web(2, "app2", "busybox", "")]);
    sim.engine.set_rollout(RolloutConfig { rollback: false, ..on() });
    sim.engine.restore_revisions(
        vec![Revision {
            key: ObjectKey::new("default", "web"),
            hash: "rev1-uid".into(),
            pod: web(1, "app", "nginx:1.27", "").into(),
            config: Default::default(),
            at: t(0),
            result: RevisionResult::Ready,
        }],
        t(0),
    );
    sim.run_until(20);
    assert!(sim.engine.rollout_images().is_empty(), "{:?}", sim.engine.rollout_images());
}

/// An image absent under pull policy Never is the kubelet's ErrImageNeverPull (as when the
/// gate sees it), not a failed pull.
#[test]
fn an_absent_image_under_pull_policy_never_fails_as_err_image_never_pull() {
    let mut sim = running();
    sim.now = 10;
    sim.apply(web(2, "np", "busybox", "    imagePullPolicy: Never\n"));
    sim.run_until(100);
    assert_eq!(
        lines_with(&sim.take(), "Warning"),
        [
            "10 Event np Warning ErrImageNeverPull: Container image \"busybox\" is not present with pull policy of Never (revision rev2-uid); the running revision rev1-uid stays",
            "10 Event Warning RolledBack: Revision rev2-uid failed (ErrImageNeverPull): rolled back to revision rev1-uid",
        ]
    );
    assert_eq!(
        results(&mut sim),
        [("rev2-uid".into(), RevisionResult::Failed("ErrImageNeverPull".into()))]
    );
}

/// Run to completion: Succeeded passes at once, Failed fails with the reason of the
/// container that failed (the kubelet gives a Failed pod no reason of its own).
#[test]
fn run_to_completion_revisions_pass_when_succeeded_and_fail_when_failed() {
    let mut sim = running();
    sim.script("job").exit = Box::new(|_| Some((2, 0, false)));
    sim.now = 10;
    sim.apply(web(2, "job", "busybox", "  restartPolicy: Never\n"));
    sim.run_until(13);
    assert_eq!(
        results(&mut sim),
        [("rev2-uid".into(), RevisionResult::Pending), ("rev2-uid".into(), RevisionResult::Ready)]
    );
    sim.script("bad").exit = Box::new(|_| Some((2, 1, false)));
    sim.apply(web(3, "bad", "busybox", "  restartPolicy: Never\n"));
    sim.run_until(100);
    assert_eq!(
        lines_with(&sim.take(), "RolledBack"),
        ["15 Event Warning RolledBack: Revision rev3-uid failed (Error): rolled back to revision rev2-uid"]
    );
}

/// Revision 2 passes its gate while revision 3 (which renamed the ConfigMap key) is pulled:
/// it is stored with the ConfigMap it ran with, so a rollback from revision 3 finds its key.
#[test]
fn a_gate_passed_during_the_next_pull_stores_the_config_maps_it_ran_with() {
    let env = |key: &str| {
        format!("    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {{name: cfg, key: {key}}}\n")
    };
    let cfg = |key: &str| (ObjectKey::new("default", "cfg"), config_map("cfg", &[key]));
    let mut sim = running();
    sim.script("bad").exit = Box::new(|_| Some((0, 1, false)));
    sim.script("bad").pull = Box::new(|_| (20, Ok(())));
    sim.now = 10;
    sim.desired_mut().config_maps.extend([cfg("old")]);
    sim.apply(web(2, "app2", "busybox", &env("old")));
    sim.run_until(12);
    sim.desired_mut().config_maps.extend([cfg("new")]);
    sim.apply(web(3, "bad", "busybox", &env("new")));
    sim.run_until(25);
    let stored = recorded(&mut sim);
    let passed = stored.iter().find(|r| r.result == RevisionResult::Ready).unwrap();
    assert_eq!(passed.hash, "rev2-uid");
    let cm = &passed.config.config_maps[&ObjectKey::new("default", "cfg")];
    assert!(cm.data.as_ref().unwrap().contains_key("old"), "{cm:?}");
    sim.run_until(120);
    let lines = sim.take();
    assert_eq!(
        lines_with(&lines, "RolledBack"),
        ["72 Event Warning RolledBack: Revision rev3-uid failed (CrashLoopBackOff): rolled back to revision rev2-uid"],
        "{lines:?}"
    );
    assert!(ready(&sim, "rev2-uid"), "{lines:?}");
}

/// A ConfigMap edited alone while the new revision is under its gate: it passes with the
/// edited version, which is what it is stored with.
#[test]
fn a_config_map_edited_during_a_gate_is_stored_with_the_revision() {
    let env = "    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {name: cfg, key: old}\n";
    let cfg = |keys: &[&str]| (ObjectKey::new("default", "cfg"), config_map("cfg", keys));
    let mut sim = running();
    sim.now = 10;
    sim.desired_mut().config_maps.extend([cfg(&["old"])]);
    sim.apply(web(2, "app2", "busybox", env));
    sim.run_until(12);
    sim.desired_mut().config_maps.extend([cfg(&["old", "added"])]);
    sim.run_until(30);
    let stored = recorded(&mut sim);
    let passed = stored.iter().find(|r| r.result == RevisionResult::Ready).unwrap();
    let cm = &passed.config.config_maps[&ObjectKey::new("default", "cfg")];
    assert!(cm.data.as_ref().unwrap().contains_key("added"), "{cm:?}");
}

/// Restarted with a gate interrupted (the last entry Pending) while the file changed again:
/// the gated revision runs on under its gate while the file's content is pulled.
#[test]
fn a_restored_gate_for_content_the_file_no_longer_has_goes_on_during_the_pull() {
    let mut sim = running();
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(12);
    let mut history = vec![Revision {
        key: ObjectKey::new("default", "web"),
        hash: "rev1-uid".into(),
        pod: web(1, "app", "nginx:1.27", "").into(),
        config: Default::default(),
        at: t(0),
        result: RevisionResult::Ready,
    }];
    history.extend(recorded(&mut sim));
    assert_eq!(history.last().unwrap().result, RevisionResult::Pending);
    let found = sim.found("rev2-uid", &[]);
    sim.script("app3").pull = Box::new(|_| (20, Ok(())));
    sim.apply(web(3, "app3", "nginx:1.29", ""));
    sim.restart_agent(15, vec![found]);
    sim.engine.set_rollout(on());
    sim.engine.restore_revisions(history, t(15));
    sim.take();
    sim.run_until(30);
    assert_eq!(
        results(&mut sim),
        [("rev2-uid".into(), RevisionResult::Ready)],
        "revision 2 passed its gate during the pull"
    );
    sim.run_until(100);
    let lines = sim.take();
    assert!(lines_with(&lines, "StartContainer app#").is_empty(), "{lines:?}");
    assert_eq!(lines_with(&lines, "Kill app"), ["35 Kill app2#0 Term"], "{lines:?}");
    assert!(ready(&sim, "rev3-uid"));
}

/// A first version is Ready the moment it starts (no readiness probe) and crash-loops a
/// moment later: it never worked, so it is not a revision to roll back to, and the edit
/// that should fix it (its image still on its way) keeps retrying instead of being given up.
#[test]
fn a_first_version_ready_only_for_a_moment_is_not_rolled_back_to() {
    let mut sim = Sim::new(&[web(1, "bad", "busybox", "")]);
    sim.engine.set_rollout(on());
    sim.script("bad").exit = Box::new(|_| Some((3, 127, false)));
    sim.run_until(60);
    assert!(results(&mut sim).is_empty());
    sim.take();
    let pulls = std::sync::atomic::AtomicU32::new(0);
    sim.script("fix").pull = Box::new(move |_| {
        let n = pulls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (1, if n < 2 { Err("not yet".into()) } else { Ok(()) })
    });
    sim.apply(web(2, "fix", "nginx:1.29", ""));
    sim.run_until(200);
    let lines = sim.take();
    assert!(lines_with(&lines, "RolledBack").is_empty(), "{lines:?}");
    assert!(ready(&sim, "rev2-uid"), "{lines:?}");
}

/// A first version that stays Ready for the stable period is the one to roll back to.
#[test]
fn a_first_version_is_recorded_once_ready_for_the_stable_period() {
    let mut sim = Sim::new(&[web(1, "app", "busybox", "")]);
    sim.engine.set_rollout(on());
    sim.run_until(9);
    assert!(results(&mut sim).is_empty());
    assert_eq!(sim.engine.next_wakeup(), Some(t(10)));
    sim.run_until(10);
    assert_eq!(results(&mut sim), [("rev1-uid".into(), RevisionResult::Ready)]);
}

/// An edit back to the last Ready revision during a gate: that revision runs again at once,
/// and the history says the gated one was superseded instead of leaving it Pending for ever.
#[test]
fn an_edit_back_during_a_gate_supersedes_the_gated_revision() {
    let mut sim = running();
    sim.now = 10;
    sim.apply(web(2, "app2", "busybox", ""));
    sim.run_until(12);
    sim.apply(web(1, "app", "nginx:1.27", ""));
    sim.run_until(40);
    assert!(ready(&sim, "rev1-uid"));
    assert_eq!(
        results(&mut sim),
        [
            ("rev2-uid".into(), RevisionResult::Pending),
            ("rev2-uid".into(), RevisionResult::Superseded)
        ]
    );
}

/// After a restart, a failure followed by a revision that passed is over: the running pod
/// does not name the old failure (as it did not before the restart).
#[test]
fn a_restored_failure_followed_by_a_ready_revision_is_not_shown_as_current() {
    let mut sim = Sim::new(&[web(3, "good", "busybox", "")]);
    sim.engine.set_rollout(on());
    sim.run_until(20);
    let key = ObjectKey::new("default", "web");
    let rev = |n: u32, name: &str, result| Revision {
        key: key.clone(),
        hash: format!("rev{n}-uid"),
        pod: web(n, name, "busybox", "").into(),
        config: Default::default(),
        at: t(0),
        result,
    };
    let history = vec![
        rev(1, "app", RevisionResult::Ready),
        rev(2, "bad", RevisionResult::Failed("CrashLoopBackOff".into())),
        rev(3, "good", RevisionResult::Ready),
    ];
    let found = sim.found("rev3-uid", &[]);
    sim.restart_agent(30, vec![found]);
    sim.engine.set_rollout(on());
    sim.engine.restore_revisions(history, t(30));
    sim.run_until(40);
    let mut pod = sim.engine.pod("rev3-uid").unwrap();
    sim.engine.decorate(&mut pod);
    let a = pod.metadata.annotations.unwrap_or_default();
    assert!(!a.contains_key("outpost.dev/failed-revision"), "{a:?}");
}
