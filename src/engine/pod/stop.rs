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

    pub(super) fn term(&mut self, i: usize, now: Timestamp, out: &mut Vec<Action>) {
        let Run::Stopping { stop, .. } = self.cs[i].run else { return };
        out.push(Action::KillContainer { c: self.cref(i), signal: Signal::Term });
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

    pub(super) fn wind_down(&mut self, now: Timestamp, out: &mut Vec<Action>) {
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
        if self.restarts_after_kill(c) {
            msg.push_str(", will be restarted");
        }
        self.begin_stop(i, add(now, grace), Some(msg), now, out);
    }
}
