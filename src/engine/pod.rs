//! One pod (one UID): the kubelet's `syncPod` / `computePodActions` as a state machine.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};

use super::backoff::{add, go_duration, since};
use super::config;
use super::container::{time, Ctr, Kind, Run, Stop, StopStage, Terminated};
use super::probe::Probes;
use super::status::{self, is_sidecar, FAILED, SUCCEEDED};
use super::{
    Action, ContainerRef, EventType, HookKind, Observed, ProbeKind, Signal, StartFailure, Timestamp,
};
use crate::manifest::{DesiredState, ObjectKey};

/// The kubelet's pod worker retries a failed sync after this.
const RETRY: Duration = Duration::from_secs(10);
/// `minimumGracePeriodInSeconds`: TERM always gets at least this long before KILL.
const MIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sandbox {
    None,
    Creating,
    Ready,
    Failed { retry_at: Timestamp },
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
    /// Init containers (in order) then app containers.
    cs: Vec<Ctr>,
    n_init: usize,
    terminal: Option<Terminal>,
    stopping: Option<Stopping>,
    initialized: bool,
    noted_mount: Option<String>,
    cond_since: BTreeMap<String, (String, Timestamp)>,
}

impl PodState {
    pub fn new(mut pod: Pod, now: Timestamp) -> Self {
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
        let mut p = Self {
            pod,
            key,
            uid,
            desired: true,
            status: PodStatus::default(),
            wake: None,
            start_time: now,
            sandbox: Sandbox::None,
            cs,
            n_init,
            terminal: None,
            stopping: None,
            initialized: false,
            noted_mount: None,
            cond_since: BTreeMap::new(),
        };
        p.refresh(now);
        p
    }

    fn spec(&self) -> &PodSpec {
        self.pod.spec.as_ref().expect("set in new")
    }

    fn policy(&self) -> &str {
        self.spec().restart_policy.as_deref().unwrap_or("Always")
    }

    fn grace(&self) -> Duration {
        let s = self.spec().termination_grace_period_seconds.unwrap_or(30);
        Duration::from_secs(s.max(0) as u64)
    }

    /// `format.Pod`: `name_namespace(uid)`.
    fn pod_fmt(&self) -> String {
        format!("{}_{}({})", self.key.name, self.key.namespace, self.uid)
    }

    fn cref(&self, i: usize) -> ContainerRef {
        ContainerRef {
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
        self.cs.iter().position(|x| x.spec.name == c.name && x.attempt == c.attempt)
    }

    pub fn observe(&mut self, fact: Observed, now: Timestamp, out: &mut Vec<Action>) {
        use EventType::{Normal, Warning};
        let i = match &fact {
            Observed::SandboxReady { .. } => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Ready;
                }
                return;
            }
            Observed::SandboxFailed { message, .. } => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Failed { retry_at: add(now, RETRY) };
                    let msg = format!("Failed to create pod sandbox: {message}");
                    self.event(out, None, Warning, "FailedCreatePodSandBox", msg);
                }
                return;
            }
            Observed::SandboxRemoved { .. } => {
                if self.sandbox == Sandbox::Removing {
                    self.sandbox = Sandbox::Removed;
                }
                return;
            }
            Observed::ImagePulled { c }
            | Observed::ImagePullFailed { c, .. }
            | Observed::ContainerStarted { c, .. }
            | Observed::StartFailed { c, .. }
            | Observed::ContainerExited { c, .. }
            | Observed::ProbeResult { c, .. }
            | Observed::HookResult { c, .. } => match self.find(c) {
                Some(i) => i,
                None => return,
            },
        };
        let image = self.cs[i].image().to_owned();
        let name = self.cs[i].spec.name.clone();
        match fact {
            Observed::ImagePulled { .. } => {
                if matches!(self.cs[i].run, Run::Pulling) {
                    self.cs[i].run = Run::PullDone;
                    self.event(
                        out,
                        Some(i),
                        Normal,
                        "Pulled",
                        format!("Successfully pulled image {image:?}"),
                    );
                }
            }
            Observed::ImagePullFailed { message, .. } => {
                if matches!(self.cs[i].run, Run::Pulling) {
                    let c = &mut self.cs[i];
                    c.run = Run::Idle;
                    c.pull.next(now, now);
                    c.reason = Some(("ErrImagePull".into(), message.clone()));
                    let msg = format!("Failed to pull image {image:?}: {message}");
                    self.event(out, Some(i), Warning, "Failed", msg);
                    self.event(out, Some(i), Warning, "Failed", "Error: ErrImagePull".into());
                }
            }
            Observed::ContainerStarted { at, .. } => {
                if !matches!(self.cs[i].run, Run::Creating) {
                    return;
                }
                let c = &mut self.cs[i];
                c.instances = c.attempt + 1;
                c.restart_count = c.attempt as i32;
                c.reason = None;
                c.pull = Default::default();
                self.event(out, Some(i), Normal, "Created", format!("Created container: {name}"));
                self.event(out, Some(i), Normal, "Started", format!("Started container {name}"));
                let hook = self.cs[i].spec.lifecycle.as_ref().and_then(|l| l.post_start.clone());
                match hook {
                    Some(h) if self.stopping.is_none() => {
                        self.cs[i].run = Run::PostStart { started_at: at };
                        let c = self.cref(i);
                        out.push(Action::RunHook {
                            c,
                            kind: HookKind::PostStart,
                            handler: Box::new(h),
                            timeout: None,
                        });
                    }
                    _ => self.up(i, at),
                }
            }
            Observed::StartFailed { reason, message, .. } => {
                if !matches!(self.cs[i].run, Run::Creating) {
                    return;
                }
                let c = &mut self.cs[i];
                match reason {
                    StartFailure::Create => {
                        c.run = Run::Idle;
                        c.retry_at = Some(add(now, RETRY));
                        c.reason = Some(("CreateContainerError".into(), message.clone()));
                    }
                    StartFailure::Run => {
                        // The instance exists but never ran, as with CRI runtimes: exit code 128.
                        c.instances = c.attempt + 1;
                        c.restart_count = c.attempt as i32;
                        c.record_exit(Terminated {
                            exit_code: 128,
                            signal: None,
                            reason: "StartError".into(),
                            message: Some(message.clone()),
                            started_at: None,
                            finished_at: now,
                        });
                        c.reason = Some(("RunContainerError".into(), message.clone()));
                    }
                }
                self.event(out, Some(i), Warning, "Failed", format!("Error: {message}"));
            }
            Observed::ContainerExited { exit_code, signal, oom_killed, at, message, .. } => {
                let c = &mut self.cs[i];
                let started_at = match c.run {
                    Run::PostStart { started_at }
                    | Run::Running { started_at }
                    | Run::Stopping { started_at, .. } => started_at,
                    Run::Creating => {
                        c.instances = c.attempt + 1;
                        c.restart_count = c.attempt as i32;
                        at
                    }
                    _ => return,
                };
                let exit_code = signal.map_or(exit_code, |s| 128 + s);
                let reason = match (oom_killed, exit_code) {
                    (true, _) => "OOMKilled",
                    (false, 0) => "Completed",
                    _ => "Error",
                };
                // Keep PostStartHookError visible: it explains this exit.
                if c.reason.as_ref().is_none_or(|(r, _)| r != "PostStartHookError") {
                    c.reason = None;
                }
                c.record_exit(Terminated {
                    exit_code,
                    signal,
                    reason: reason.into(),
                    message,
                    started_at: Some(started_at),
                    finished_at: at,
                });
            }
            Observed::ProbeResult { kind, seq, result, .. } => {
                if !matches!(self.cs[i].run, Run::Running { .. }) {
                    return;
                }
                let Some(p) = self.cs[i].probes.get_mut(kind) else { return };
                if p.record(seq, result.is_ok()).is_none() {
                    return;
                }
                if let Err(m) = result {
                    let what = match kind {
                        ProbeKind::Startup => "Startup",
                        ProbeKind::Liveness => "Liveness",
                        ProbeKind::Readiness => "Readiness",
                    };
                    self.event(
                        out,
                        Some(i),
                        Warning,
                        "Unhealthy",
                        format!("{what} probe failed: {m}"),
                    );
                }
            }
            Observed::HookResult { kind: HookKind::PostStart, result, .. } => {
                let Run::PostStart { started_at } = self.cs[i].run else { return };
                match result {
                    Ok(()) => self.up(i, started_at),
                    Err(m) => {
                        self.event(out, Some(i), Warning, "FailedPostStartHook", m.clone());
                        self.cs[i].reason = Some(("PostStartHookError".into(), m));
                        let deadline = add(now, self.grace());
                        self.begin_stop(i, deadline, Some("FailedPostStartHook".into()), now, out);
                    }
                }
            }
            Observed::HookResult { kind: HookKind::PreStop, result, .. } => {
                let Run::Stopping { stop: Stop { stage: StopStage::PreStop, .. }, .. } =
                    self.cs[i].run
                else {
                    return;
                };
                if let Err(m) = result {
                    self.event(out, Some(i), Warning, "FailedPreStopHook", m);
                }
                self.term(i, now, out);
            }
            Observed::SandboxReady { .. }
            | Observed::SandboxFailed { .. }
            | Observed::SandboxRemoved { .. } => {}
        }
    }

    /// The instance is up (postStart done): probes begin.
    fn up(&mut self, i: usize, started_at: Timestamp) {
        let c = &mut self.cs[i];
        c.run = Run::Running { started_at };
        c.probes = Probes::new(&c.spec, started_at);
    }

    /// killContainer: Killing event, preStop (bounded by the grace period), then TERM.
    fn begin_stop(
        &mut self,
        i: usize,
        deadline: Timestamp,
        message: Option<String>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let (started_at, was_up) = match self.cs[i].run {
            Run::PostStart { started_at } => (started_at, false),
            Run::Running { started_at } => (started_at, true),
            _ => return,
        };
        let msg = message.unwrap_or_else(|| format!("Stopping container {}", self.cs[i].spec.name));
        self.event(out, Some(i), EventType::Normal, "Killing", msg);
        let pre_stop = self.cs[i].spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let stop = Stop { deadline, was_up, stage: StopStage::Killed };
        self.cs[i].run = Run::Stopping { started_at, stop };
        match pre_stop {
            Some(h) if deadline > now => {
                let (c, timeout) = (self.cref(i), Some(since(deadline, now)));
                out.push(Action::RunHook {
                    c,
                    kind: HookKind::PreStop,
                    handler: Box::new(h),
                    timeout,
                });
                self.set_stage(i, StopStage::PreStop);
            }
            _ => self.term(i, now, out),
        }
    }

    fn set_stage(&mut self, i: usize, stage: StopStage) {
        if let Run::Stopping { stop, .. } = &mut self.cs[i].run {
            stop.stage = stage;
        }
    }

    fn term(&mut self, i: usize, now: Timestamp, out: &mut Vec<Action>) {
        let Run::Stopping { stop, .. } = self.cs[i].run else { return };
        out.push(Action::KillContainer { c: self.cref(i), signal: Signal::Term });
        let kill_at = stop.deadline.max(add(now, MIN_GRACE));
        self.set_stage(i, StopStage::Term { kill_at });
    }

    /// Advance preStop timeouts and TERM→KILL escalations.
    fn drive_stops(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        for i in 0..self.cs.len() {
            let Run::Stopping { stop, .. } = self.cs[i].run else { continue };
            match stop.stage {
                StopStage::PreStop if now >= stop.deadline => self.term(i, now, out),
                StopStage::PreStop => self.wake_at(stop.deadline, now),
                StopStage::Term { kill_at } if now >= kill_at => {
                    out.push(Action::KillContainer { c: self.cref(i), signal: Signal::Kill });
                    self.set_stage(i, StopStage::Killed);
                }
                StopStage::Term { .. } | StopStage::Killed => {}
            }
            if let Run::Stopping { stop: Stop { stage: StopStage::Term { kill_at }, .. }, .. } =
                self.cs[i].run
            {
                self.wake_at(kill_at, now);
            }
        }
    }

    /// One level-triggered pass. `held`: an older pod with the same name is still on its way
    /// out (the kubelet starts a static pod only after its predecessor terminated).
    pub fn sync(
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

    fn wind_down(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let deadline = self.stopping.expect("winding down").deadline;
        for c in &mut self.cs {
            if matches!(c.run, Run::Pulling | Run::PullDone) {
                c.run = Run::Idle;
            }
            c.reason = None;
        }
        // Regular containers together, then sidecars one by one in reverse order.
        let mut busy = false;
        for i in 0..self.cs.len() {
            if self.cs[i].kind != Kind::Sidecar && self.cs[i].active() {
                self.begin_stop(i, deadline, None, now, out);
                busy = true;
            }
        }
        if !busy {
            for i in (0..self.n_init).rev() {
                if self.cs[i].kind == Kind::Sidecar && self.cs[i].active() {
                    self.begin_stop(i, deadline, None, now, out);
                    busy = true;
                    break;
                }
            }
        }
        if busy {
            return;
        }
        match self.sandbox {
            Sandbox::Ready | Sandbox::Failed { .. } => {
                out.push(Action::RemoveSandbox { pod_uid: self.uid.clone() });
                self.sandbox = Sandbox::Removing;
            }
            Sandbox::None => self.sandbox = Sandbox::Removed,
            Sandbox::Creating | Sandbox::Removing | Sandbox::Removed => {}
        }
    }

    fn run(&mut self, d: &DesiredState, now: Timestamp, seq: &mut u64, out: &mut Vec<Action>) {
        match self.sandbox {
            Sandbox::Ready => {}
            Sandbox::Failed { retry_at } if now < retry_at => return self.wake_at(retry_at, now),
            Sandbox::None | Sandbox::Failed { .. } => {
                // Volumes are set up before the sandbox: a missing source holds the pod here.
                if let Err(m) = config::check_volumes(&self.pod, d) {
                    if self.noted_mount.as_ref() != Some(&m) {
                        self.event(out, None, EventType::Warning, "FailedMount", m.clone());
                        self.noted_mount = Some(m);
                    }
                    return;
                }
                self.noted_mount = None;
                out.push(Action::CreateSandbox { pod: Box::new(self.pod.clone()) });
                self.sandbox = Sandbox::Creating;
                return;
            }
            Sandbox::Creating | Sandbox::Removing | Sandbox::Removed => return,
        }
        for i in 0..self.cs.len() {
            if !matches!(self.cs[i].run, Run::Running { .. }) {
                continue;
            }
            if let Some(kind) = [ProbeKind::Startup, ProbeKind::Liveness]
                .into_iter()
                .find(|k| self.cs[i].probes.failed(*k))
            {
                self.probe_kill(i, kind, now, out);
                continue;
            }
            let cref = self.cref(i);
            let mut wakes = vec![];
            for p in self.cs[i].probes.active() {
                if let Some(seq) = p.due(now, seq) {
                    let (probe, timeout) = (Box::new(p.spec.clone()), p.timeout());
                    out.push(Action::RunProbe {
                        c: cref.clone(),
                        kind: p.kind,
                        seq,
                        probe,
                        timeout,
                    });
                }
                wakes.extend(p.wake());
            }
            for w in wakes {
                self.wake_at(w, now);
            }
        }
        for i in 0..self.cs.len() {
            if matches!(self.cs[i].run, Run::PullDone) {
                self.cs[i].run = Run::Creating;
                let c = self.cref(i);
                if c.attempt >= 2 {
                    let old = ContainerRef { attempt: c.attempt - 2, ..c.clone() };
                    out.push(Action::RemoveContainer { c: old });
                }
                out.push(Action::StartContainer { c, spec: Box::new(self.cs[i].spec.clone()) });
            }
        }
        let mut busy = self.cs.iter().any(Ctr::in_pipeline);
        for i in self.candidates() {
            busy |= self.try_start(i, d, busy, now, out);
        }
    }

    fn probe_kill(&mut self, i: usize, kind: ProbeKind, now: Timestamp, out: &mut Vec<Action>) {
        let c = &self.cs[i];
        let (what, probe) = match kind {
            ProbeKind::Startup => ("startup", &c.spec.startup_probe),
            _ => ("liveness", &c.spec.liveness_probe),
        };
        // A probe-level terminationGracePeriodSeconds overrides the pod's.
        let grace = probe
            .as_ref()
            .and_then(|p| p.termination_grace_period_seconds)
            .map_or(self.grace(), |s| Duration::from_secs(s.max(0) as u64));
        let mut msg = format!("Container {} failed {what} probe", c.spec.name);
        if self.restarts_after_kill(c) {
            msg.push_str(", will be restarted");
        }
        self.begin_stop(i, add(now, grace), Some(msg), now, out);
    }

    /// Containers that want a start now, in the kubelet's order: init containers one at a
    /// time (sidecars only need to have started), then sidecar restarts and app containers.
    fn candidates(&mut self) -> Vec<usize> {
        let mut v = vec![];
        if !self.initialized {
            for i in 0..self.n_init {
                let c = &self.cs[i];
                match c.kind {
                    Kind::Sidecar if c.active() => {
                        if c.started() || c.started_once {
                            continue;
                        }
                        return v;
                    }
                    Kind::Sidecar => {
                        v.push(i);
                        if c.started_once {
                            continue;
                        }
                        return v;
                    }
                    _ if c.succeeded() => continue,
                    _ if c.active() || (c.last.is_some() && !self.should_restart(c)) => return v,
                    _ => return vec![i],
                }
            }
            self.initialized = true;
        }
        for (i, c) in self.cs.iter().enumerate() {
            let wanted = match c.kind {
                Kind::Init => false,
                Kind::Sidecar => !c.active(),
                Kind::App => !c.active() && (c.last.is_none() || self.should_restart(c)),
            };
            if wanted {
                v.push(i);
            }
        }
        v
    }

    /// Back-off, config and image gates, then the start pipeline. Returns whether it began.
    fn try_start(
        &mut self,
        i: usize,
        d: &DesiredState,
        busy: bool,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> bool {
        let (name, image) = (self.cs[i].spec.name.clone(), self.cs[i].image().to_owned());
        if let Some(r) = self.cs[i].retry_at.filter(|r| now < *r) {
            self.wake_at(r, now);
            return false;
        }
        let last_exit = self.cs[i].last.as_ref().map(|t| t.finished_at);
        if let Some(until) = last_exit.and_then(|f| self.cs[i].crash.until_since(f, now)) {
            let delay = go_duration(self.cs[i].crash.current());
            let msg = format!(
                "back-off {delay} restarting failed container={name} pod={}",
                self.pod_fmt()
            );
            let event =
                format!("Back-off restarting failed container {name} in pod {}", self.pod_fmt());
            self.wait(i, "CrashLoopBackOff", msg, ("BackOff", event), out);
            self.wake_at(until, now);
            return false;
        }
        if busy {
            return false;
        }
        let ns = self.key.namespace.clone();
        if let Err(m) = config::check_env(&self.cs[i].spec, &ns, d) {
            self.wait(
                i,
                "CreateContainerConfigError",
                m.clone(),
                ("Failed", format!("Error: {m}")),
                out,
            );
            return false;
        }
        if let Some(until) = self.cs[i].pull.until(now) {
            // The kubelet's next sync after a failed pull comes a pod-worker back-off later,
            // so ErrImagePull shows that long before ImagePullBackOff does.
            let shown = self.cs[i].pull.last_update().map(|t| add(t, RETRY)).filter(|s| now < *s);
            if let Some(shown) = shown {
                self.wake_at(shown.min(until), now);
                return false;
            }
            let msg = format!("Back-off pulling image {image:?}");
            self.wait(i, "ImagePullBackOff", msg.clone(), ("BackOff", msg), out);
            self.wake_at(until, now);
            return false;
        }
        let c = &mut self.cs[i];
        if let Some(f) = last_exit {
            c.crash.next(f, now);
        }
        c.attempt = c.instances;
        c.run = Run::Pulling;
        c.retry_at = None;
        c.noted = None;
        let policy = c.spec.image_pull_policy.clone().unwrap_or_else(|| {
            let latest = !image.contains(':') || image.ends_with(":latest");
            if latest { "Always" } else { "IfNotPresent" }.into()
        });
        self.event(out, Some(i), EventType::Normal, "Pulling", format!("Pulling image {image:?}"));
        out.push(Action::PullImage { c: self.cref(i), image, policy });
        true
    }

    /// Record why container `i` waits, with one warning event per distinct wait.
    fn wait(
        &mut self,
        i: usize,
        reason: &str,
        msg: String,
        event: (&str, String),
        out: &mut Vec<Action>,
    ) {
        let key = format!("{reason}: {msg}");
        self.cs[i].reason = Some((reason.into(), msg));
        if self.cs[i].noted.as_ref() != Some(&key) {
            self.cs[i].noted = Some(key);
            self.event(out, Some(i), EventType::Warning, event.0, event.1);
        }
    }

    /// Rebuild the API status; a terminal phase, once reached, sticks.
    pub fn refresh(&mut self, now: Timestamp) {
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
        self.status = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            init_container_statuses: (!init.is_empty()).then(|| init.to_vec()),
            container_statuses: Some(app.to_vec()),
            start_time: Some(time(self.start_time)),
            reason: terminal.and_then(|t| t.reason.clone()),
            message: terminal.and_then(|t| t.message.clone()),
            ..Default::default()
        };
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
