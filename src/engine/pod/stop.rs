//! Stopping containers: the kubelet's `killContainer` (preStop, TERM, KILL after the grace
//! period) and `killPodWithSyncResult` (apps together, then sidecars in reverse, then the sandbox).

use super::*;

impl PodState {
    /// killContainer: Killing event, preStop (bounded by the grace period), then TERM.
    pub(super) fn begin_stop(
        &mut self,
        i: usize,
        deadline: Timestamp,
        message: Option<String>,
        restart: Option<bool>,
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
        let stop = Stop { deadline, was_up, stage: StopStage::Killed, restart };
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

    pub(super) fn term(&mut self, i: usize, now: Timestamp, out: &mut Vec<Action>) {
        let Run::Stopping { stop, .. } = self.cs[i].run else { return };
        out.push(Action::KillContainer { c: self.cref(i), signal: KillSignal::Term });
        let kill_at = stop.deadline.max(add(now, MIN_GRACE));
        self.set_stage(i, StopStage::Term { kill_at });
    }

    /// Advance preStop timeouts and TERM→KILL escalations.
    pub(super) fn drive_stops(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        for i in 0..self.cs.len() {
            let Run::Stopping { stop, .. } = self.cs[i].run else { continue };
            match stop.stage {
                StopStage::PreStop if now >= stop.deadline => self.term(i, now, out),
                StopStage::PreStop => self.wake_at(stop.deadline, now),
                StopStage::Term { kill_at } if now >= kill_at => {
                    out.push(Action::KillContainer { c: self.cref(i), signal: KillSignal::Kill });
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

    pub(super) fn wind_down(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let deadline = self.stopping.expect("winding down").deadline;
        for c in &mut self.cs {
            c.reason = None;
            c.restart_now = false;
        }
        if self.stop_all(deadline, |_| None, now, out) {
            return;
        }
        match self.sandbox {
            Sandbox::Ready | Sandbox::Failed { .. } | Sandbox::Died | Sandbox::Draining { .. } => {
                out.push(Action::RemoveSandbox { pod_uid: self.uid.clone() });
                self.sandbox = Sandbox::Removing;
            }
            Sandbox::None => self.sandbox = Sandbox::Removed,
            Sandbox::Creating | Sandbox::Replacing | Sandbox::Removing | Sandbox::Removed => {}
        }
    }

    /// `killPodWithSyncResult`'s order: regular containers together, then sidecars one by one
    /// in reverse order. Abandons pending pulls. Returns whether a container is still active.
    fn stop_all(
        &mut self,
        deadline: Timestamp,
        restart: impl Fn(&Ctr) -> Option<bool>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> bool {
        for c in &mut self.cs {
            if matches!(c.run, Run::Pulling | Run::PullDone) {
                c.run = Run::Idle;
            }
        }
        let mut busy = false;
        for i in 0..self.cs.len() {
            if self.cs[i].kind != Kind::Sidecar && self.cs[i].active() {
                let r = restart(&self.cs[i]);
                self.begin_stop(i, deadline, None, r, now, out);
                busy = true;
            }
        }
        if !busy {
            for i in (0..self.n_init).rev() {
                if self.cs[i].kind == Kind::Sidecar && self.cs[i].active() {
                    let r = restart(&self.cs[i]);
                    self.begin_stop(i, deadline, None, r, now, out);
                    return true;
                }
            }
        }
        busy
    }

    /// `computePodActions` once the sandbox died (`PodSandboxChanged`): a Never pod whose
    /// containers have run is just killed; otherwise everything is killed and a new sandbox
    /// follows, where init containers run again from the first.
    pub(super) fn sandbox_changed(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let deadline = add(now, self.grace());
        // `len(podStatus.ContainerStatuses) != 0`: some instance exists or existed.
        let ran = self.cs.iter().any(|c| c.instances > 0 || c.active() && !c.pulling());
        if self.policy() == "Never" && ran {
            self.stopping = Some(Stopping { since: now, deadline, removed: false });
            return;
        }
        let msg = "Pod sandbox changed, it will be killed and re-created.";
        self.event(out, None, EventType::Normal, "SandboxChanged", msg.into());
        self.sandbox = Sandbox::Draining { deadline };
    }

    /// Kill what runs in the dead sandbox, then remove it. Without init containers the kubelet
    /// restarts the app containers in the same sync (all but OnFailure successes, which are not
    /// running); with them, the exit codes decide later.
    pub(super) fn drain(&mut self, deadline: Timestamp, now: Timestamp, out: &mut Vec<Action>) {
        let decided = (self.n_init == 0).then_some(true);
        let restart = |c: &Ctr| if c.kind == Kind::App { decided } else { None };
        if self.stop_all(deadline, restart, now, out) {
            return;
        }
        out.push(Action::RemoveSandbox { pod_uid: self.uid.clone() });
        self.sandbox = Sandbox::Replacing;
    }

    /// `purgeInitContainers`: the old sandbox is gone; init containers start over (their
    /// restart counts go on, as the kubelet recovers them from the log directory).
    pub(super) fn purge_init(&mut self) {
        for c in &mut self.cs[..self.n_init] {
            c.prev = c.last.take();
            c.started_once = false;
            c.restart_now = false;
        }
        self.initialized = false;
        self.sandbox = Sandbox::None;
    }

    pub(super) fn probe_kill(
        &mut self,
        i: usize,
        kind: ProbeKind,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
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
        // computePodActions decides the restart now, whatever the exit code turns out to be.
        let restart = self.restarts_after_kill(c);
        if restart {
            msg.push_str(", will be restarted");
        }
        self.begin_stop(i, add(now, grace), Some(msg), Some(restart), now, out);
    }
}
