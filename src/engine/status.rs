//! Pod phase and conditions from container statuses: the kubelet's `getPhase` and
//! `Generate*Condition` functions, applied to the statuses the engine builds.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, PodSpec};

pub(crate) const PENDING: &str = "Pending";
pub(crate) const RUNNING: &str = "Running";
pub(crate) const SUCCEEDED: &str = "Succeeded";
pub(crate) const FAILED: &str = "Failed";

pub(crate) fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn state(s: &ContainerStatus) -> (bool, Option<i32>, bool, Option<i32>) {
    let st = s.state.clone().unwrap_or_default();
    let last = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| t.exit_code);
    (st.running.is_some(), st.terminated.map(|t| t.exit_code), st.waiting.is_some(), last)
}

fn any_regular_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    spec.containers.iter().filter_map(|c| find(statuses, &c.name)).any(|s| {
        let (running, term, _, _) = state(s);
        running || term.is_some()
    })
}

/// `getPhase` (pkg/kubelet/kubelet_pods.go), for a pod that is not known to be terminal.
pub(crate) fn phase(
    spec: &PodSpec,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
) -> &'static str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut pending_init, mut failed_init) = (0, 0);
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(init, &c.name) else {
            if is_sidecar(c) {
                unknown += 1;
            } else {
                pending_init += 1;
            }
            continue;
        };
        let (is_running, term, is_waiting, last) = state(s);
        if is_sidecar(c) {
            if is_running {
                if s.started != Some(true) {
                    pending_init += 1;
                }
                running += 1;
            } else if term.is_none() && is_waiting && last.is_none() {
                pending_init += 1;
                waiting += 1;
            }
            continue;
        }
        match (is_running, term, is_waiting, last) {
            (true, ..) => pending_init += 1,
            (_, Some(code), ..) => failed_init += usize::from(code != 0),
            (_, None, true, Some(code)) => failed_init += usize::from(code != 0),
            _ => pending_init += 1,
        }
    }
    for c in &spec.containers {
        let Some(s) = find(app, &c.name) else {
            unknown += 1;
            continue;
        };
        match state(s) {
            (true, ..) => running += 1,
            (_, Some(code), ..) => {
                stopped += 1;
                succeeded += usize::from(code == 0);
            }
            (_, None, true, Some(_)) => stopped += 1,
            (_, None, true, None) => waiting += 1,
            _ => unknown += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    if (pending_init > 0 && !any_regular_started(spec, app)) || waiting > 0 {
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match policy {
            "Always" => RUNNING,
            _ if stopped == succeeded => SUCCEEDED,
            "Never" => FAILED,
            _ => RUNNING,
        };
    }
    PENDING
}

fn cond(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        ..Default::default()
    }
}

/// Go's `fmt.Sprintf("%s", []string{...})`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled — in the
/// kubelet's order, without transition times.
pub(crate) fn conditions(
    spec: &PodSpec,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: &str,
    sandbox_ready: bool,
) -> Vec<PodCondition> {
    let mut incomplete = vec![];
    let mut unready = vec![];
    for c in spec.init_containers.iter().flatten() {
        let s = find(init, &c.name);
        if is_sidecar(c) {
            if s.and_then(|s| s.started) != Some(true) {
                incomplete.push(c.name.as_str());
            }
            if !s.is_some_and(|s| s.ready) {
                unready.push(c.name.as_str());
            }
        } else if s.and_then(|s| state(s).1) != Some(0) {
            incomplete.push(c.name.as_str());
        }
    }
    for c in &spec.containers {
        if !find(app, &c.name).is_some_and(|s| s.ready) {
            unready.push(c.name.as_str());
        }
    }
    let initialized = if phase == SUCCEEDED {
        cond("Initialized", true, Some("PodCompleted"), None)
    } else if any_regular_started(spec, app) || incomplete.is_empty() {
        cond("Initialized", true, None, None)
    } else {
        let msg = format!("containers with incomplete status: {}", go_list(&incomplete));
        cond("Initialized", false, Some("ContainersNotInitialized"), Some(msg))
    };
    let ready = |type_: &str| {
        if phase == SUCCEEDED {
            cond(type_, false, Some("PodCompleted"), None)
        } else if unready.is_empty() {
            cond(type_, true, None, None)
        } else {
            let msg = format!("containers with unready status: {}", go_list(&unready));
            cond(type_, false, Some("ContainersNotReady"), Some(msg))
        }
    };
    vec![
        cond("PodReadyToStartContainers", sandbox_ready, None, None),
        initialized,
        ready("Ready"),
        ready("ContainersReady"),
        cond("PodScheduled", true, None, None),
    ]
}
