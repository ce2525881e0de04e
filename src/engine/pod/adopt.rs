//! Taking over pods after an agent restart. The runtime knows what is on the node (sandbox,
//! newest instance of each container); the engine's own snapshot ([`PersistedPod`]) adds what
//! only it knew: restart counts of removed instances, back-offs, exits seen, probe results.
//! The rule: an instance found running is never restarted for the agent's sake.

use serde::{Deserialize, Serialize};

use super::*;
use crate::engine::backoff::Backoff;
use crate::engine::container::{exit_message, exit_reason};
use crate::engine::pod::verdict::Verdict;

/// A pod found on the node after an agent restart.
#[derive(Clone, Debug)]
pub struct AdoptedPod {
    /// The pod as it was started (from the store); its UID is the key.
    pub pod: Pod,
    pub sandbox_ready: bool,
    /// The newest instance of each container that has one, as the runtime has it.
    pub containers: Vec<AdoptedContainer>,
    /// The last [`crate::engine::Engine::persist`] snapshot of this pod, if one was stored.
    pub saved: Option<PersistedPod>,
}

/// One container instance found on the node; `exit` is `None` while it runs.
#[derive(Clone, Debug)]
pub struct AdoptedContainer {
    pub c: ContainerRef,
    pub started_at: Timestamp,
    pub exit: Option<Exit>,
    /// The instance before it (start, exit), if the runtime still has it: the container's
    /// last state when no snapshot tells it (the state database was lost).
    pub previous: Option<(Timestamp, Exit)>,
}

/// How an instance ended (as in [`Observed::ContainerExited`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// No one saw it end (see `runtime::ExitInfo::lost`).
    pub lost: bool,
    pub at: Timestamp,
    pub message: Option<String>,
}

/// What the engine knows about a pod that the runtime cannot tell; opaque, for the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedPod {
    uid: String,
    sandbox: u64,
    start_time: Timestamp,
    initialized: bool,
    conditions: BTreeMap<String, (String, Timestamp)>,
    containers: Vec<PersistedContainer>,
    /// Rejected or evicted, with the status reason and message: stays so after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verdict: Option<(Verdict, String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PersistedContainer {
    name: String,
    instances: u32,
    last: Option<Terminated>,
    prev: Option<Terminated>,
    crash: Backoff,
    started_once: bool,
    started: bool,
    ready: bool,
}

impl PersistedPod {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The sandbox tag its running instances carry (see [`ContainerRef::sandbox`]).
    pub fn sandbox(&self) -> u64 {
        self.sandbox
    }
}

/// An exit the runtime recorded, as the container's terminated state.
fn terminated(started_at: Timestamp, e: &Exit) -> Terminated {
    let exit_code = e.signal.map_or(e.exit_code, |s| 128 + s);
    Terminated {
        exit_code,
        signal: e.signal,
        reason: exit_reason(e.oom_killed, e.lost, exit_code).into(),
        message: exit_message(e.lost, &e.message),
        started_at: Some(started_at),
        finished_at: e.at,
        restart: None,
    }
}

impl PodState {
    pub fn persist(&self) -> PersistedPod {
        PersistedPod {
            uid: self.uid.clone(),
            sandbox: self.gen,
            start_time: self.start_time,
            initialized: self.initialized,
            conditions: self.cond_since.clone(),
            containers: self
                .cs
                .iter()
                .map(|c| PersistedContainer {
                    name: c.spec.name.clone(),
                    instances: c.instances,
                    last: c.last.clone(),
                    prev: c.prev.clone(),
                    crash: c.crash.clone(),
                    started_once: c.started_once,
                    started: c.started(),
                    ready: c.ready(),
                })
                .collect(),
            verdict: self.persisted_verdict(),
        }
    }

    /// The pod as found; the next sync carries on from there (a dead sandbox is replaced, a
    /// pod no longer wanted is stopped gracefully, exited containers go by the restart policy).
    pub fn adopt(a: AdoptedPod, now: Timestamp, serial: &mut u64) -> Self {
        let stamped = a.pod.metadata.creation_timestamp.is_some();
        let mut p = Self::new(a.pod, now);
        let saved = a.saved.filter(|s| s.uid == p.uid);
        let found = |name: &str| a.containers.iter().find(|f| f.c.name == name);
        let tags = a.containers.iter().map(|f| f.c.sandbox);
        p.gen = tags.chain(saved.as_ref().map(|s| s.sandbox)).max().unwrap_or(0);
        *serial = (*serial).max(p.gen);
        p.start_time = saved
            .as_ref()
            .map(|s| s.start_time)
            .or(a.containers.iter().map(|f| f.started_at).min())
            .unwrap_or(now);
        if !stamped {
            p.pod.metadata.creation_timestamp = Some(time(p.start_time));
        }
        if let Some(s) = &saved {
            p.initialized = s.initialized;
            p.cond_since = s.conditions.clone();
            if let Some((v, reason, message)) = s.verdict.clone() {
                p.restore_verdict(v, reason, message);
            }
        }
        for i in 0..p.cs.len() {
            let name = p.cs[i].spec.name.clone();
            let kept = saved.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name));
            let c = &mut p.cs[i];
            if let Some(k) = kept {
                (c.instances, c.last, c.prev) = (k.instances, k.last.clone(), k.prev.clone());
                (c.crash, c.started_once) = (k.crash.clone(), k.started_once);
                c.restart_count = k.instances.saturating_sub(1) as i32;
            }
            let Some(f) = found(&name) else { continue };
            if let (None, Some((started_at, e))) = (kept, &f.previous) {
                c.last = Some(terminated(*started_at, e));
            }
            c.attempt = f.c.attempt;
            c.instances = c.instances.max(f.c.attempt + 1);
            c.restart_count = f.c.attempt as i32;
            match &f.exit {
                None => {
                    c.run = Run::Running { started_at: f.started_at };
                    let was = kept.map_or((false, false), |k| (k.started, k.ready));
                    c.probes = Probes::adopted(&c.spec, f.started_at, now, was);
                }
                // Already recorded before the agent went down.
                Some(e) if c.last.as_ref().is_some_and(|l| l.finished_at == e.at) => {}
                Some(e) => c.record_exit(terminated(f.started_at, e)),
            }
        }
        // hasAnyRegularContainerCreated: init containers are done once an app container exists.
        p.initialized |= p.cs[p.n_init..].iter().any(|c| c.instances > 0);
        p.sandbox = match (a.sandbox_ready, !a.containers.is_empty()) {
            (true, _) => Sandbox::Ready,
            (false, true) => Sandbox::Died,
            (false, false) => Sandbox::None,
        };
        p.refresh(now);
        p
    }
}
