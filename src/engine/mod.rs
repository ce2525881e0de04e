//! The pod lifecycle as a pure state machine. See ARCHITECTURE.md.
//!
//! Sans-IO and level-triggered like the kubelet's `syncPod`: the caller hands [`Engine::reconcile`]
//! the whole desired state and `now`, executes the returned [`Action`]s, reports what happened
//! through [`Engine::observe`] (then reconciles again), and otherwise sleeps until
//! [`Engine::next_wakeup`]. The engine reads no clock, does no I/O and spawns no threads.

mod admission;
mod affinity;
mod backoff;
mod config;
mod container;
mod display;
mod eviction;
mod node_labels;
mod pod;
mod probe;
mod qos;
mod readings;
mod resources;
mod rollout;
mod status;
mod sysctl;
#[cfg(test)]
mod tests;
mod thresholds;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodStatus, Probe};
pub use k8s_openapi::jiff::Timestamp;

pub use admission::{
    is_extended as is_extended_resource, NodeConfig, DEFAULT_MAX_PODS, DEFAULT_PRESSURE_TRANSITION,
};
pub use affinity::{matches as node_affinity_matches, NodeIdentity, NODE_AFFINITY};
pub use display::summary;
pub use eviction::disk_pressure;
pub use node_labels::{NodeLabelError, NodeLabels};
pub use pod::adopt::{AdoptedContainer, AdoptedPod, Exit, PersistedPod};
pub use qos::{pod_qos, QosClass};
pub use readings::{
    ContainerUsage, DeviceCount, DiskUsage, FsReading, MemoryReading, NodeReadings, PidReading,
    PodUsage,
};
pub use resources::{parse_resource_list, ResourceList, ResourceListError};
pub use rollout::{
    short as short_revision, HistoryChange, Revision, RevisionResult, RolloutConfig,
    DEADLINE_ANNOTATION, DEFAULT_DEADLINE as DEFAULT_ROLLOUT_DEADLINE, FAILED_REVISION_ANNOTATION,
    REVISION_ANNOTATION, ROLLBACK_ANNOTATION, ROLLED_BACK_CONDITION,
};
pub use sysctl::{parse_kernel, to_dots, Kernel, SysctlAllowlist, SysctlFlagError, UnsafeSysctls};
pub use thresholds::{
    parse_eviction_hard, EvictionHard, Threshold, ThresholdError, DEFAULT_EVICTION_HARD,
};

use crate::manifest::{DesiredPod, DesiredState};
use pod::PodState;

/// One container instance: pod UID, container name and attempt (= its `restartCount`).
/// Facts about another attempt or another UID are stale and ignored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerRef {
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    /// The engine's tag for the pod sandbox the request belongs to, new with every sandbox
    /// (also when a deleted manifest comes back with the same UID). Not part of the identity
    /// on the node, which is (pod_uid, name, attempt): the agent keeps it per started instance
    /// and hands it back with the instance's exit, so that late answers meant for an earlier
    /// sandbox are ignored.
    pub sandbox: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

/// The engine sends `Kill` itself once the grace period is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillSignal {
    Term,
    Kill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Why the runtime could not start a container (the kubelet's `CreateContainerConfigError`
/// for a config the kubelet refuses before asking the runtime, e.g. `runAsNonRoot`;
/// `CreateContainerError` / `RunContainerError`; the latter leaves a dead instance behind, exit
/// code 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFailure {
    Config,
    Create,
    Run,
}

/// Why an image could not be had: a failed pull (the kubelet's `ErrImagePull`, backed off) or
/// pull policy Never with the image absent (`ErrImageNeverPull`, retried a pod-worker
/// back-off later without an image back-off, as the kubelet does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFailure {
    Pull,
    NeverPull,
}

/// Why a pod was not admitted: `status.reason` and the event's reason, and the message
/// (the status message adds `Pod was rejected: ` in front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// A registry pull as the runtime measured it, for the kubelet's `Pulled` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullStats {
    /// The pull itself.
    pub took: Duration,
    /// From the `PullImage` request on (the kubelet's "including waiting").
    pub total: Duration,
    /// Bytes of config and layer blobs as stored.
    pub size: u64,
}

/// What the runtime must do. Every request is answered by exactly one [`Observed`] fact
/// (except `KillContainer`, answered by `ContainerExited`, and `UpdateVolumes`,
/// `RemoveLogs` and `Event`, which need no answer); `PullImage` may report `ImagePulling`
/// before its answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateSandbox {
        pod: Box<Pod>,
    },
    PullImage {
        c: ContainerRef,
        image: String,
        policy: String,
    },
    /// Create and start; carries the spec so the runtime needs no lookup.
    StartContainer {
        c: ContainerRef,
        spec: Box<Container>,
    },
    RunProbe {
        c: ContainerRef,
        kind: ProbeKind,
        seq: u64,
        probe: Box<Probe>,
        timeout: Duration,
    },
    RunHook {
        c: ContainerRef,
        kind: HookKind,
        handler: Box<LifecycleHandler>,
        timeout: Option<Duration>,
    },
    KillContainer {
        c: ContainerRef,
        signal: KillSignal,
    },
    /// Garbage: a dead instance older than the one kept for `logs --previous`.
    RemoveContainer {
        c: ContainerRef,
    },
    RemoveSandbox {
        pod_uid: String,
    },
    /// Re-render the pod's configMap, secret, downwardAPI and projected volumes in place (the
    /// kubelet's AtomicWriter swap): objects they show changed while its sandbox is up.
    UpdateVolumes {
        pod: Box<Pod>,
    },
    /// The pod is gone for good (nothing of it runs and no manifest wants it): its container
    /// logs go too, as the kubelet removes a deleted pod's log directory.
    RemoveLogs {
        pod_uid: String,
    },
    Event {
        pod_uid: String,
        container: Option<String>,
        type_: EventType,
        reason: String,
        message: String,
    },
}

/// What the runtime saw. `at` is when it happened (the `now` of `observe` is when it was seen).
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    SandboxReady {
        pod_uid: String,
    },
    SandboxFailed {
        pod_uid: String,
        message: String,
    },
    SandboxRemoved {
        pod_uid: String,
    },
    /// The ready sandbox is gone (pause process or pod supervisor died). Report it before the
    /// exits of containers that died with it, and never for a sandbox already removed.
    SandboxDied {
        pod_uid: String,
    },
    /// The runtime starts fetching the image from its registry (never when the stored image
    /// is used): the kubelet's `Pulling` event.
    ImagePulling {
        c: ContainerRef,
    },
    /// The image is available; `pull` is `None` when it was already present (no pull).
    ImagePulled {
        c: ContainerRef,
        pull: Option<PullStats>,
    },
    ImagePullFailed {
        c: ContainerRef,
        reason: ImageFailure,
        message: String,
    },
    ContainerStarted {
        c: ContainerRef,
        at: Timestamp,
    },
    StartFailed {
        c: ContainerRef,
        reason: StartFailure,
        message: String,
    },
    /// `exit_code` as waited for; when killed by a signal pass it and the engine reports
    /// exit code 128+signal like the CRI runtimes do.
    ContainerExited {
        c: ContainerRef,
        exit_code: i32,
        signal: Option<i32>,
        oom_killed: bool,
        /// No one saw it end (see `runtime::ExitInfo::lost`).
        lost: bool,
        at: Timestamp,
        message: Option<String>,
    },
    /// `Ok(Some(warning))`: a success the kubelet reports with a `ProbeWarning` event (an
    /// HTTP redirect it did not follow).
    ProbeResult {
        c: ContainerRef,
        kind: ProbeKind,
        seq: u64,
        result: Result<Option<String>, String>,
    },
    HookResult {
        c: ContainerRef,
        kind: HookKind,
        result: Result<(), String>,
    },
    /// The node's housekeeping measurements (see [`NodeReadings`]).
    NodeReadings(Box<NodeReadings>),
    /// The device plugins' extended resources, all of them each time one changes.
    Devices(BTreeMap<String, DeviceCount>),
}

/// All pods of the node, keyed by UID (a replaced pod and its successor coexist briefly).
#[derive(Debug, Default)]
pub struct Engine {
    pods: BTreeMap<String, PodState>,
    outbox: Vec<Action>,
    /// Numbers probe requests and sandboxes, engine-wide, so no late answer is ever mistaken.
    /// Starts afresh after an agent restart (past the adopted sandbox tags only): the old
    /// agent's requests die with it and are never answered, so their numbers may be reused.
    serial: u64,
    /// The desired state of the last full pass: while the caller passes the same one, only
    /// pods that observed something or whose wake-up is due are synced (a node with a hundred
    /// pods probing every second would otherwise recompute every status ten times a second).
    synced_desired: Option<Arc<DesiredState>>,
    /// Pods that observed a fact since their last sync.
    dirty: BTreeSet<String>,
    /// Pods whose status must be recomputed at their next sync even if it only schedules
    /// probes (evicted ones). An observed fact recomputes the status in [`Engine::observe`].
    news: BTreeSet<String>,
    /// Tests compare the dirty-only passes with a twin that always syncs every pod.
    #[cfg(test)]
    always_full: bool,
    /// Admission and eviction; off until [`Engine::set_node`].
    node: eviction::NodeState,
    /// Prefetch, health gate and rollback; off until [`Engine::set_rollout`].
    rollout: rollout::Rollouts,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    fn always_full() -> Self {
        Self { always_full: true, ..Self::default() }
    }

    /// Turn on admission against `node`'s allocatable and eviction by its thresholds.
    pub fn set_node(&mut self, node: NodeConfig) {
        self.node.config = Some(node);
    }

    /// Turn on safe updates (prefetch, health gate, rollback) as `config` says.
    pub fn set_rollout(&mut self, config: RolloutConfig) {
        self.rollout.config = config;
    }

    /// After an agent restart, after [`Engine::set_rollout`] and before the first reconcile:
    /// the revision history as stored, oldest first (ignored with safe updates off).
    pub fn restore_revisions(&mut self, history: Vec<Revision>, now: Timestamp) {
        self.rollout.restore(history, now);
    }

    /// Images safe updates still need beyond the pods' own (see [`rollout`]'s `images`).
    pub fn rollout_images(&self) -> Vec<String> {
        self.rollout.images()
    }

    /// History changes since the last call, for the store.
    pub fn take_revisions(&mut self) -> Vec<HistoryChange> {
        self.rollout.take_journal()
    }

    /// The desired state as the last reconcile acted on it, when safe updates rewrote it
    /// (else the caller's own): what volumes, env and pull secrets are rendered from.
    pub fn effective_desired(&self) -> Option<&Arc<DesiredState>> {
        self.rollout.output()
    }

    /// How many revisions failed their health gate (or their pull) since start.
    pub fn rollout_failures(&self) -> u64 {
        self.rollout.failures
    }

    /// The node's pressure conditions (MemoryPressure, DiskPressure, PIDPressure) now.
    pub fn node_conditions(&self) -> &[&'static str] {
        &self.node.conditions
    }

    /// Record a fact; the consequences come out of the next [`Engine::reconcile`].
    /// Returns whether a pod's status changed (a passing probe usually changes nothing).
    pub fn observe(&mut self, fact: Observed, now: Timestamp) -> bool {
        if let Observed::NodeReadings(r) = fact {
            self.node.observe(*r, now);
            return false;
        }
        if let Observed::Devices(d) = fact {
            self.node.devices = d;
            return false;
        }
        // A prefetch's answers are the rollout's, also when a pod of that UID is still
        // stopping (a revision that failed and comes back).
        if self.rollout.observe(&fact, now, &mut self.outbox) {
            return true;
        }
        let uid = fact.pod_uid().to_owned();
        let Some(pod) = self.pods.get_mut(&uid) else { return false };
        let changed = pod.observe(fact, now, &mut self.outbox) && pod.refresh(now);
        self.dirty.insert(uid);
        changed
    }

    /// Compare everything with `desired` and say what the runtime must do now.
    ///
    /// Level-triggered: the result is the same as syncing every pod. Pass the same `Arc` while
    /// the desired state is unchanged: only pods with news or a due wake-up are then synced,
    /// which is equivalent because a pod's sync depends only on its own state, the desired
    /// state and whether its wake-up has come.
    pub fn reconcile(&mut self, desired: &Arc<DesiredState>, now: Timestamp) -> Vec<Action> {
        // Safe updates rewrite the desired state (the same `Arc` while nothing changes); a
        // rollout that ends in this pass changes it again at once.
        let effective = self.rollout.effective(desired, &self.pods, now, &mut self.outbox);
        let mut out = self.reconcile_effective(&effective, now);
        if self.rollout.check(&self.pods, now, &mut out) {
            let effective = self.rollout.effective(desired, &self.pods, now, &mut self.outbox);
            out.extend(self.reconcile_effective(&effective, now));
        }
        out
    }

    fn reconcile_effective(&mut self, desired: &Arc<DesiredState>, now: Timestamp) -> Vec<Action> {
        // Eviction rounds come with readings; the evicted pods then sync like pods with news.
        for uid in self.node.evict(&mut self.pods, now, &mut self.outbox) {
            self.dirty.insert(uid.clone());
            self.news.insert(uid);
        }
        let same = self.synced_desired.as_ref().is_some_and(|d| Arc::ptr_eq(d, desired));
        #[cfg(test)]
        let same = same && !self.always_full;
        if same {
            if let Some(out) = self.reconcile_due(desired, now) {
                return out;
            }
        }
        self.synced_desired = Some(desired.clone());
        self.dirty.clear();
        self.news.clear();
        self.reconcile_all(desired, now)
    }

    /// Syncs the pods with news or a due wake-up; `None` (having done nothing) when the set
    /// of pods changes shape (a pod starts leaving or is gone, which may release a pod held
    /// behind it): that takes the full pass.
    fn reconcile_due(&mut self, desired: &DesiredState, now: Timestamp) -> Option<Vec<Action>> {
        let due: Vec<String> = self
            .pods
            .values()
            .filter(|p| self.dirty.contains(&p.uid) || p.wake.is_some_and(|w| w <= now))
            .map(|p| p.uid.clone())
            .collect();
        // Leaving pods first, as in the full pass.
        let (leaving, staying): (Vec<String>, Vec<String>) =
            due.into_iter().partition(|uid| !self.pods[uid].desired);
        if staying.iter().any(|uid| self.pods[uid].removing()) {
            return None;
        }
        let mut out = std::mem::take(&mut self.outbox);
        self.dirty.clear();
        let news = std::mem::take(&mut self.news);
        let mut reshaped = false;
        // Any leaving pod, due or not, may hold a wanted pod of the same name.
        let any_leaving = self.pods.values().any(|p| !p.desired);
        for uid in leaving {
            reshaped |= self.sync_pod(&uid, desired, now, &mut out, Sync::NEWS);
        }
        for uid in staying {
            let news = news.contains(&uid);
            self.sync_pod(&uid, desired, now, &mut out, Sync { news, any_leaving });
        }
        if reshaped {
            out.extend(self.reconcile_all(desired, now));
        }
        Some(out)
    }

    fn reconcile_all(&mut self, desired: &DesiredState, now: Timestamp) -> Vec<Action> {
        let mut out = std::mem::take(&mut self.outbox);
        let want: BTreeMap<&str, &DesiredPod> =
            desired.pods.values().map(|d| (d.uid(), d)).collect();
        for p in self.pods.values_mut() {
            // A UID that began dying finishes first, as in the kubelet, even if it comes back.
            p.desired = !p.removing() && want.contains_key(p.uid.as_str());
        }
        // Pods on their way out first, so a replacement can start in the same pass.
        let leaving: Vec<String> =
            self.pods.values().filter(|p| !p.desired).map(|p| p.uid.clone()).collect();
        for uid in leaving {
            if self.sync_pod(&uid, desired, now, &mut out, Sync::NEWS) {
                self.pods.remove(&uid);
                out.push(Action::RemoveLogs { pod_uid: uid });
            }
        }
        // New pods are admitted one by one, first come first served: in file order, as the
        // kubelet's file source lists them (then by namespace/name within a file).
        let mut new: Vec<&DesiredPod> =
            want.values().copied().filter(|d| !self.pods.contains_key(d.uid())).collect();
        new.sort_by_cached_key(|d| (d.source.clone(), d.key()));
        for dp in new {
            let mut p = PodState::new((*dp.pod).clone(), now);
            self.node.admit(&mut p, &self.pods, &mut out);
            self.pods.insert(p.uid.clone(), p);
        }
        let staying: Vec<String> =
            self.pods.values().filter(|p| p.desired).map(|p| p.uid.clone()).collect();
        let any_leaving = self.pods.values().any(|p| !p.desired);
        for uid in staying {
            self.sync_pod(&uid, desired, now, &mut out, Sync { news: true, any_leaving });
        }
        out
    }

    /// Syncs one pod, a wanted one held while a leaving pod of the same name finishes.
    /// Returns whether it is gone.
    fn sync_pod(
        &mut self,
        uid: &str,
        desired: &DesiredState,
        now: Timestamp,
        out: &mut Vec<Action>,
        how: Sync,
    ) -> bool {
        let p = &self.pods[uid];
        let held = how.any_leaving
            && p.desired
            && self.pods.values().any(|o| !o.desired && o.key == p.key);
        let p = self.pods.get_mut(uid).expect("listed");
        p.sync_and_refresh(desired, held, now, &mut self.serial, out, how.news);
        p.gone()
    }

    /// The ConfigMaps or Secrets the pod refers to changed (its manifest did not). A pod whose
    /// sandbox is up gets its volumes re-rendered by the next reconcile; one without a sandbox
    /// renders them when the sandbox is made. Environment variables stay as they were, as in
    /// the kubelet.
    pub fn config_changed(&mut self, uid: &str) {
        if let Some(p) = self.pods.get(uid).filter(|p| p.sandbox_ready()) {
            self.outbox.push(Action::UpdateVolumes { pod: Box::new(p.to_pod()) });
        }
    }

    /// After an agent restart, before the first reconcile: take over the pods found on the
    /// node. Running instances are kept as they are; UIDs already known are left alone.
    /// Nothing of the old agent counts as in flight (its tasks died with it): the probes of
    /// running instances run at once.
    pub fn adopt(&mut self, pods: Vec<AdoptedPod>, now: Timestamp) {
        self.synced_desired = None;
        for a in pods {
            let p = PodState::adopt(a, now, &mut self.serial);
            self.pods.entry(p.uid.clone()).or_insert(p);
        }
    }

    /// Snapshots for the store, so that a restarted agent can [`Engine::adopt`] with them.
    pub fn persist(&self) -> Vec<PersistedPod> {
        self.pods.values().map(PodState::persist).collect()
    }

    /// The Kubernetes status of a pod the engine knows, by UID.
    pub fn pod_status(&self, uid: &str) -> Option<PodStatus> {
        self.pods.get(uid).map(|p| p.status.clone())
    }

    /// One pod by UID, as [`Engine::pods`] has it.
    pub fn pod(&self, uid: &str) -> Option<Pod> {
        self.pods.get(uid).map(PodState::to_pod)
    }

    /// Adds what safe updates say about a pod of [`Engine::pods`] for the API: annotations and
    /// a condition naming the running and the failed revision. Only for display: the store
    /// and the containers see the pod as its manifest has it.
    pub fn decorate(&self, pod: &mut Pod) {
        self.rollout.decorate(pod);
    }

    /// The spec of a pod the engine knows, by UID, without copying the pod.
    pub fn spec(&self, uid: &str) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        match self.pods.get(uid) {
            Some(p) => Some(p.spec()),
            None => self.rollout.prefetching(uid).and_then(|p| p.spec.as_ref()),
        }
    }

    /// Every known pod with its status; pods being removed carry `deletionTimestamp`.
    pub fn pods(&self) -> impl Iterator<Item = Pod> + '_ {
        self.pods.values().map(PodState::to_pod)
    }

    /// When the engine next needs a `reconcile` even if nothing is observed.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.pods.values().filter_map(|p| p.wake).chain(self.rollout.next_wakeup()).min()
    }
}

/// What a pod's sync may skip.
#[derive(Clone, Copy)]
struct Sync {
    /// The pod has news (a fact, a new desired state): its status must be recomputed.
    news: bool,
    /// Some pod is leaving, so a wanted pod of the same name may have to wait for it.
    any_leaving: bool,
}

impl Sync {
    const NEWS: Sync = Sync { news: true, any_leaving: true };
}

impl Observed {
    fn pod_uid(&self) -> &str {
        match self {
            Observed::SandboxReady { pod_uid }
            | Observed::SandboxFailed { pod_uid, .. }
            | Observed::SandboxRemoved { pod_uid }
            | Observed::SandboxDied { pod_uid } => pod_uid,
            Observed::ImagePulling { c }
            | Observed::ImagePulled { c, .. }
            | Observed::ImagePullFailed { c, .. }
            | Observed::ContainerStarted { c, .. }
            | Observed::StartFailed { c, .. }
            | Observed::ContainerExited { c, .. }
            | Observed::ProbeResult { c, .. }
            | Observed::HookResult { c, .. } => &c.pod_uid,
            Observed::NodeReadings(_) | Observed::Devices(_) => "",
        }
    }
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.attempt)
    }
}

/// Compact one-line form (without UIDs and specs), for logs and scenario tests.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateSandbox { .. } => write!(f, "CreateSandbox"),
            Action::PullImage { c, image, .. } => write!(f, "PullImage {c} {image}"),
            Action::StartContainer { c, .. } => write!(f, "StartContainer {c}"),
            Action::RunProbe { c, kind, timeout, .. } => {
                write!(f, "RunProbe {c} {kind:?} timeout={}s", timeout.as_secs())
            }
            Action::RunHook { c, kind, timeout, .. } => match timeout {
                Some(t) => write!(f, "RunHook {c} {kind:?} timeout={}s", t.as_secs()),
                None => write!(f, "RunHook {c} {kind:?}"),
            },
            Action::KillContainer { c, signal } => write!(f, "Kill {c} {signal:?}"),
            Action::RemoveContainer { c } => write!(f, "RemoveContainer {c}"),
            Action::RemoveSandbox { .. } => write!(f, "RemoveSandbox"),
            Action::UpdateVolumes { .. } => write!(f, "UpdateVolumes"),
            Action::RemoveLogs { .. } => write!(f, "RemoveLogs"),
            Action::Event { container, type_, reason, message, .. } => {
                let on = container.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
                write!(f, "Event{on} {type_:?} {reason}: {message}")
            }
        }
    }
}
