//! How a pod is doing, in the words a person needs: good, on its way, or a problem, and why.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

/// Ordered as the overview lists pods: problems first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Problem,
    Starting,
    Ok,
}

impl Health {
    /// The text label (the colour only repeats it).
    pub fn label(self) -> &'static str {
        match self {
            Health::Problem => "Problem",
            Health::Starting => "Starting",
            Health::Ok => "OK",
        }
    }

    /// The CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Health::Problem => "problem",
            Health::Starting => "starting",
            Health::Ok => "ok",
        }
    }
}

/// Waiting reasons of a container on its way up; any other waiting reason is a problem
/// (CrashLoopBackOff, ErrImagePull, CreateContainerConfigError, ...).
const ON_THE_WAY: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// A running pod not Ready for longer than this is a problem, not a start.
const READY_GRACE_SECONDS: i64 = 60;

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let inits = status.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten();
    inits.chain(status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten())
}

pub fn health(pod: &Pod, now: Timestamp) -> Health {
    let status = pod.status.clone().unwrap_or_default();
    match status.phase.as_deref() {
        Some("Failed") => return Health::Problem,
        Some("Succeeded") => return Health::Ok,
        _ => {}
    }
    if container_problem(pod).is_some() {
        return Health::Problem;
    }
    let ready =
        status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    if status.phase.as_deref() == Some("Running") {
        if ready {
            return Health::Ok;
        }
        let created = pod.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        if now.as_second() - created.as_second() > READY_GRACE_SECONDS {
            return Health::Problem;
        }
    }
    Health::Starting
}

/// The first container in trouble, as one line: `app: CrashLoopBackOff: back-off 10s ...;
/// last exit 3 (Error)`.
fn container_problem(pod: &Pod) -> Option<String> {
    statuses(pod).find_map(|cs| {
        let state = cs.state.clone().unwrap_or_default();
        let mut line = if let Some(w) = state.waiting {
            let reason = w.reason.unwrap_or_default();
            if reason.is_empty() || ON_THE_WAY.contains(&reason.as_str()) {
                return None;
            }
            join(&format!("{}: {reason}", cs.name), w.message.as_deref())
        } else if let Some(t) = state.terminated.filter(|t| t.exit_code != 0) {
            let reason = t.reason.unwrap_or_else(|| "Error".into());
            join(
                &format!("{}: {reason} (exit code {})", cs.name, t.exit_code),
                t.message.as_deref(),
            )
        } else {
            return None;
        };
        if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            line.push_str(&format!(
                "; last exit code {} ({})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("Error")
            ));
        }
        Some(line)
    })
}

fn join(head: &str, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => format!("{head}: {m}"),
        None => head.to_string(),
    }
}

/// Why a pod is not fine, when it is not: the pod's own reason (Evicted, a failed rollout), a
/// container's trouble, or the Ready condition's message.
pub fn why(pod: &Pod) -> Option<String> {
    let status = pod.status.clone().unwrap_or_default();
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        return Some(join(reason, status.message.as_deref()));
    }
    if let Some(line) = container_problem(pod) {
        return Some(line);
    }
    status.conditions.iter().flatten().find(|c| c.type_ == "Ready" && c.status != "True").and_then(
        |c| {
            let head = c.reason.clone().unwrap_or_else(|| "NotReady".into());
            c.message.as_ref().map(|m| join(&head, Some(m)))
        },
    )
}
