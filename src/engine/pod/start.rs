//! Starting containers: the kubelet's `computePodActions` start half and `startContainer`
//! (sandbox, init order, back-off, config and image gates, probes of running instances).

use super::*;

impl PodState {
    pub(super) fn run(
        &mut self,
        d: &DesiredState,
        now: Timestamp,
        seq: &mut u64,
        out: &mut Vec<Action>,
    ) {
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
                *seq += 1;
                self.gen = *seq;
                return;
            }
            Sandbox::Draining { deadline } => return self.drain(deadline, now, out),
            Sandbox::Died
            | Sandbox::Creating
            | Sandbox::Replacing
            | Sandbox::Removing
            | Sandbox::Removed => return,
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
        let c = &self.cs[i];
        let mut last_exit = c.last.as_ref().map(|t| t.finished_at);
        if c.restart_now {
            let before = c.prev.as_ref().map(|t| t.finished_at);
            if before.is_none_or(|f| c.crash.until_since(f, now).is_none()) {
                last_exit = before;
            }
        }
        if let Some(until) = last_exit.and_then(|f| self.cs[i].crash.until_since(f, now)) {
            // Past the kill's own sync: the killed instance's exit counts from now on.
            self.cs[i].restart_now = false;
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
        c.restart_now = false;
        c.attempt = c.instances;
        c.run = Run::Pulling;
        c.retry_at = None;
        c.noted = None;
        let policy = c.spec.image_pull_policy.clone().unwrap_or_else(|| {
            let latest = !image.contains(':') || image.ends_with(":latest");
            if latest { "Always" } else { "IfNotPresent" }.into()
        });
        // The Pulling event waits for the runtime's ImagePulling: an image already present
        // gets only Pulled, as with the kubelet.
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
}
