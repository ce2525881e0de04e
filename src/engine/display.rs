//! The `kubectl get pods` STATUS column (kubectl's `printPod`), for CLIs and tests.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use super::status::is_sidecar;

fn terminated_reason(prefix: &str, t: &ContainerStateTerminated) -> String {
    match t.reason.as_deref() {
        Some(r) if !r.is_empty() => format!("{prefix}{r}"),
        _ => match t.signal {
            Some(s) if s != 0 => format!("{prefix}Signal:{s}"),
            _ => format!("{prefix}ExitCode:{}", t.exit_code),
        },
    }
}

/// `Init:0/2`, `PodInitializing`, `Running`, `CrashLoopBackOff`, `Completed`, `Terminating`...
pub fn summary(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let inits = pod.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default();
    let cond_true =
        |t: &str| status.conditions.iter().flatten().any(|c| c.type_ == t && c.status == "True");
    let mut reason = status.reason.clone().or(status.phase.clone()).unwrap_or_default();
    let mut initializing = false;
    for (i, cs) in status.init_container_statuses.iter().flatten().enumerate() {
        let st = cs.state.clone().unwrap_or_default();
        let sidecar = inits.iter().any(|c| c.name == cs.name && is_sidecar(c));
        if st.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
            || (sidecar && cs.started == Some(true))
        {
            continue;
        }
        let waiting =
            st.waiting.and_then(|w| w.reason).filter(|r| !r.is_empty() && r != "PodInitializing");
        reason = match (&st.terminated, waiting) {
            (Some(t), _) => terminated_reason("Init:", t),
            (None, Some(w)) => format!("Init:{w}"),
            (None, None) => format!("Init:{i}/{}", inits.len()),
        };
        initializing = true;
        break;
    }
    if !initializing || cond_true("Initialized") {
        let mut has_running = false;
        for cs in status.container_statuses.iter().flatten().rev() {
            let st = cs.state.clone().unwrap_or_default();
            if let Some(w) = st.waiting.and_then(|w| w.reason).filter(|r| !r.is_empty()) {
                reason = w;
            } else if let Some(t) = &st.terminated {
                reason = terminated_reason("", t);
            } else if cs.ready && st.running.is_some() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = if cond_true("Ready") { "Running" } else { "NotReady" }.into();
        }
    }
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if pod.metadata.deletion_timestamp.is_some() && !terminal {
        reason = "Terminating".into();
    }
    reason
}
