//! One pod (one UID): the kubelet's `syncPod` / `computePodActions` as a state machine.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};

use super::backoff::{add, since};
use super::config;
use super::container::{time, Ctr, Kind, Run, Stop, StopStage, Terminated};
use super::probe::Probes;
use super::status::{self, is_sidecar, FAILED, SUCCEEDED};
use super::{
    Action, ContainerRef, EventType, HookKind, ImageFailure, KillSignal, Observed, ProbeKind,
    StartFailure, Timestamp,
};
use crate::format::go_duration;
use crate::manifest::{DesiredState, ObjectKey};

pub(crate) mod adopt;
mod observe;
mod start;
mod stop;
pub(crate) mod verdict;

/// The kubelet's pod worker retries a failed sync after this.
const RETRY: Duration = Duration::from_secs(10);
/// `minimumGracePeriodInSeconds`: TERM always gets at least this long before KILL.
const MIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sandbox {
    None,
    Creating,
    Ready,
    Failed {
        retry_at: Timestamp,
    },
    /// Died after it was ready; what follows is decided at the next sync.
    Died,
    /// Killing the containers of a dead sandbox before replacing it.
    Draining {
        deadline: Timestamp,
    },
    /// Removing a dead sandbox; a new one follows.
    Replacing,
    Removing,
    Removed,
}

#[derive(Clone, Debug)]
struct Terminal {
    phase: &'static str,
    reason: Option<String>,
    message: Option<String>,
}

/// The pod is winding down: removed from the manifests (or replaced), or done.
#[derive(Clone, Copy, Debug)]
struct Stopping {
    since: Timestamp,
    deadline: Timestamp,
    removed: bool,
}

#[derive(Debug)]
pub(crate) struct PodState {
    pub pod: Pod,
    pub key: ObjectKey,
    pub uid: String,
    pub desired: bool,
    pub status: PodStatus,
    pub wake: Option<Timestamp>,
    start_time: Timestamp,
    sandbox: Sandbox,
    /// [`ContainerRef::sandbox`] of the current sandbox.
    gen: u64,
    /// Init containers (in order) then app containers.
    cs: Vec<Ctr>,
    n_init: usize,
    terminal: Option<Terminal>,
    stopping: Option<Stopping>,
    initialized: bool,
    noted_mount: Option<String>,
    qos: &'static str,
    cond_since: BTreeMap<String, (String, Timestamp)>,
    /// Rejected at admission or evicted; sticks for the UID.
    verdict: Option<verdict::Verdict>,
}

impl PodState {
    pub fn new(mut pod: Pod, now: Timestamp) -> Self {
        // A static pod has no API server to stamp it: it exists from when the node saw it
        // (kubectl's AGE).
        pod.metadata.creation_timestamp.get_or_insert_with(|| time(now));
        let spec = pod.spec.get_or_insert_with(Default::default);
        let mut cs: Vec<Ctr> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::new(c.clone(), if is_sidecar(c) { Kind::Sidecar } else { Kind::Init }))
            .collect();
        let n_init = cs.len();
        cs.extend(spec.containers.iter().map(|c| Ctr::new(c.clone(), Kind::App)));
        let meta = &pod.metadata;
        let key = ObjectKey::new(
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
            meta.name.clone().unwrap_or_default(),
        );
        let uid = meta.uid.clone().unwrap_or_default();
        // Validated quantities always parse.
        let qos = super::qos::pod_qos(spec).unwrap_or(super::QosClass::BestEffort).as_str();
        let mut p = Self {
            pod,
            key,
            uid,
            desired: true,
            status: PodStatus::default(),
            wake: None,
            start_time: now,
            sandbox: Sandbox::None,
            gen: 0,
            cs,
            n_init,
            terminal: None,
            stopping: None,
            initialized: false,
            noted_mount: None,
            qos,
            cond_since: BTreeMap::new(),
            verdict: None,
        };
        p.refresh(now);
        p
    }

    pub fn spec(&self) -> &PodSpec {
        self.pod.spec.as_ref().expect("set in new")
    }

    fn policy(&self) -> &str {
        self.spec().restart_policy.as_deref().unwrap_or("Always")
    }

    fn grace(&self) -> Duration {
        if self.evicted() {
            return verdict::EVICTION_GRACE;
        }
        let s = self.spec().termination_grace_period_seconds.unwrap_or(30);
        Duration::from_secs(s.max(0) as u64)
    }

    /// `format.Pod`: `name_namespace(uid)`.
    fn pod_fmt(&self) -> String {
        format!("{}_{}({})", self.key.name, self.key.namespace, self.uid)
    }

    fn cref(&self, i: usize) -> ContainerRef {
        ContainerRef {
            sandbox: self.gen,
            pod_uid: self.uid.clone(),
            name: self.cs[i].spec.name.clone(),
            attempt: self.cs[i].attempt,
        }
    }

    fn event(
        &self,
        out: &mut Vec<Action>,
        i: Option<usize>,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        out.push(Action::Event {
            pod_uid: self.uid.clone(),
            container: i.map(|i| self.cs[i].spec.name.clone()),
            type_,
            reason: reason.to_owned(),
            message,
        });
    }

    fn wake_at(&mut self, t: Timestamp, now: Timestamp) {
        if t > now {
            self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
        }
    }

    pub fn removing(&self) -> bool {
        self.stopping.is_some_and(|s| s.removed)
    }

    /// The sandbox is up (not being made, dead or removed).
    pub fn sandbox_ready(&self) -> bool {
        self.sandbox == Sandbox::Ready
    }

    /// Nothing left on the node and nobody wants it.
    pub fn gone(&self) -> bool {
        !self.desired
            && matches!(self.sandbox, Sandbox::None | Sandbox::Removed)
            && !self.cs.iter().any(Ctr::active)
    }

    /// `ShouldContainerBeRestarted` for a container whose instance has exited.
    fn should_restart(&self, c: &Ctr) -> bool {
        if self.stopping.is_some() || self.terminal.is_some() {
            return false;
        }
        if let Some(decided) = c.last.as_ref().and_then(|t| t.restart) {
            return decided;
        }
        let failed = c.last.as_ref().is_some_and(|t| t.exit_code != 0);
        match c.kind {
            Kind::Init => failed && self.policy() != "Never",
            Kind::Sidecar => true,
            Kind::App => match c.spec.restart_policy.as_deref().unwrap_or(self.policy()) {
                "Always" => true,
                "OnFailure" => failed,
                _ => false,
            },
        }
    }

    /// Whether a container killed for a failed probe comes back (the kill message says so).
    fn restarts_after_kill(&self, c: &Ctr) -> bool {
        match c.kind {
            Kind::Sidecar => true,
            _ => c.spec.restart_policy.as_deref().unwrap_or(self.policy()) != "Never",
        }
    }

    fn find(&self, c: &ContainerRef) -> Option<usize> {
        if c.sandbox != self.gen {
            return None;
        }
        self.cs.iter().position(|x| x.spec.name == c.name && x.attempt == c.attempt)
    }

    /// One level-triggered pass. `held`: an older pod with the same name is still on its way
    /// out (the kubelet starts a static pod only after its predecessor terminated).
    fn sync(
        &mut self,
        d: &DesiredState,
        held: bool,
        now: Timestamp,
        seq: &mut u64,
        out: &mut Vec<Action>,
    ) {
        self.wake = None;
        if held {
            return;
        }
        if self.terminal.is_none() && self.stopping.is_none() {
            if let Some(ads) = self.spec().active_deadline_seconds {
                let end = add(self.start_time, Duration::from_secs(ads.max(0) as u64));
                if now >= end {
                    let message = "Pod was active on the node longer than the specified deadline";
                    self.terminal = Some(Terminal {
                        phase: FAILED,
                        reason: Some("DeadlineExceeded".into()),
                        message: Some(message.into()),
                    });
                    self.event(out, None, EventType::Normal, "DeadlineExceeded", message.into());
                } else {
                    self.wake_at(end, now);
                }
            }
        }
        if self.sandbox == Sandbox::Died && self.stopping.is_none() && self.terminal.is_none() {
            self.sandbox_changed(now, out);
        }
        if self.stopping.is_none() && (!self.desired || self.terminal.is_some() || self.all_done())
        {
            let deadline = add(now, self.grace());
            self.stopping = Some(Stopping { since: now, deadline, removed: false });
        }
        if let Some(s) = &mut self.stopping {
            s.removed |= !self.desired;
            self.wind_down(now, out);
        } else {
            self.run(d, now, seq, out);
        }
        self.drive_stops(now, out);
    }

    /// Restart policy is not Always and every app container has finished for good: the
    /// kubelet then kills the sidecars and the sandbox.
    fn all_done(&self) -> bool {
        self.initialized
            && self.cs[self.n_init..]
                .iter()
                .all(|c| !c.active() && c.last.is_some() && !self.should_restart(c))
    }

    /// Syncs, then recomputes the status, unless the pod had no news and the sync only
    /// scheduled probes: then nothing the status is made of changed, and a pod probed every
    /// second does not rebuild its whole status every second. Tests check that claim on
    /// every such skip.
    pub fn sync_and_refresh(
        &mut self,
        d: &DesiredState,
        held: bool,
        now: Timestamp,
        seq: &mut u64,
        out: &mut Vec<Action>,
        news: bool,
    ) {
        let from = out.len();
        // What a sync can change without an action or news that the status shows. Waiting
        // reasons count: winding down clears them (a proptest found the stale reason).
        let shape = |p: &Self| {
            (
                p.terminal.is_some(),
                p.stopping.is_some(),
                p.sandbox,
                p.initialized,
                p.verdict.is_some(),
                p.cs.iter().filter(|c| c.reason.is_some() || c.restart_now).count(),
            )
        };
        let before = shape(self);
        self.sync(d, held, now, seq, out);
        let only_probes = out[from..].iter().all(|a| matches!(a, Action::RunProbe { .. }));
        if news || !only_probes || shape(self) != before {
            self.refresh(now);
        } else if cfg!(test) {
            assert!(
                !self.refresh(now),
                "pod {}: a skipped refresh would have changed the status",
                self.uid
            );
        }
    }

    /// Rebuild the API status; a terminal phase, once reached, sticks.
    /// Recomputes the status; returns whether it changed.
    pub fn refresh(&mut self, now: Timestamp) -> bool {
        for c in &mut self.cs {
            c.started_once |= c.started();
        }
        let default = if self.n_init > 0 { "PodInitializing" } else { "ContainerCreating" };
        let statuses: Vec<_> = self
            .cs
            .iter()
            .map(|c| c.status(default, !c.active() && (c.last.is_none() || self.should_restart(c))))
            .collect();
        let (init, app) = statuses.split_at(self.n_init);
        let phase = match &self.terminal {
            Some(t) => t.phase,
            None => {
                let p = status::phase(self.spec(), init, app);
                if p == SUCCEEDED || p == FAILED {
                    self.terminal = Some(Terminal { phase: p, reason: None, message: None });
                }
                p
            }
        };
        let sandbox_ready = self.sandbox == Sandbox::Ready;
        let mut conditions = status::conditions(self.spec(), init, app, phase, sandbox_ready);
        for c in &mut conditions {
            let since = self.cond_since.entry(c.type_.clone()).or_insert((c.status.clone(), now));
            if since.0 != c.status {
                *since = (c.status.clone(), now);
            }
            c.last_transition_time = Some(time(since.1));
        }
        let terminal = self.terminal.as_ref();
        let status = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            init_container_statuses: (!init.is_empty()).then(|| init.to_vec()),
            container_statuses: Some(app.to_vec()),
            start_time: Some(time(self.start_time)),
            reason: terminal.and_then(|t| t.reason.clone()),
            message: terminal.and_then(|t| t.message.clone()),
            qos_class: Some(self.qos.into()),
            ..Default::default()
        };
        let before = std::mem::replace(&mut self.status, status);
        self.verdict_status(now);
        before != self.status
    }

    pub fn to_pod(&self) -> Pod {
        let mut pod = self.pod.clone();
        if let Some(s) = self.stopping.filter(|s| s.removed) {
            pod.metadata.deletion_timestamp = Some(time(s.since));
            pod.metadata.deletion_grace_period_seconds =
                Some(since(s.deadline, s.since).as_secs() as i64);
        }
        pod.status = Some(self.status.clone());
        pod
    }
}
