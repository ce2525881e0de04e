//! A sandbox that dies after it was ready: computePodActions with `PodSandboxChanged`.

use super::sim::*;

fn web(policy: &str, inits: &str) -> String {
    format!(
        r#"
metadata: {{name: web}}
spec:
  restartPolicy: {policy}
{inits}
  containers:
  - {{name: a, image: "nginx:1.27"}}
  - {{name: b, image: "busybox:1.36"}}
"#
    )
}

/// SandboxChanged event, every container killed (pod grace period, "Stopping container"), the
/// old sandbox removed, a new one created and the containers started again, restart counts
/// going up.
#[test]
fn dead_sandbox_kills_everything_and_recreates_it() {
    let mut sim = Sim::new(&[pod(&web("Always", ""))]);
    sim.script("a").term = Some(3);
    sim.run_until(10);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.run_until(11);
    assert_eq!(cond_brief(&sim.cond("PodReadyToStartContainers")).0, "False");
    sim.run_until(100);
    assert_eq!(
        sim.take().into_iter().filter(|l| !l.contains("Event a Normal P") && !l.contains("Event b Normal P")).collect::<Vec<_>>(),
        [
            "10 Event Normal SandboxChanged: Pod sandbox changed, it will be killed and re-created.",
            "10 Event a Normal Killing: Stopping container a",
            "10 Kill a#0 Term",
            "10 Event b Normal Killing: Stopping container b",
            "10 Kill b#0 Term",
            "13 RemoveSandbox",
            "13 CreateSandbox",
            "13 PullImage a#1 nginx:1.27",
            "13 StartContainer a#1",
            "13 Event a Normal Created: Created container: a",
            "13 Event a Normal Started: Started container a",
            "13 PullImage b#1 busybox:1.36",
            "13 StartContainer b#1",
            "13 Event b Normal Created: Created container: b",
            "13 Event b Normal Started: Started container b",
        ]
    );
    let a = sim.ctr("a");
    assert_eq!((a.restart_count, running_since(&a)), (1, Some(13)));
    assert_eq!(term(&a.last_state), Some((143, "Error".into(), 0, 13)));
    assert_eq!(sim.ctr("b").restart_count, 1);
    assert_eq!(
        cond_brief(&sim.cond("PodReadyToStartContainers")),
        ("True".into(), "".into(), "".into(), 13)
    );
    assert_eq!(sim.phase(), "Running");
}

/// The new sandbox starts from the first init container again (purgeInitContainers), and
/// the init container's restart count goes on.
#[test]
fn dead_sandbox_reruns_init_containers_from_the_start() {
    let inits = "  initContainers:\n  - {name: init, image: \"busybox:1.36\"}";
    let mut sim = Sim::new(&[pod(&web("Always", inits))]);
    sim.script("init").exit = Box::new(|_| Some((2, 0, false)));
    sim.run_until(10);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.run_until(11);
    let init = sim.ctr("init");
    assert_eq!((init.restart_count, running_since(&init)), (1, Some(10)));
    assert_eq!(term(&init.last_state), Some((0, "Completed".into(), 0, 2)));
    // As with the kubelet: the killed app containers show terminated, so getPhase and the
    // Initialized condition count the pod as started, and kubectl shows their reason.
    assert_eq!((sim.summary().as_str(), sim.phase().as_str()), ("Error", "Running"));
    assert_eq!(cond_brief(&sim.cond("Initialized")).0, "True");
    sim.run_until(100);
    let starts: Vec<String> = sim
        .actions()
        .into_iter()
        .filter(|l| l.contains("Start") || l.contains("Sandbox"))
        .collect();
    assert_eq!(
        starts,
        [
            "10 RemoveSandbox",
            "10 CreateSandbox",
            "10 StartContainer init#1",
            "12 StartContainer a#1",
            "12 StartContainer b#1"
        ]
    );
    let init = sim.ctr("init");
    assert_eq!(init.restart_count, 1);
    assert_eq!(term(&init.state), Some((0, "Completed".into(), 10, 12)));
    assert_eq!(sim.ctr("a").restart_count, 1);
    assert_eq!(sim.phase(), "Running");
}

/// "if the pod's restart policy is Never and its containers have run, do not create a new
/// sandbox": the containers are killed, the pod fails, no SandboxChanged event.
#[test]
fn dead_sandbox_under_never_kills_the_pod_without_a_new_sandbox() {
    let mut sim = Sim::new(&[pod(&web("Never", ""))]);
    sim.run_until(10);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.run_until(100);
    assert_eq!(
        sim.take(),
        [
            "10 Event a Normal Killing: Stopping container a",
            "10 Kill a#0 Term",
            "10 Event b Normal Killing: Stopping container b",
            "10 Kill b#0 Term",
            "10 RemoveSandbox",
        ]
    );
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(term(&sim.ctr("a").state), Some((143, "Error".into(), 0, 10)));
    assert_eq!(sim.ctr("a").restart_count, 0);
    assert_eq!(sim.engine.next_wakeup(), None);
}

/// Without init containers the kubelet starts the containers in the same sync that kills
/// them (all but OnFailure successes): under OnFailure a container that exits 0 on SIGTERM
/// is started again; one that had already completed is not.
#[test]
fn dead_sandbox_under_on_failure_restarts_killed_containers_but_not_completed_ones() {
    let mut sim = Sim::new(&[pod(&web("OnFailure", ""))]);
    sim.script("a").exit = Box::new(|_| Some((5, 0, false)));
    sim.script("b").graceful = true;
    sim.run_until(10);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.run_until(100);
    let starts: Vec<String> = sim
        .actions()
        .into_iter()
        .filter(|l| l.contains("Start") || l.contains("Sandbox") || l.contains("Kill"))
        .collect();
    assert_eq!(
        starts,
        ["10 Kill b#0 Term", "10 RemoveSandbox", "10 CreateSandbox", "10 StartContainer b#1"]
    );
    assert_eq!(term(&sim.ctr("a").state), Some((0, "Completed".into(), 0, 5)));
    let b = sim.ctr("b");
    assert_eq!((b.restart_count, running_since(&b)), (1, Some(10)));
    assert_eq!(term(&b.last_state), Some((0, "Completed".into(), 0, 10)));
    assert_eq!(sim.phase(), "Running");
}

/// A late or repeated report changes nothing once the sandbox is being replaced.
#[test]
fn sandbox_died_twice_is_handled_once() {
    let mut sim = Sim::new(&[pod(&web("Always", ""))]);
    sim.script("a").term = Some(3);
    sim.run_until(10);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.kill_sandbox("uid-web");
    sim.run_until(11);
    sim.kill_sandbox("uid-web");
    sim.run_until(100);
    let lines = sim.take();
    assert_eq!(lines.iter().filter(|l| l.contains("SandboxChanged")).count(), 1);
    assert_eq!(lines.iter().filter(|l| l.contains("CreateSandbox")).count(), 1);
    assert_eq!(sim.ctr("a").restart_count, 1);
}

/// Under Never a sandbox is re-created when no container exists yet (here: still pulling):
/// "If ContainerStatuses is empty, we assume that we've never successfully created any
/// containers. In this case, we should retry creating the sandbox."
#[test]
fn dead_sandbox_under_never_before_any_container_is_recreated() {
    let mut sim = Sim::new(&[pod(&web("Never", ""))]);
    sim.script("a").pull = Box::new(|_| (5, Ok(())));
    sim.run_until(2);
    sim.take();
    sim.kill_sandbox("uid-web");
    sim.run_until(100);
    let lines: Vec<String> = sim
        .actions()
        .into_iter()
        .filter(|l| l.contains("Sandbox") || l.contains("StartContainer a"))
        .collect();
    // The abandoned pull's answer (at 5) is for the old sandbox: only the new pull's counts.
    assert_eq!(lines, ["2 RemoveSandbox", "2 CreateSandbox", "7 StartContainer a#0"]);
    assert_eq!(sim.ctr("a").restart_count, 0);
    assert_eq!(sim.phase(), "Running");
}
