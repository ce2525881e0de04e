//! Safe updates (issue 23), a deliberate difference from the kubelet: an edited pod's images
//! are pulled while the old revision keeps running, the new revision must become Ready within
//! a deadline, and a revision that fails goes back to the last one that was Ready.
//!
//! It works by rewriting the desired state the rest of the engine sees: during the pull the
//! old revision stays desired, after a failure the remembered good revision is desired again
//! (the failed content is remembered by its hash, the content-derived UID, and not retried
//! until the file changes). Pods themselves run exactly as the kubelet runs them. Off (the
//! default of [`super::Engine::new`]), the desired state passes through untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};

use super::backoff::add;
use super::container::time;
use super::pod::PodState;
use super::{Action, ContainerRef, EventType, ImageFailure, Observed, Timestamp};
use crate::manifest::{DesiredPod, DesiredState, ObjectKey};

/// `"false"` turns rollback off for the pod.
pub const ROLLBACK_ANNOTATION: &str = "outpost.dev/rollback";
/// Seconds the new revision has to become Ready.
pub const DEADLINE_ANNOTATION: &str = "outpost.dev/rollout-deadline-seconds";
/// Set on the pod shown: the revision running, and the one that failed.
pub const REVISION_ANNOTATION: &str = "outpost.dev/revision";
pub const FAILED_REVISION_ANNOTATION: &str = "outpost.dev/failed-revision";
/// The pod condition naming the failed revision.
pub const ROLLED_BACK_CONDITION: &str = "outpost.dev/RolledBack";
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// How long the new revision must stay Ready to pass (or until the deadline, if sooner): a
/// container without a readiness probe is Ready the moment it starts, before a wrong command
/// has had time to exit.
pub const STABLE_FOR: Duration = Duration::from_secs(10);

/// The sandbox tag of prefetch pulls: no sandbox exists for them.
const PREFETCH: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutConfig {
    pub rollback: bool,
    pub deadline: Duration,
}

impl Default for RolloutConfig {
    /// Off: the kubelet's behaviour.
    fn default() -> Self {
        Self { rollback: false, deadline: DEFAULT_DEADLINE }
    }
}

/// How a revision ended, as the history shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevisionResult {
    /// Pulled and started, waiting for the health gate.
    Pending,
    Ready,
    /// Failed the gate (or its pull) with this reason; the good revision runs instead.
    Failed(String),
    /// Its gate was cut short by another edit (an edit back to the good revision too).
    Superseded,
}

/// A change to the stored history.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryChange {
    Recorded(Revision),
    /// The name left the manifests: its history ends with it, so a pod of that name added
    /// later starts as a first version (with or without an agent restart in between), and the
    /// Secrets its revisions read do not outlive it in the database.
    Forgotten(ObjectKey),
}

/// One step in a pod's history, for the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    pub key: ObjectKey,
    /// The content hash (the pod's UID).
    pub hash: String,
    pub pod: Arc<Pod>,
    /// The ConfigMaps and Secrets it read, as they were (no pods).
    pub config: Arc<DesiredState>,
    pub at: Timestamp,
    pub result: RevisionResult,
}

/// The new revision's images are being pulled; `waiting` lists its containers not done.
#[derive(Debug)]
struct Prefetch {
    dp: DesiredPod,
    waiting: BTreeSet<String>,
}

/// The new revision runs and must be Ready by `deadline`, and stay Ready [`STABLE_FOR`]
/// (from `ready_since`) or until the deadline.
#[derive(Debug)]
struct Gate {
    pod: Arc<Pod>,
    /// The ConfigMaps and Secrets it started with.
    config: Arc<DesiredState>,
    deadline: Timestamp,
    ready_since: Option<Timestamp>,
}

/// The last revision that was Ready, with the ConfigMaps and Secrets it read then.
#[derive(Clone, Debug)]
struct Good {
    pod: Arc<Pod>,
    config: Arc<DesiredState>,
}

#[derive(Debug, Default)]
struct Track {
    good: Option<Good>,
    failed: BTreeSet<String>,
    /// The last failure, for the condition and annotation: (hash, reason).
    last_failed: Option<(String, String)>,
    gate: Option<Gate>,
    /// A revision not gated (a first version, or rollback off for it) Ready since then.
    candidate: Option<(String, Timestamp)>,
    /// An edit that came during a gate is pulled while the gated revision keeps running
    /// under its gate (instead of the good one coming back for the pull only).
    prefetch: Option<Prefetch>,
}

impl Track {
    /// What runs while the next revision is pulled: the gated revision, else the good one.
    fn keep(&self) -> Option<Good> {
        match &self.gate {
            Some(g) => Some(Good { pod: g.pod.clone(), config: g.config.clone() }),
            None => self.good.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Rollouts {
    pub config: RolloutConfig,
    tracks: BTreeMap<ObjectKey, Track>,
    /// The input and output of the last rewrite, reused while neither changes (so the engine
    /// keeps its fast path for an unchanged `Arc`).
    input: Option<Arc<DesiredState>>,
    output: Option<Arc<DesiredState>>,
    dirty: bool,
    journal: Vec<HistoryChange>,
    /// Revisions that failed since start (the metric).
    pub failures: u64,
}

/// The first 8 characters of a hash, as events and history show it.
pub fn short(hash: &str) -> &str {
    hash.get(..8).unwrap_or(hash)
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(name).map(String::as_str)
}

impl Rollouts {
    fn enabled_for(&self, pod: &Pod) -> bool {
        self.config.rollback && annotation(pod, ROLLBACK_ANNOTATION) != Some("false")
    }

    fn deadline_for(&self, pod: &Pod) -> Duration {
        deadline_for(pod, self.config.deadline)
    }

    /// Journals the revision; returns the ConfigMaps and Secrets it read.
    fn record(
        &mut self,
        key: &ObjectKey,
        pod: &Arc<Pod>,
        at: Timestamp,
        result: RevisionResult,
    ) -> Arc<DesiredState> {
        let config = Arc::new(self.input.as_ref().map(|d| d.config_of(pod)).unwrap_or_default());
        self.record_with(key, pod, at, result, config)
    }

    /// [`Self::record`] with the ConfigMaps and Secrets it read.
    fn record_with(
        &mut self,
        key: &ObjectKey,
        pod: &Arc<Pod>,
        at: Timestamp,
        result: RevisionResult,
        config: Arc<DesiredState>,
    ) -> Arc<DesiredState> {
        let hash = uid(pod).to_owned();
        let r = Revision { key: key.clone(), hash, pod: pod.clone(), config, at, result };
        let config = r.config.clone();
        self.journal.push(HistoryChange::Recorded(r));
        config
    }

    /// History changes since the last call, for the store.
    pub fn take_journal(&mut self) -> Vec<HistoryChange> {
        std::mem::take(&mut self.journal)
    }

    /// After an agent restart: the history as stored, oldest first.
    pub fn restore(&mut self, history: Vec<Revision>, now: Timestamp) {
        // Off, nothing is rolled back to (nor are its images kept); the history waits in the
        // store for safe updates to be turned on again.
        if !self.config.rollback {
            return;
        }
        for r in history {
            let deadline = add(now, self.deadline_for(&r.pod));
            let t = self.tracks.entry(r.key.clone()).or_default();
            let gated = t.gate.as_ref().is_some_and(|g| uid(&g.pod) == r.hash);
            match r.result {
                RevisionResult::Ready => {
                    // The file had this content, unless it passed a gate that went on while
                    // the next edit was pulled (and failed, maybe: that failure stays).
                    if gated {
                        t.failed.remove(&r.hash);
                    } else {
                        t.failed.clear();
                    }
                    // As when it passed: a failure that is not the file's any more is over.
                    if t.last_failed.as_ref().is_some_and(|(hash, _)| !t.failed.contains(hash)) {
                        t.last_failed = None;
                    }
                    t.good = Some(Good { pod: r.pod, config: r.config });
                    t.gate = None;
                }
                RevisionResult::Failed(reason) => {
                    t.failed.insert(r.hash.clone());
                    t.last_failed = Some((r.hash, reason));
                    // A failed pull during a gate leaves the gate on.
                    if gated {
                        t.gate = None;
                    }
                }
                RevisionResult::Superseded => {
                    if gated {
                        t.gate = None;
                    }
                }
                // Interrupted mid-gate: the gate starts over from now.
                RevisionResult::Pending => {
                    t.failed.clear();
                    let (pod, config) = (r.pod, r.config);
                    t.gate = Some(Gate { pod, config, deadline, ready_since: None });
                }
            }
        }
        self.dirty = true;
    }

    /// The desired state the engine acts on.
    pub fn effective(
        &mut self,
        desired: &Arc<DesiredState>,
        pods: &BTreeMap<String, PodState>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> Arc<DesiredState> {
        if !self.config.rollback {
            return desired.clone();
        }
        let same = self.input.as_ref().is_some_and(|i| Arc::ptr_eq(i, desired));
        if same && !self.dirty {
            if let Some(o) = &self.output {
                return o.clone();
            }
        }
        self.dirty = false;
        self.input = Some(desired.clone());
        // Names no longer in the manifests are forgotten: a pod that comes back is new.
        let gone: Vec<ObjectKey> =
            self.tracks.keys().filter(|k| !desired.pods.contains_key(k)).cloned().collect();
        for key in gone {
            self.tracks.remove(&key);
            self.journal.push(HistoryChange::Forgotten(key));
        }
        let mut eff = (**desired).clone();
        for (key, dp) in &desired.pods {
            if let Some(good) = self.rewrite(key, dp, pods, now, out) {
                // The good revision runs with the ConfigMaps and Secrets it was Ready with.
                let config = &good.config;
                eff.config_maps
                    .extend(config.config_maps.iter().map(|(k, v)| (k.clone(), v.clone())));
                eff.secrets.extend(config.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
                eff.pods
                    .insert(key.clone(), DesiredPod { pod: good.pod, source: dp.source.clone() });
            }
        }
        let eff = Arc::new(eff);
        self.output = Some(eff.clone());
        eff
    }

    /// The pod to run instead of `dp`, if not `dp`.
    fn rewrite(
        &mut self,
        key: &ObjectKey,
        dp: &DesiredPod,
        pods: &BTreeMap<String, PodState>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> Option<Good> {
        let enabled = self.enabled_for(&dp.pod);
        let deadline = add(now, self.deadline_for(&dp.pod));
        let t = self.tracks.entry(key.clone()).or_default();
        let new = dp.uid();
        // Failed content is not retried while the file stays as it is: once the file
        // changed, coming back to it is a new edit.
        t.failed.retain(|h| h == new);
        let good = t.good.clone().filter(|g| uid(&g.pod) != new);
        if good.filter(|_| enabled).is_none() {
            // The good revision itself, a first version or rollback off: as the kubelet.
            t.prefetch = None;
            if let Some(g) = t.gate.take() {
                self.record_with(key, &g.pod, now, RevisionResult::Superseded, g.config);
            }
            let t = self.tracks.get_mut(key).expect("tracked");
            let ready = pods.values().any(|p| p.desired && p.uid == new && healthy(p));
            if let Some(g) = t.good.clone().filter(|g| ready && uid(&g.pod) == new) {
                // Its ConfigMaps or Secrets edited alone (no new revision, no gate) while it
                // is Ready: a rollback to it must not bring back the versions from before.
                let now_read = self.input.as_ref().map(|d| d.config_of(&g.pod)).unwrap_or_default();
                if now_read != *g.config {
                    let config = self.record(key, &g.pod, now, RevisionResult::Ready);
                    let t = self.tracks.get_mut(key).expect("tracked");
                    t.good = Some(Good { pod: g.pod, config });
                }
            }
            return None;
        }
        if t.failed.contains(new) {
            t.prefetch = None;
            return t.keep();
        }
        if let Some(g) = t.gate.as_mut().filter(|g| uid(&g.pod) == new) {
            t.prefetch = None;
            // It runs with them as they are now (ConfigMaps or Secrets edited alone).
            let now_read = self.input.as_ref().map(|d| d.config_of(&g.pod)).unwrap_or_default();
            g.config = Arc::new(now_read);
            return None;
        }
        match &t.prefetch {
            Some(p) if p.dp.uid() == new => t.keep(),
            _ => {
                t.prefetch = None;
                // Something of this name runs: fetch the new images before replacing it.
                let live = pods.values().any(|p| p.desired && p.key == *key);
                if !live {
                    self.start_gate(key, &dp.pod, now, deadline);
                    return None;
                }
                let spec = dp.pod.spec.as_ref();
                let containers = spec
                    .into_iter()
                    .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
                let mut waiting = BTreeSet::new();
                for c in containers {
                    waiting.insert(c.name.clone());
                    out.push(Action::PullImage {
                        c: ContainerRef {
                            pod_uid: new.to_owned(),
                            name: c.name.clone(),
                            attempt: 0,
                            sandbox: PREFETCH,
                        },
                        image: c.image.clone().unwrap_or_default(),
                        policy: c
                            .image_pull_policy
                            .clone()
                            .unwrap_or_else(|| "IfNotPresent".into()),
                    });
                }
                if waiting.is_empty() {
                    self.start_gate(key, &dp.pod, now, deadline);
                    return None;
                }
                t.prefetch = Some(Prefetch { dp: dp.clone(), waiting });
                t.keep()
            }
        }
    }

    /// The revision starts (instead of a gated one, if any) and must pass its gate.
    fn start_gate(&mut self, key: &ObjectKey, pod: &Arc<Pod>, now: Timestamp, deadline: Timestamp) {
        let gated = self.tracks.get_mut(key).and_then(|t| t.gate.take());
        if let Some(g) = gated {
            self.record_with(key, &g.pod, now, RevisionResult::Superseded, g.config);
        }
        let config = self.record(key, pod, now, RevisionResult::Pending);
        let t = self.tracks.get_mut(key).expect("tracked");
        t.prefetch = None;
        t.gate = Some(Gate { pod: pod.clone(), config, deadline, ready_since: None });
    }

    /// The desired state the engine acts on, when safe updates rewrote it: the agent renders
    /// volumes, env and pull secrets from it, so a rolled-back revision reads its own
    /// ConfigMaps and Secrets.
    pub fn output(&self) -> Option<&Arc<DesiredState>> {
        self.output.as_ref().filter(|_| self.config.rollback)
    }

    /// Images a rollout still needs besides the pods running: those of each last Ready
    /// revision (to roll back to without a pull, offline too) and of revisions being
    /// prefetched. Image collection under disk pressure keeps them.
    pub fn images(&self) -> Vec<String> {
        let pods = self.tracks.values().flat_map(|t| {
            let prefetch = t.prefetch.as_ref().map(|p| &*p.dp.pod);
            t.good.as_ref().map(|g| &*g.pod).into_iter().chain(prefetch)
        });
        pods.filter_map(|p| p.spec.as_ref())
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .filter_map(|c| c.image.clone())
            .collect()
    }

    /// The spec of a revision being prefetched (for its pull secrets).
    pub fn prefetching(&self, pod_uid: &str) -> Option<&Pod> {
        let p = self
            .tracks
            .values()
            .find_map(|t| t.prefetch.as_ref().filter(|p| p.dp.uid() == pod_uid));
        p.map(|p| &*p.dp.pod)
    }

    /// A pull's answer for a revision being prefetched. Returns whether it was one.
    pub fn observe(&mut self, fact: &Observed, now: Timestamp, out: &mut Vec<Action>) -> bool {
        let c = match fact {
            Observed::ImagePulling { c }
            | Observed::ImagePulled { c, .. }
            | Observed::ImagePullFailed { c, .. } => c,
            _ => return false,
        };
        if c.sandbox != PREFETCH {
            return false;
        }
        let Some((key, t)) = self
            .tracks
            .iter_mut()
            .find(|(_, t)| t.prefetch.as_ref().is_some_and(|p| p.dp.uid() == c.pod_uid))
        else {
            return false;
        };
        let key = key.clone();
        let default_deadline = self.config.deadline;
        let old = t.keep().map(|g| uid(&g.pod).to_owned()).unwrap_or_default();
        let Some(Prefetch { dp, waiting }) = &mut t.prefetch else { unreachable!() };
        let rev = short(&c.pod_uid).to_owned();
        let image = image_of(&dp.pod, &c.name);
        let event = |type_, reason: &str, message: String| Action::Event {
            pod_uid: old.clone(),
            container: Some(c.name.clone()),
            type_,
            reason: reason.into(),
            message,
        };
        match fact {
            Observed::ImagePulling { .. } => {
                let msg = format!("Pulling image {image:?} for revision {rev}");
                out.push(event(EventType::Normal, "Pulling", msg));
            }
            Observed::ImagePulled { .. } => {
                waiting.remove(&c.name);
                if waiting.is_empty() {
                    let pod = dp.pod.clone();
                    let deadline = add(now, deadline_for(&pod, default_deadline));
                    self.start_gate(&key, &pod, now, deadline);
                    self.dirty = true;
                }
            }
            Observed::ImagePullFailed { message, reason, .. } => {
                let stays = format!("the running revision {} stays", short(&old));
                let (reason, msg) = match reason {
                    ImageFailure::Pull => (
                        "ErrImagePull",
                        format!(
                            "Failed to pull image {image:?} for revision {rev}: {message}; {stays}"
                        ),
                    ),
                    ImageFailure::NeverPull => {
                        ("ErrImageNeverPull", format!("{message} (revision {rev}); {stays}"))
                    }
                };
                out.push(event(EventType::Warning, reason, msg));
                let pod = dp.pod.clone();
                self.fail(&key, &pod, reason, now, out);
            }
            _ => {}
        }
        true
    }

    /// The gate: checks every revision under it against its pod's status and this pass's
    /// actions. Returns whether the desired state must be rewritten (a rollout ended).
    pub fn check(
        &mut self,
        pods: &BTreeMap<String, PodState>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.config.rollback {
            return false;
        }
        let mut failed = vec![];
        let mut ready = vec![];
        let live: BTreeMap<&ObjectKey, &PodState> =
            pods.values().filter(|p| p.desired).map(|p| (&p.key, p)).collect();
        for (key, t) in &mut self.tracks {
            match &mut t.gate {
                Some(Gate { pod, config, deadline, ready_since }) => {
                    let p = live.get(key).filter(|p| p.uid == uid(pod));
                    let done = p.is_some_and(|p| p.status.phase.as_deref() == Some("Succeeded"));
                    if p.is_some_and(|p| healthy(p)) {
                        let since = *ready_since.get_or_insert(now);
                        if done || now >= add(since, STABLE_FOR) || now >= *deadline {
                            // With what it ran with: the next edit's are not its own.
                            ready.push((key.clone(), pod.clone(), Some(config.clone())));
                        }
                        continue;
                    }
                    *ready_since = None;
                    if let Some(reason) = p.and_then(|p| failure(p, out)) {
                        failed.push((key.clone(), pod.clone(), reason));
                    } else if now >= *deadline {
                        let reason = "ProgressDeadlineExceeded".to_owned();
                        failed.push((key.clone(), pod.clone(), reason));
                    }
                }
                // Remember the newest revision that was Ready for the stable period, as the
                // gate asks (a first version too): one that crash-loops never worked.
                None if t.prefetch.is_none() => {
                    let candidate = t.candidate.take();
                    let Some(p) = live.get(key) else { continue };
                    let known = t.good.as_ref().map(|g| uid(&g.pod)) == Some(p.uid.as_str());
                    if known || !healthy(p) || t.failed.contains(&p.uid) {
                        continue;
                    }
                    let since = candidate.filter(|(u, _)| *u == p.uid).map_or(now, |(_, s)| s);
                    let done = p.status.phase.as_deref() == Some("Succeeded");
                    if done || now >= add(since, STABLE_FOR) {
                        // As the manifest has it: a rollback to it is a new pod (its AGE).
                        let mut pod = p.pod.clone();
                        pod.metadata.creation_timestamp = None;
                        ready.push((key.clone(), Arc::new(pod), None));
                    } else {
                        t.candidate = Some((p.uid.clone(), since));
                    }
                }
                None => t.candidate = None,
            }
        }
        let changed = !failed.is_empty() || ready.iter().any(|(k, _, _)| self.gated(k));
        for (key, pod, config) in ready {
            let config = match config {
                Some(config) => self.record_with(&key, &pod, now, RevisionResult::Ready, config),
                None => self.record(&key, &pod, now, RevisionResult::Ready),
            };
            let t = self.tracks.get_mut(&key).expect("listed");
            t.gate = None;
            // The failure is over, unless it is the file's content (whose pull failed while
            // this revision was under its gate).
            if t.last_failed.as_ref().is_some_and(|(hash, _)| !t.failed.contains(hash)) {
                t.last_failed = None;
            }
            t.good = Some(Good { pod, config });
        }
        for (key, pod, reason) in failed {
            self.fail(&key, &pod, &reason, now, out);
        }
        changed
    }

    fn gated(&self, key: &ObjectKey) -> bool {
        self.tracks.get(key).is_some_and(|t| t.gate.is_some())
    }

    /// Back to the good revision; `pod` is not retried until its file changes.
    fn fail(
        &mut self,
        key: &ObjectKey,
        pod: &Arc<Pod>,
        reason: &str,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let t = self.tracks.get_mut(key).expect("tracked");
        let hash = uid(pod).to_owned();
        t.failed.insert(hash.clone());
        t.last_failed = Some((hash.clone(), reason.to_owned()));
        if t.gate.as_ref().is_some_and(|g| uid(&g.pod) == hash) {
            t.gate = None;
        }
        if t.prefetch.as_ref().is_some_and(|p| p.dp.uid() == hash) {
            t.prefetch = None;
        }
        // What runs instead: a gated revision while the next one's pull failed, else the
        // good one.
        let good = t.keep().map(|g| uid(&g.pod).to_owned()).unwrap_or_default();
        // On the revision that runs, so that `describe` of the pod shows it.
        let on = if good.is_empty() { hash.clone() } else { good.clone() };
        out.push(Action::Event {
            pod_uid: on,
            container: None,
            type_: EventType::Warning,
            reason: "RolledBack".into(),
            message: format!(
                "Revision {} failed ({reason}): rolled back to revision {}",
                short(&hash),
                short(&good)
            ),
        });
        self.failures += 1;
        self.dirty = true;
        self.record(key, pod, now, RevisionResult::Failed(reason.to_owned()));
    }

    /// When a deadline needs a reconcile.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.tracks
            .values()
            .filter_map(|t| match (&t.gate, &t.candidate) {
                (Some(g), _) => {
                    Some(g.ready_since.map_or(g.deadline, |s| add(s, STABLE_FOR).min(g.deadline)))
                }
                (None, c) => c.as_ref().map(|(_, since)| add(*since, STABLE_FOR)),
            })
            .min()
    }

    /// The annotation and condition naming the running and the failed revision.
    pub fn decorate(&self, pod: &mut Pod) {
        if !self.config.rollback {
            return;
        }
        let key = ObjectKey::new(
            pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let Some((hash, reason)) = self.tracks.get(&key).and_then(|t| t.last_failed.as_ref())
        else {
            return;
        };
        let running = uid(pod).to_owned();
        if *hash == running {
            return;
        }
        let a = pod.metadata.annotations.get_or_insert_with(Default::default);
        a.insert(REVISION_ANNOTATION.into(), running.clone());
        a.insert(FAILED_REVISION_ANNOTATION.into(), hash.clone());
        let status = pod.status.get_or_insert_with(Default::default);
        let since = status.start_time.clone();
        status.conditions.get_or_insert_with(Vec::new).push(PodCondition {
            type_: ROLLED_BACK_CONDITION.into(),
            status: "True".into(),
            reason: Some(reason.clone()),
            message: Some(format!(
                "revision {} failed ({reason}); revision {} runs",
                short(hash),
                short(&running)
            )),
            last_transition_time: since.or_else(|| Some(time(Timestamp::UNIX_EPOCH))),
            ..Default::default()
        });
    }
}

fn deadline_for(pod: &Pod, default: Duration) -> Duration {
    annotation(pod, DEADLINE_ANNOTATION)
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, Duration::from_secs)
}

fn image_of(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut all =
        spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
    all.find(|c| c.name == name).and_then(|c| c.image.clone()).unwrap_or_default()
}

/// Ready, or Succeeded for a pod that runs to completion.
fn healthy(p: &PodState) -> bool {
    let s = &p.status;
    s.phase.as_deref() == Some("Succeeded")
        || s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Why the revision failed at once, if it did: CrashLoopBackOff, a failed pull, a failed
/// startup probe, rejection or a failed phase.
fn failure(p: &PodState, out: &[Action]) -> Option<String> {
    let s = &p.status;
    let statuses =
        || s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten());
    if s.phase.as_deref() == Some("Failed") {
        // An admission rejection's reason, else that of the container that failed (Error,
        // OOMKilled): the kubelet gives the pod none.
        let terminated = statuses().filter_map(|c| c.state.as_ref()?.terminated.as_ref());
        let failed = terminated.filter(|t| t.exit_code != 0).find_map(|t| t.reason.clone());
        return Some(s.reason.clone().or(failed).unwrap_or_else(|| "Failed".into()));
    }
    for c in statuses() {
        let waiting = c.state.as_ref().and_then(|st| st.waiting.as_ref());
        let reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or_default();
        if matches!(
            reason,
            "CrashLoopBackOff" | "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull"
        ) {
            return Some(reason.to_owned());
        }
    }
    let startup = out.iter().any(|a| {
        matches!(a, Action::Event { pod_uid, reason, message, .. }
            if *pod_uid == p.uid && reason == "Killing" && message.contains("failed startup probe"))
    });
    startup.then(|| "StartupProbeFailed".into())
}
