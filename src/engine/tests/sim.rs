//! A fake clock and a fake runtime that turns the engine's actions into facts after scripted
//! delays. Only the engine's public surface is used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod, PodCondition, PodStatus};

use crate::engine::{
    summary, Action, AdoptedContainer, AdoptedPod, ContainerRef, Engine, Exit, HookKind,
    ImageFailure, KillSignal, Observed, ProbeKind, PullStats, StartFailure, Timestamp,
};
use crate::manifest::{DesiredPod, DesiredState, ObjectKey};

pub fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

pub fn secs(ts: &Timestamp) -> i64 {
    ts.as_second()
}

/// A pod from YAML; `metadata.uid` defaults to `uid-<name>`, namespace to `default`. No other
/// defaults are applied: the engine must cope.
pub fn pod(yaml: &str) -> Pod {
    let mut p: Pod = serde_yaml::from_str(yaml).expect("test pod YAML");
    let name = p.metadata.name.clone().unwrap_or_default();
    p.metadata.namespace.get_or_insert_with(|| "default".into());
    p.metadata.uid.get_or_insert_with(|| format!("uid-{name}"));
    p
}

pub fn config_map(name: &str, keys: &[&str]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("default".into());
    cm.data = Some(keys.iter().map(|k| (k.to_string(), "v".to_string())).collect());
    cm
}

/// What the fake runtime reports for every registry pull (sub-millisecond parts included, which
/// the kubelet's message truncates).
pub const PULL: PullStats = PullStats {
    took: Duration::from_micros(1_234_567),
    total: Duration::from_nanos(1_500_999_999),
    size: 4_269_694,
};

type Delayed<T> = (i64, T);
type ByAttempt<T> = Box<dyn Fn(u32) -> T>;
type Outcome = Delayed<Result<(), String>>;

/// How one container (by name) behaves in the fake runtime. Closures get the attempt number
/// (or, for probes, the kind and the current time in seconds).
pub struct Script {
    /// The image is in the store: no pull under IfNotPresent and Never.
    pub present: bool,
    /// A registry pull: its delay and result.
    pub pull: ByAttempt<Outcome>,
    pub start: ByAttempt<Option<(StartFailure, String)>>,
    /// Exits on its own: after (seconds, exit code, oom).
    pub exit: ByAttempt<Option<(i64, i32, bool)>>,
    /// Seconds from SIGTERM to exit; `None` ignores SIGTERM (SIGKILL always works at once).
    pub term: Option<i64>,
    /// Traps SIGTERM and exits 0 (instead of dying by the signal: 143).
    pub graceful: bool,
    pub probe: Box<dyn Fn(ProbeKind, i64) -> Outcome>,
    /// A successful probe carries this warning (an HTTP redirect not followed).
    pub probe_warning: Option<String>,
    pub hook: Box<dyn Fn(HookKind, u32) -> Outcome>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            present: false,
            pull: Box::new(|_| (0, Ok(()))),
            start: Box::new(|_| None),
            exit: Box::new(|_| None),
            term: Some(0),
            graceful: false,
            probe: Box::new(|_, _| (0, Ok(()))),
            probe_warning: None,
            hook: Box::new(|_, _| (0, Ok(()))),
        }
    }
}

pub struct Sim {
    pub engine: Engine,
    pub desired: std::sync::Arc<DesiredState>,
    pub now: i64,
    scripts: BTreeMap<String, Script>,
    queue: Vec<(i64, u64, Observed)>,
    seq: u64,
    /// Running instances and when they started.
    alive: BTreeMap<ContainerRef, i64>,
    log: Vec<String>,
    /// Record `<-` lines for facts too (off by default to keep expectations short).
    pub log_facts: bool,
    /// Fail this many sandbox creations first.
    pub sandbox_failures: u32,
}

impl Sim {
    pub fn new(pods: &[Pod]) -> Self {
        let mut s = Self {
            engine: Engine::new(),
            desired: Default::default(),
            now: 0,
            scripts: BTreeMap::new(),
            queue: vec![],
            seq: 0,
            alive: BTreeMap::new(),
            log: vec![],
            log_facts: false,
            sandbox_failures: 0,
        };
        for p in pods {
            s.apply(p.clone());
        }
        s
    }

    pub fn script(&mut self, name: &str) -> &mut Script {
        self.scripts.entry(name.into()).or_default()
    }

    pub fn apply(&mut self, pod: Pod) {
        let dp =
            DesiredPod { pod: pod.into(), source: PathBuf::from("/etc/outpost/pods/test.yaml") };
        self.desired_mut().pods.insert(dp.key(), dp);
    }

    pub fn delete(&mut self, name: &str) {
        self.desired_mut().pods.remove(&ObjectKey::new("default", name));
    }

    /// What the runtime would report for pod `uid` after an agent restart: the sandbox is
    /// ready and its running instances; `exited` lists instances that died while the agent
    /// was down, `(container, exit code, at)`.
    pub fn found(&self, uid: &str, exited: &[(&str, i32, i64)]) -> AdoptedPod {
        let pod = self.desired.pods.values().find(|d| d.uid() == uid).expect("desired pod");
        let containers = self
            .alive
            .iter()
            .filter(|(c, _)| c.pod_uid == uid)
            .map(|(c, started)| AdoptedContainer {
                c: c.clone(),
                started_at: t(*started),
                exit: exited.iter().find(|e| e.0 == c.name).map(|e| Exit {
                    exit_code: e.1,
                    signal: None,
                    oom_killed: false,
                    lost: false,
                    at: t(e.2),
                    message: None,
                }),
                previous: None,
            })
            .collect();
        AdoptedPod { pod: (*pod.pod).clone(), sandbox_ready: true, containers, saved: None }
    }

    /// The agent restarts at `at` with a new engine that adopts `pods`. Answers to the old
    /// engine's requests are lost; instances reported exited are dead.
    pub fn restart_agent(&mut self, at: i64, pods: Vec<AdoptedPod>) {
        self.now = at;
        for p in &pods {
            for f in p.containers.iter().filter(|f| f.exit.is_some()) {
                self.alive.remove(&f.c);
            }
        }
        let alive = self.alive.clone();
        self.queue.retain(
            |q| matches!(&q.2, Observed::ContainerExited { c, .. } if alive.contains_key(c)),
        );
        self.engine = Engine::new();
        self.engine.adopt(pods, t(at));
    }

    /// The runtime reports the pod's sandbox dead now (its containers keep running).
    pub fn kill_sandbox(&mut self, pod_uid: &str) {
        self.push(0, Observed::SandboxDied { pod_uid: pod_uid.into() });
    }

    fn push(&mut self, after: i64, fact: Observed) {
        self.seq += 1;
        self.queue.push((self.now + after.max(0), self.seq, fact));
    }

    fn execute(&mut self, a: &Action) {
        fn script<'a>(s: &'a Sim, name: &str) -> Option<&'a Script> {
            s.scripts.get(name)
        }
        match a.clone() {
            Action::CreateSandbox { pod } => {
                let pod_uid = pod.metadata.uid.unwrap_or_default();
                if self.sandbox_failures > 0 {
                    self.sandbox_failures -= 1;
                    let message =
                        "failed to setup network for sandbox: no IP addresses available".into();
                    return self.push(0, Observed::SandboxFailed { pod_uid, message });
                }
                self.push(0, Observed::SandboxReady { pod_uid });
            }
            Action::RemoveSandbox { pod_uid } => self.push(0, Observed::SandboxRemoved { pod_uid }),
            Action::PullImage { c, image, policy } => {
                let s = script(self, &c.name);
                if s.is_some_and(|s| s.present) && policy != "Always" {
                    return self.push(0, Observed::ImagePulled { c, pull: None });
                }
                if policy == "Never" {
                    let message = format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    );
                    let reason = ImageFailure::NeverPull;
                    return self.push(0, Observed::ImagePullFailed { c, reason, message });
                }
                let (d, r) = s.map_or((0, Ok(())), |s| (s.pull)(c.attempt));
                self.push(0, Observed::ImagePulling { c: c.clone() });
                let fact = match r {
                    Ok(()) => Observed::ImagePulled { c, pull: Some(PULL) },
                    Err(message) => {
                        Observed::ImagePullFailed { c, reason: ImageFailure::Pull, message }
                    }
                };
                self.push(d, fact);
            }
            Action::StartContainer { c, .. } => {
                let s = script(self, &c.name);
                if let Some((reason, message)) = s.and_then(|s| (s.start)(c.attempt)) {
                    return self.push(0, Observed::StartFailed { c, reason, message });
                }
                let exit = s.and_then(|s| (s.exit)(c.attempt));
                self.alive.insert(c.clone(), self.now);
                self.push(0, Observed::ContainerStarted { c: c.clone(), at: t(self.now) });
                if let Some((after, code, oom)) = exit {
                    self.push(after, exited(c, code, None, oom));
                }
            }
            Action::KillContainer { c, signal } => {
                let term = script(self, &c.name).map_or(Some(0), |s| s.term);
                let graceful = script(self, &c.name).is_some_and(|s| s.graceful);
                match (signal, term) {
                    (KillSignal::Kill, _) => self.push(0, exited(c, 0, Some(9), false)),
                    (KillSignal::Term, Some(d)) if graceful => {
                        self.push(d, exited(c, 0, None, false))
                    }
                    (KillSignal::Term, Some(d)) => self.push(d, exited(c, 0, Some(15), false)),
                    (KillSignal::Term, None) => {}
                }
            }
            Action::RunProbe { c, kind, seq, .. } => {
                let now = self.now;
                let (d, result) = script(self, &c.name).map_or((0, Ok(None)), |s| {
                    let (d, result) = (s.probe)(kind, now);
                    (d, result.map(|()| s.probe_warning.clone()))
                });
                self.push(d, Observed::ProbeResult { c, kind, seq, result });
            }
            Action::RunHook { c, kind, .. } => {
                let (d, result) =
                    script(self, &c.name).map_or((0, Ok(())), |s| (s.hook)(kind, c.attempt));
                self.push(d, Observed::HookResult { c, kind, result });
            }
            Action::RemoveContainer { .. }
            | Action::Event { .. }
            | Action::UpdateVolumes { .. }
            | Action::RemoveLogs { .. } => {}
        }
    }

    /// The desired state to edit: a new `Arc` once changed, as the watcher delivers it.
    pub fn desired_mut(&mut self) -> &mut DesiredState {
        std::sync::Arc::make_mut(&mut self.desired)
    }

    /// Reconcile, execute, deliver facts and wake-ups in time order, up to and including `end`.
    pub fn run_until(&mut self, end: i64) {
        for _ in 0..100_000 {
            let actions = self.engine.reconcile(&self.desired, t(self.now));
            for a in &actions {
                self.log.push(format!("{} {a}", self.now));
                self.execute(a);
            }
            let next_fact = self.queue.iter().map(|q| q.0).min();
            let wake = self.engine.next_wakeup().map(|w| secs(&w));
            if let Some(w) = wake {
                assert!(w > self.now, "next_wakeup {w} is not in the future (now {})", self.now);
            }
            let Some(next) = next_fact.into_iter().chain(wake).min().filter(|n| *n <= end) else {
                self.now = end;
                return;
            };
            self.now = next;
            self.queue.sort_by_key(|q| (q.0, q.1));
            let due: Vec<_> = self.queue.iter().take_while(|q| q.0 <= next).cloned().collect();
            self.queue.drain(..due.len());
            for (_, _, mut fact) in due {
                if let Observed::ContainerExited { c, at, .. } = &mut fact {
                    if self.alive.remove(c).is_none() {
                        continue; // already dead: a scripted exit raced a kill
                    }
                    *at = t(next);
                }
                if self.log_facts {
                    self.log.push(format!("{} <- {fact:?}", self.now));
                }
                self.engine.observe(fact, t(self.now));
            }
        }
        panic!("simulation does not settle");
    }

    /// Log lines since the last call, without events.
    pub fn actions(&mut self) -> Vec<String> {
        self.take().into_iter().filter(|l| !l.contains(" Event")).collect()
    }

    /// Everything logged since the last call.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    pub fn events(&mut self) -> Vec<String> {
        self.take().into_iter().filter(|l| l.contains(" Event")).collect()
    }

    fn the_pod(&self) -> Pod {
        let pods: Vec<Pod> = self.engine.pods().collect();
        pods.into_iter().find(|p| p.metadata.deletion_timestamp.is_none()).expect("a live pod")
    }

    pub fn status(&self) -> PodStatus {
        self.the_pod().status.unwrap()
    }

    pub fn status_of(&self, uid: &str) -> Option<PodStatus> {
        self.engine.pod_status(uid)
    }

    pub fn summary(&self) -> String {
        summary(&self.the_pod())
    }

    pub fn phase(&self) -> String {
        self.status().phase.unwrap()
    }

    pub fn ctr(&self, name: &str) -> ContainerStatus {
        let s = self.status();
        let all = s
            .init_container_statuses
            .into_iter()
            .flatten()
            .chain(s.container_statuses.into_iter().flatten());
        all.into_iter().find(|c| c.name == name).expect("container status")
    }

    pub fn cond(&self, type_: &str) -> PodCondition {
        self.status().conditions.unwrap().into_iter().find(|c| c.type_ == type_).unwrap()
    }
}

fn exited(c: ContainerRef, exit_code: i32, signal: Option<i32>, oom_killed: bool) -> Observed {
    // Placeholder time, replaced on delivery.
    Observed::ContainerExited {
        c,
        exit_code,
        signal,
        oom_killed,
        lost: false,
        at: t(0),
        message: None,
    }
}

/// `(reason, message)` of the waiting state, or `("", "")`.
pub fn waiting(s: &ContainerStatus) -> (String, String) {
    let w = s.state.clone().and_then(|st| st.waiting).unwrap_or_default();
    (w.reason.unwrap_or_default(), w.message.unwrap_or_default())
}

/// `(exitCode, reason, startedAt, finishedAt)` of a terminated state.
pub fn term(
    st: &Option<k8s_openapi::api::core::v1::ContainerState>,
) -> Option<(i32, String, i64, i64)> {
    let t = st.clone()?.terminated?;
    let s = t.started_at.map_or(-1, |x| secs(&x.0));
    Some((t.exit_code, t.reason.unwrap_or_default(), s, secs(&t.finished_at.unwrap().0)))
}

pub fn running_since(s: &ContainerStatus) -> Option<i64> {
    Some(secs(&s.state.clone()?.running?.started_at?.0))
}

pub fn cond_brief(c: &PodCondition) -> (String, String, String, i64) {
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
        secs(&c.last_transition_time.clone().unwrap().0),
    )
}
