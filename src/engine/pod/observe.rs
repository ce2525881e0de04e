//! Facts from the runtime applied to one pod: the kubelet's PLEG events, probe results and
//! hook outcomes, each checked against the instance it is about.

use super::*;
use crate::engine::container::{exit_message, exit_reason};

impl PodState {
    /// Applies a fact. False when it cannot have changed the pod's status, so the status
    /// need not be rebuilt: a probe result that left its thresholded result as it was (the
    /// common case, one per probe period of every container).
    pub fn observe(&mut self, fact: Observed, now: Timestamp, out: &mut Vec<Action>) -> bool {
        if let Observed::ProbeResult { c, kind, seq, result } = &fact {
            return self.probe_result(c, *kind, *seq, result, out);
        }
        self.apply(fact, now, out);
        true
    }

    /// Whether the probe's thresholded result changed; a failure is an event either way.
    fn probe_result(
        &mut self,
        c: &ContainerRef,
        kind: ProbeKind,
        seq: u64,
        result: &Result<Option<String>, String>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(i) = self.find(c) else { return false };
        if !matches!(self.cs[i].run, Run::Running { .. }) {
            return false;
        }
        let Some(p) = self.cs[i].probes.get_mut(kind) else { return false };
        let Some(changed) = p.record(seq, result.is_ok()) else { return false };
        let what = match kind {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        };
        match result {
            Err(m) => {
                let msg = format!("{what} probe failed: {m}");
                self.event(out, Some(i), EventType::Warning, "Unhealthy", msg);
            }
            // The kubelet's prober: a success, and an event each time.
            Ok(Some(w)) => {
                let msg = format!("{what} probe warning: {w}");
                self.event(out, Some(i), EventType::Warning, "ProbeWarning", msg);
            }
            Ok(None) => {}
        }
        changed
    }

    fn apply(&mut self, fact: Observed, now: Timestamp, out: &mut Vec<Action>) {
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
                match self.sandbox {
                    Sandbox::Removing => self.sandbox = Sandbox::Removed,
                    Sandbox::Replacing => self.purge_init(),
                    _ => {}
                }
                return;
            }
            Observed::SandboxDied { .. } => {
                if self.sandbox == Sandbox::Ready {
                    self.sandbox = Sandbox::Died;
                }
                return;
            }
            // The engine's, not a pod's.
            Observed::NodeReadings(_) | Observed::Devices(_) => return,
            Observed::ImagePulling { c }
            | Observed::ImagePulled { c, .. }
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
            Observed::ImagePulling { .. } => {
                if matches!(self.cs[i].run, Run::Pulling) {
                    let msg = format!("Pulling image {image:?}");
                    self.event(out, Some(i), Normal, "Pulling", msg);
                }
            }
            Observed::ImagePulled { pull, .. } => {
                if matches!(self.cs[i].run, Run::Pulling) {
                    self.cs[i].run = Run::PullDone;
                    // The kubelet's wording (its durations truncated to milliseconds).
                    let ms = |d: Duration| go_duration(Duration::from_millis(d.as_millis() as u64));
                    let msg = match pull {
                        None => format!("Container image {image:?} already present on machine"),
                        Some(p) => format!(
                            "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {} bytes.",
                            ms(p.took),
                            ms(p.total),
                            p.size
                        ),
                    };
                    self.event(out, Some(i), Normal, "Pulled", msg);
                }
            }
            Observed::ImagePullFailed { reason, message, .. } => {
                if !matches!(self.cs[i].run, Run::Pulling) {
                    return;
                }
                let c = &mut self.cs[i];
                c.run = Run::Idle;
                match reason {
                    ImageFailure::Pull => {
                        c.pull.next(now, now);
                        c.reason = Some(("ErrImagePull".into(), message.clone()));
                        let msg = format!("Failed to pull image {image:?}: {message}");
                        self.event(out, Some(i), Warning, "Failed", msg);
                        self.event(out, Some(i), Warning, "Failed", "Error: ErrImagePull".into());
                    }
                    ImageFailure::NeverPull => {
                        c.retry_at = Some(add(now, RETRY));
                        c.reason = Some(("ErrImageNeverPull".into(), message.clone()));
                        self.event(out, Some(i), Warning, "ErrImageNeverPull", message);
                        let msg = "Error: ErrImageNeverPull".into();
                        self.event(out, Some(i), Warning, "Failed", msg);
                    }
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
                    StartFailure::Config | StartFailure::Create => {
                        // Retried at the pod worker's next sync, like the kubelet.
                        c.run = Run::Idle;
                        c.retry_at = Some(add(now, RETRY));
                        let r = match reason {
                            StartFailure::Config => "CreateContainerConfigError",
                            _ => "CreateContainerError",
                        };
                        c.reason = Some((r.into(), message.clone()));
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
                            restart: None,
                        });
                        c.reason = Some(("RunContainerError".into(), message.clone()));
                    }
                }
                self.event(out, Some(i), Warning, "Failed", format!("Error: {message}"));
            }
            Observed::ContainerExited {
                exit_code, signal, oom_killed, lost, at, message, ..
            } => {
                let c = &mut self.cs[i];
                let restart = match c.run {
                    Run::Stopping { stop, .. } => stop.restart,
                    _ => None,
                };
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
                let reason = exit_reason(oom_killed, lost, exit_code);
                let message = exit_message(lost, &message);
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
                    restart,
                });
                c.restart_now = restart == Some(true);
            }
            // Taken by `observe`.
            Observed::ProbeResult { .. } => {}
            Observed::HookResult { kind: HookKind::PostStart, result, .. } => {
                let Run::PostStart { started_at } = self.cs[i].run else { return };
                match result {
                    Ok(()) => self.up(i, started_at),
                    Err(m) => {
                        // The kubelet keeps the hook's output out of the event (it may hold
                        // secrets); the message shows in the container's waiting state.
                        let msg = "PostStartHook failed".to_string();
                        self.event(out, Some(i), Warning, "FailedPostStartHook", msg);
                        self.cs[i].reason = Some(("PostStartHookError".into(), m));
                        // Killed inside startContainer; the next sync decides from the exit code.
                        let deadline = add(now, self.grace());
                        let msg = Some("FailedPostStartHook".into());
                        self.begin_stop(i, deadline, msg, None, now, out);
                    }
                }
            }
            Observed::HookResult { kind: HookKind::PreStop, result, .. } => {
                let Run::Stopping { stop: Stop { stage: StopStage::PreStop, .. }, .. } =
                    self.cs[i].run
                else {
                    return;
                };
                if result.is_err() {
                    let msg = "PreStopHook failed".to_string();
                    self.event(out, Some(i), Warning, "FailedPreStopHook", msg);
                }
                self.term(i, now, out);
            }
            Observed::SandboxReady { .. }
            | Observed::SandboxFailed { .. }
            | Observed::SandboxRemoved { .. }
            | Observed::SandboxDied { .. }
            | Observed::NodeReadings(_)
            | Observed::Devices(_) => {}
        }
    }

    /// The instance is up (postStart done): probes begin.
    pub(super) fn up(&mut self, i: usize, started_at: Timestamp) {
        let c = &mut self.cs[i];
        c.run = Run::Running { started_at };
        c.probes = Probes::new(&c.spec, started_at);
    }
}
