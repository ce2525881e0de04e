//! Property test: random facts (plausible answers, stale and garbage ones), clock jumps,
//! deletions, edits and ConfigMap churn. The engine never panics, restart counts never go
//! down, a Never pod never restarts a container, nothing is requested twice while in flight,
//! and `next_wakeup` is always in the future. A twin engine that syncs every pod in every
//! pass answers exactly like the real one, which syncs only pods with news.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::sim::{config_map, pod, t, PULL};
use k8s_openapi::api::core::v1::Pod;

use crate::engine::{
    Action, AdoptedContainer, AdoptedPod, ContainerRef, Engine, HookKind, ImageFailure, Observed,
    ProbeKind, StartFailure,
};
use crate::manifest::{DesiredPod, DesiredState, ObjectKey};

const POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];

fn template(which: u8, policy: &str, grace: u8) -> String {
    let body = match which % 3 {
        0 => {
            r#"
  containers:
  - name: app
    image: "nginx:1.27"
    lifecycle: {postStart: {exec: {command: [a]}}, preStop: {exec: {command: [b]}}}
    startupProbe: {exec: {command: [s]}, periodSeconds: 3, failureThreshold: 2}
    livenessProbe: {exec: {command: [l]}, periodSeconds: 5, failureThreshold: 2}
    readinessProbe: {exec: {command: [r]}, periodSeconds: 4, successThreshold: 2}
  - name: second
    image: "busybox:1.36"
    env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: x}}}]"#
        }
        1 => {
            r#"
  activeDeadlineSeconds: 500
  initContainers:
  - {name: init, image: "busybox:1.36"}
  - name: side
    image: "envoy:1.30"
    restartPolicy: Always
    startupProbe: {exec: {command: [s]}, periodSeconds: 2}
    readinessProbe: {exec: {command: [r]}}
  containers:
  - {name: app, image: "nginx:1.27", lifecycle: {preStop: {exec: {command: [b]}}}}"#
        }
        _ => {
            r#"
  volumes: [{name: v, configMap: {name: cfg}}]
  containers:
  - {name: app, image: "nginx:1.27", livenessProbe: {exec: {command: [l]}, failureThreshold: 1}}"#
        }
    };
    format!("metadata: {{name: web}}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: {grace}{body}\n")
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u16),
    /// Answer the n-th outstanding request; the byte picks the outcome.
    Answer(u8, u8),
    /// A running instance exits on its own.
    Exit(u8, i32, bool),
    /// Something stale or made up.
    Garbage(u8, u8),
    /// The current pod's sandbox dies.
    SandboxDies,
    /// The agent restarts: a new engine adopts what runs, with the old one's snapshots.
    AgentRestart,
    Delete,
    Apply,
    Edit,
    ToggleConfigMap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u16..700).prop_map(Op::Advance),
        6 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Answer(a, b)),
        2 => (any::<u8>(), prop_oneof![Just(0), Just(1), Just(137)], any::<bool>()).prop_map(|(a, b, c)| Op::Exit(a, b, c)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Garbage(a, b)),
        1 => Just(Op::SandboxDies),
        1 => Just(Op::AgentRestart),
        1 => Just(Op::Delete),
        1 => Just(Op::Apply),
        1 => Just(Op::Edit),
        1 => Just(Op::ToggleConfigMap),
    ]
}

struct World {
    engine: Engine,
    /// Always syncs every pod: the reference for the real engine's dirty-only passes.
    twin: Engine,
    /// Mutated through `Arc::make_mut`, so the engines see a new `Arc` exactly on changes.
    desired: Arc<DesiredState>,
    pod_yaml: String,
    edits: u32,
    now: i64,
    pending: Vec<Action>,
    alive: Vec<ContainerRef>,
    restart_counts: BTreeMap<(String, String), i32>,
    never: bool,
    sidecars: HashSet<String>,
    reborn: HashSet<String>,
    /// Requests of a pod incarnation that is gone, issued by the current engine; answering
    /// them must change nothing.
    stale: Vec<Action>,
}

fn uid_of(a: &Action) -> Option<&str> {
    match a {
        Action::PullImage { c, .. }
        | Action::StartContainer { c, .. }
        | Action::RunProbe { c, .. }
        | Action::RunHook { c, .. }
        | Action::KillContainer { c, .. } => Some(&c.pod_uid),
        _ => None,
    }
}

impl World {
    fn apply(&mut self) {
        let mut p = pod(&self.pod_yaml);
        p.metadata.uid = Some(format!("uid-{}", self.edits));
        let dp = DesiredPod { pod: p.into(), source: "/p.yaml".into() };
        Arc::make_mut(&mut self.desired).pods.insert(dp.key(), dp);
    }

    fn reconcile(&mut self) {
        let now = t(self.now);
        let actions = self.engine.reconcile(&self.desired, now);
        assert_eq!(actions, self.twin.reconcile(&self.desired, now), "twin disagrees at {now}");
        assert!(self.engine.pods().eq(self.twin.pods()), "twin's pods differ at {now}");
        // A pod not synced keeps its wake-up, which a sync while another container is busy
        // starting does not repeat: it may wake the engine early (for nothing), never late.
        let (early, reference) = (self.engine.next_wakeup(), self.twin.next_wakeup());
        assert!(reference.is_none_or(|r| early.is_some_and(|e| e <= r)), "woke late at {now}");
        for a in actions {
            if let Action::CreateSandbox { pod } = &a {
                // A new incarnation of this UID (or a sandbox retry, with nothing in flight):
                // older requests may still be answered, but are not this pod's.
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let (old, keep) =
                    self.pending.drain(..).partition(|p| uid_of(p) == Some(uid.as_str()));
                self.pending = keep;
                self.stale.extend(old);
            }
            match &a {
                Action::Event { .. } | Action::RemoveContainer { .. } => continue,
                Action::StartContainer { c, .. } => {
                    assert!(
                        !self
                            .pending
                            .iter()
                            .any(|p| matches!(p, Action::StartContainer { c: o, .. } if o == c)),
                        "{c} started twice while in flight"
                    );
                    if self.never && !self.sidecars.contains(&c.name) {
                        assert_eq!(c.attempt, 0, "a Never pod restarted {c}");
                    }
                }
                Action::RunProbe { c, kind, .. } => {
                    assert!(
                        !self.pending.iter().any(|p| matches!(p, Action::RunProbe { c: o, kind: k, .. } if o == c && k == kind)),
                        "two {kind:?} probes in flight for {c}"
                    );
                }
                _ => {}
            }
            self.pending.push(a);
        }
        if let Some(w) = self.engine.next_wakeup() {
            assert!(w > now, "next_wakeup {w} not after now {now}");
        }
        for p in self.engine.pods() {
            let uid = p.metadata.uid.clone().unwrap();
            let s = p.status.unwrap();
            for cs in s
                .init_container_statuses
                .into_iter()
                .flatten()
                .chain(s.container_statuses.into_iter().flatten())
            {
                let prev =
                    self.restart_counts.insert((uid.clone(), cs.name.clone()), cs.restart_count);
                if prev.unwrap_or(0) > cs.restart_count {
                    assert!(self.reborn.remove(&uid), "restartCount of {} went down", cs.name);
                    self.restart_counts.retain(|(u, _), _| *u != uid);
                    self.restart_counts.insert((uid.clone(), cs.name.clone()), cs.restart_count);
                }
                if self.never && !self.sidecars.contains(&cs.name) {
                    assert_eq!(cs.restart_count, 0, "a Never pod restarted {}", cs.name);
                }
            }
        }
    }

    fn observe(&mut self, fact: Observed) {
        let changed = self.engine.observe(fact.clone(), t(self.now));
        assert_eq!(changed, self.twin.observe(fact, t(self.now)));
    }

    fn step(&mut self, op: Op) {
        let now = t(self.now);
        match op {
            Op::Advance(s) => {
                // Jump at most to the next wake-up, as a caller sleeping on a timer would.
                let target = self.now + i64::from(s);
                let wake = self.engine.next_wakeup().map(|w| w.as_second());
                self.now = wake.map_or(target, |w| w.min(target)).max(self.now);
            }
            Op::Answer(n, how) if !self.pending.is_empty() || !self.stale.is_empty() => {
                let a = if how % 5 == 4 && !self.stale.is_empty() {
                    self.stale.remove(n as usize % self.stale.len())
                } else if self.pending.is_empty() {
                    return self.reconcile();
                } else {
                    self.pending.remove(n as usize % self.pending.len())
                };
                let fail = how % 4 == 0;
                let fact = match a {
                    Action::CreateSandbox { pod } => {
                        let pod_uid = pod.metadata.uid.unwrap();
                        if fail {
                            Observed::SandboxFailed { pod_uid, message: "x".into() }
                        } else {
                            Observed::SandboxReady { pod_uid }
                        }
                    }
                    Action::PullImage { c, .. } if fail => {
                        let reason =
                            if how % 8 == 0 { ImageFailure::Pull } else { ImageFailure::NeverPull };
                        Observed::ImagePullFailed { c, reason, message: "x".into() }
                    }
                    Action::PullImage { c, .. } if how % 2 == 0 => {
                        Observed::ImagePulled { c, pull: None }
                    }
                    Action::PullImage { c, .. } => {
                        self.observe(Observed::ImagePulling { c: c.clone() });
                        Observed::ImagePulled { c, pull: Some(PULL) }
                    }
                    Action::StartContainer { c, .. } => match how % 8 {
                        0 => Observed::StartFailed {
                            c,
                            reason: StartFailure::Create,
                            message: "x".into(),
                        },
                        2 => Observed::StartFailed {
                            c,
                            reason: StartFailure::Config,
                            message: "x".into(),
                        },
                        4 => Observed::StartFailed {
                            c,
                            reason: StartFailure::Run,
                            message: "x".into(),
                        },
                        _ => {
                            self.alive.push(c.clone());
                            Observed::ContainerStarted { c, at: now }
                        }
                    },
                    Action::RunProbe { c, kind, seq, .. } => Observed::ProbeResult {
                        c,
                        kind,
                        seq,
                        result: if fail { Err("x".into()) } else { Ok(None) },
                    },
                    Action::RunHook { c, kind, .. } => Observed::HookResult {
                        c,
                        kind,
                        result: if fail { Err("x".into()) } else { Ok(()) },
                    },
                    Action::KillContainer { c, .. } => {
                        match self.alive.iter().position(|a| *a == c) {
                            Some(i) => {
                                self.alive.remove(i);
                                Observed::ContainerExited {
                                    c,
                                    exit_code: 0,
                                    signal: Some(15),
                                    oom_killed: false,
                                    lost: false,
                                    at: now,
                                    message: None,
                                }
                            }
                            None => return,
                        }
                    }
                    Action::RemoveSandbox { pod_uid } => Observed::SandboxRemoved { pod_uid },
                    Action::Event { .. }
                    | Action::RemoveContainer { .. }
                    | Action::UpdateVolumes { .. }
                    | Action::RemoveLogs { .. } => return,
                };
                self.observe(fact);
            }
            Op::Answer(..) => {}
            Op::Exit(n, code, oom) if !self.alive.is_empty() => {
                let c = self.alive.remove(n as usize % self.alive.len());
                self.observe(Observed::ContainerExited {
                    c,
                    exit_code: code,
                    signal: None,
                    oom_killed: oom,
                    lost: false,
                    at: now,
                    message: None,
                });
            }
            Op::Exit(..) => {}
            Op::Garbage(a, b) => {
                let names = ["app", "second", "init", "side", "nope"];
                let c = ContainerRef {
                    pod_uid: format!("uid-{}", b % 3),
                    name: names[a as usize % names.len()].into(),
                    attempt: u32::from(b % 4),
                    sandbox: u64::from(a % 3),
                };
                let fact = match a % 6 {
                    0 => Observed::ContainerStarted { c, at: now },
                    1 => Observed::ContainerExited {
                        c,
                        exit_code: 1,
                        signal: None,
                        oom_killed: false,
                        lost: false,
                        at: now,
                        message: None,
                    },
                    2 => Observed::ProbeResult {
                        c,
                        kind: ProbeKind::Liveness,
                        seq: u64::from(b),
                        result: Err("x".into()),
                    },
                    3 => Observed::HookResult { c, kind: HookKind::PreStop, result: Ok(()) },
                    4 if b % 2 == 0 => Observed::ImagePulling { c },
                    4 => Observed::ImagePulled { c, pull: None },
                    _ => Observed::SandboxRemoved { pod_uid: c.pod_uid },
                };
                self.observe(fact);
            }
            Op::SandboxDies => {
                self.observe(Observed::SandboxDied { pod_uid: format!("uid-{}", self.edits) })
            }
            Op::AgentRestart => {
                let saved = self.engine.persist();
                let pods: Vec<AdoptedPod> = self
                    .engine
                    .pods()
                    .map(|p| {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        let ready =
                            p.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| {
                                c.type_ == "PodReadyToStartContainers" && c.status == "True"
                            });
                        AdoptedPod {
                            containers: self
                                .alive
                                .iter()
                                .filter(|c| c.pod_uid == uid)
                                .map(|c| AdoptedContainer {
                                    c: c.clone(),
                                    started_at: now,
                                    exit: None,
                                    previous: None,
                                })
                                .collect(),
                            saved: saved.iter().find(|s| s.uid() == uid).cloned(),
                            sandbox_ready: ready,
                            pod: Pod { status: None, ..p },
                        }
                    })
                    .collect();
                // The old agent's requests die with it: probes, hooks and runtime calls run
                // as its tasks and answer through its in-process channel, so no answer to
                // them ever reaches the new engine (which may reuse their probe `seq`s).
                self.pending.clear();
                self.stale.clear();
                self.engine = Engine::new();
                self.engine.adopt(pods.clone(), now);
                self.twin = Engine::always_full();
                self.twin.adopt(pods, now);
            }
            Op::Delete => {
                // A deleted pod restored with the same content (same UID) may start afresh.
                self.reborn.extend(self.desired.pods.values().map(|p| p.uid().to_owned()));
                Arc::make_mut(&mut self.desired).pods.clear();
            }
            Op::Apply => self.apply(),
            Op::Edit => {
                self.edits += 1;
                self.apply();
            }
            Op::ToggleConfigMap => {
                let k = ObjectKey::new("default", "cfg");
                let desired = Arc::make_mut(&mut self.desired);
                if desired.config_maps.remove(&k).is_none() {
                    desired.config_maps.insert(k, config_map("cfg", &["x"]));
                }
            }
        }
        self.reconcile();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_the_invariants(
        which in 0u8..3,
        policy in 0usize..3,
        grace in 0u8..40,
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let yaml = template(which, POLICIES[policy], grace);
        let mut w = World {
            engine: Engine::new(),
            twin: Engine::always_full(),
            desired: Arc::new(DesiredState::default()),
            sidecars: if which % 3 == 1 { HashSet::from(["side".to_string()]) } else { HashSet::new() },
            pod_yaml: yaml,
            edits: 0,
            now: 0,
            pending: vec![],
            alive: vec![],
            restart_counts: BTreeMap::new(),
            never: POLICIES[policy] == "Never",
            reborn: HashSet::new(),
            stale: vec![],
        };
        w.apply();
        w.reconcile();
        for op in ops {
            w.step(op);
        }
    }
}
