//! A pod's admission and eviction verdicts: the kubelet's `rejectPod` (Failed before anything
//! is created) and the eviction manager's `evictPod` (Failed, containers killed without
//! grace). Both stick for the UID: a new manifest (a new UID) is admitted anew.

use k8s_openapi::api::core::v1::PodCondition;
use serde::{Deserialize, Serialize};

use super::*;

/// The grace period of an evicted pod. Hard eviction asks for 0, the pod worker raises it to
/// 1 s ("no matter what, we always supply a grace period of 1", `calculateEffectiveGracePeriod`),
/// `killContainer` runs preStop within it, then `minimumGracePeriodInSeconds` gives SIGTERM 2 s
/// before SIGKILL.
pub const EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `SystemCriticalPriority`: pods at or above it are never evicted (`IsCriticalPod`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Verdict {
    Rejected,
    /// `pressure`: evicted for node pressure (the kubelet then adds the DisruptionTarget
    /// condition), rather than for a per-pod storage limit.
    Evicted {
        pressure: bool,
    },
}

impl PodState {
    /// `spec.priority`, else what the API server's Priority admission would give the two
    /// built-in classes (static pods never pass through it), else 0 (`PodPriority`).
    pub fn priority(&self) -> i32 {
        let spec = self.spec();
        spec.priority.unwrap_or(match spec.priority_class_name.as_deref() {
            Some("system-node-critical") => SYSTEM_CRITICAL_PRIORITY + 1000,
            Some("system-cluster-critical") => SYSTEM_CRITICAL_PRIORITY,
            _ => 0,
        })
    }

    /// `IsCriticalPodBasedOnPriority`. (The kubelet also counts every static pod as critical,
    /// which would exempt every outpost pod; see `super::super::eviction`.)
    pub fn critical(&self) -> bool {
        self.priority() >= SYSTEM_CRITICAL_PRIORITY
    }

    pub fn qos(&self) -> &'static str {
        self.qos
    }

    pub fn pod_spec(&self) -> &PodSpec {
        self.spec()
    }

    /// Counts against allocatable: admitted and wanted, and not finished (a finished pod
    /// counts until its containers are stopped, as `filterOutInactivePods` keeps terminating
    /// pods). A pod replaced or removed from the manifests no longer counts: the kubelet
    /// forgets it before it admits the new one.
    pub fn holds_resources(&self) -> bool {
        if !self.desired || self.verdict == Some(Verdict::Rejected) {
            return false;
        }
        let finished = self.terminal.is_some() || self.stopping.is_some();
        !finished || self.cs.iter().any(Ctr::active)
    }

    /// Something of it still runs (the eviction manager waits for an evicted pod's cleanup).
    pub fn running_on_node(&self) -> bool {
        self.cs.iter().any(Ctr::active)
    }

    /// An active pod the eviction manager may pick: admitted, wanted, not finishing.
    pub fn evictable(&self) -> bool {
        self.desired && self.verdict.is_none() && self.terminal.is_none() && self.stopping.is_none()
    }

    /// `rejectPod`: Failed with the reason, a warning event, nothing created.
    pub fn reject(&mut self, reason: &str, message: &str, out: &mut Vec<Action>) {
        self.terminal = Some(Terminal {
            phase: FAILED,
            reason: Some(reason.into()),
            message: Some(format!("Pod was rejected: {message}")),
        });
        self.verdict = Some(Verdict::Rejected);
        self.event(out, None, EventType::Warning, reason, message.into());
    }

    /// `evictPod`: Failed/Evicted and a warning event; the next sync stops the containers with
    /// [`EVICTION_GRACE`].
    pub fn evict(&mut self, message: String, pressure: bool, out: &mut Vec<Action>) {
        self.terminal = Some(Terminal {
            phase: FAILED,
            reason: Some("Evicted".into()),
            message: Some(message.clone()),
        });
        self.verdict = Some(Verdict::Evicted { pressure });
        self.event(out, None, EventType::Warning, "Evicted", message);
    }

    /// Evicted: stopped with [`EVICTION_GRACE`] instead of the pod's grace period.
    pub(super) fn evicted(&self) -> bool {
        matches!(self.verdict, Some(Verdict::Evicted { .. }))
    }

    /// The status as the verdict shapes it: a rejected pod's is only phase, reason, message
    /// and QoS class (`rejectPod`); a pod evicted for node pressure gets the DisruptionTarget
    /// condition (`TerminationByKubelet`).
    pub(super) fn verdict_status(&mut self, now: Timestamp) {
        match self.verdict {
            Some(Verdict::Rejected) => {
                let t = self.terminal.as_ref();
                self.status = PodStatus {
                    phase: Some(FAILED.into()),
                    reason: t.and_then(|t| t.reason.clone()),
                    message: t.and_then(|t| t.message.clone()),
                    qos_class: Some(self.qos.into()),
                    ..Default::default()
                };
            }
            Some(Verdict::Evicted { pressure: true }) => {
                let since = self
                    .cond_since
                    .entry("DisruptionTarget".into())
                    .or_insert(("True".into(), now));
                let condition = PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    message: self.terminal.as_ref().and_then(|t| t.message.clone()),
                    last_transition_time: Some(time(since.1)),
                    ..Default::default()
                };
                self.status.conditions.get_or_insert_with(Vec::new).push(condition);
            }
            Some(Verdict::Evicted { pressure: false }) | None => {}
        }
    }

    /// For the engine's snapshot.
    pub(super) fn persisted_verdict(&self) -> Option<(Verdict, String, String)> {
        let t = self.terminal.as_ref()?;
        Some((self.verdict?, t.reason.clone()?, t.message.clone().unwrap_or_default()))
    }

    pub(super) fn restore_verdict(&mut self, verdict: Verdict, reason: String, message: String) {
        self.terminal =
            Some(Terminal { phase: FAILED, reason: Some(reason), message: Some(message) });
        self.verdict = Some(verdict);
    }
}
