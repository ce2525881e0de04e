//! One container of a pod across its instances: where its current instance is in its life,
//! the last two dead instances, the kubelet's reason cache and back-offs.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backoff::Backoff;
use super::probe::Probes;
use super::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    App,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    /// Whether it comes back, when the kubelet decided that as it killed it (probe failure,
    /// sandbox change) rather than from the exit code afterwards.
    pub restart: Option<bool>,
}

/// Where the current attempt is. `Pulling`..`PostStart` form the start pipeline, which the
/// kubelet runs for one container at a time per pod (postStart blocks the next start).
#[derive(Clone, Debug)]
pub(crate) enum Run {
    Idle,
    Pulling,
    PullDone,
    Creating,
    PostStart { started_at: Timestamp },
    Running { started_at: Timestamp },
    Stopping { started_at: Timestamp, stop: Stop },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Stop {
    /// End of the grace period.
    pub deadline: Timestamp,
    /// Killed after it came up (not during postStart): shown as running until it exits.
    pub was_up: bool,
    pub stage: StopStage,
    /// The restart decision taken with the kill, if any (see [`Terminated::restart`]).
    pub restart: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum StopStage {
    PreStop,
    Term { kill_at: Timestamp },
    Killed,
}

#[derive(Clone, Debug)]
pub(crate) struct Ctr {
    pub spec: Container,
    pub kind: Kind,
    pub run: Run,
    /// Attempt of the pipeline or instance in `run`.
    pub attempt: u32,
    /// Instances created so far: the next attempt number.
    pub instances: u32,
    pub restart_count: i32,
    pub last: Option<Terminated>,
    pub prev: Option<Terminated>,
    /// The kubelet's reason cache: why the last start did not happen (reason, message).
    pub reason: Option<(String, String)>,
    pub crash: Backoff,
    pub pull: Backoff,
    /// No start before this (after `CreateContainerError`).
    pub retry_at: Option<Timestamp>,
    pub probes: Probes,
    pub started_once: bool,
    /// Last warning emitted while waiting, so a reconcile loop does not repeat it.
    pub noted: Option<String>,
    /// Killed with a restart decided: the kubelet starts it in the same sync, whose status
    /// snapshot still shows the killed instance running, so `doBackOff` looks at the exit before
    /// it (kubernetes#22240). Cleared once that start is tried.
    pub restart_now: bool,
}

/// The CRI's reason for a terminated container (exit code already 128+signal when signalled).
pub(crate) fn exit_reason(oom_killed: bool, lost: bool, exit_code: i32) -> &'static str {
    match (lost, oom_killed, exit_code) {
        (true, _, _) => "ContainerStatusUnknown",
        (_, true, _) => "OOMKilled",
        (_, false, 0) => "Completed",
        _ => "Error",
    }
}

/// The kubelet's message for a container whose end nobody saw (`ContainerStatusUnknown`).
pub const LOST_MESSAGE: &str = "The container could not be located when the pod was terminated";

/// The terminated state's message: the kubelet's for a lost container, else the container's.
pub(crate) fn exit_message(lost: bool, message: &Option<String>) -> Option<String> {
    if lost {
        return Some(LOST_MESSAGE.to_string());
    }
    message.clone()
}

pub(crate) fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(time),
            finished_at: Some(time(t.finished_at)),
            container_id: None,
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: message.map(str::to_owned),
        }),
        ..Default::default()
    }
}

impl Ctr {
    pub fn new(spec: Container, kind: Kind) -> Self {
        Self {
            spec,
            kind,
            run: Run::Idle,
            attempt: 0,
            instances: 0,
            restart_count: 0,
            last: None,
            prev: None,
            reason: None,
            crash: Backoff::default(),
            pull: Backoff::default(),
            retry_at: None,
            probes: Probes::default(),
            started_once: false,
            noted: None,
            restart_now: false,
        }
    }

    pub fn image(&self) -> &str {
        self.spec.image.as_deref().unwrap_or_default()
    }

    pub fn active(&self) -> bool {
        !matches!(self.run, Run::Idle)
    }

    pub fn pulling(&self) -> bool {
        matches!(self.run, Run::Pulling | Run::PullDone)
    }

    pub fn in_pipeline(&self) -> bool {
        matches!(self.run, Run::Pulling | Run::PullDone | Run::Creating | Run::PostStart { .. })
    }

    fn up(&self) -> bool {
        match self.run {
            Run::Running { .. } => true,
            Run::Stopping { stop, .. } => stop.was_up,
            _ => false,
        }
    }

    pub fn started(&self) -> bool {
        self.up() && self.probes.started()
    }

    /// A regular init container that completed.
    pub fn succeeded(&self) -> bool {
        !self.active() && self.last.as_ref().is_some_and(|t| t.exit_code == 0)
    }

    pub fn ready(&self) -> bool {
        match self.kind {
            Kind::Init => self.succeeded(),
            _ => self.up() && self.probes.ready(),
        }
    }

    /// A new dead instance; the one before it is kept as `prev` (`lastState`).
    pub fn record_exit(&mut self, t: Terminated) {
        self.prev = self.last.replace(t);
        self.run = Run::Idle;
        self.probes = Probes::default();
    }

    /// The API view. `restarting`: a start is still to come, so show why it has not happened.
    /// (Init containers purged for a new sandbox keep their last exit, as `prev`, for lastState.)
    pub fn status(&self, default_reason: &str, restarting: bool) -> ContainerStatus {
        let reason = self.reason.as_ref().map(|(r, m)| (r.as_str(), Some(m.as_str())));
        let (state, last_state) = match &self.run {
            Run::Running { started_at }
            | Run::Stopping { started_at, stop: Stop { was_up: true, .. } } => {
                let running = ContainerStateRunning { started_at: Some(time(*started_at)) };
                let state = ContainerState { running: Some(running), ..Default::default() };
                (state, self.last.as_ref().or(self.prev.as_ref()).map(terminated))
            }
            // A restart decided at kill time is already under way (the kubelet shows the new
            // instance); never the exit, which could make the pod look finished.
            Run::Idle if !self.restart_now && (!restarting || reason.is_none()) => match &self.last
            {
                Some(last) => (terminated(last), self.prev.as_ref().map(terminated)),
                None => (waiting(default_reason, None), self.prev.as_ref().map(terminated)),
            },
            _ => {
                let (r, m) = reason.unwrap_or((default_reason, None));
                (waiting(r, m), self.last.as_ref().or(self.prev.as_ref()).map(terminated))
            }
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.image().to_owned(),
            ready: self.ready(),
            started: Some(self.started()),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: Some(last_state.unwrap_or_default()),
            ..Default::default()
        }
    }
}
