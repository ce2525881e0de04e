//! A `Runtime` for engine and agent tests: records every call, keeps a plausible pod state,
//! and lets the test inject events (exits, sandbox deaths) and failures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use smol::channel::{Receiver, Sender};

use super::error::{Result, RuntimeError};
use super::types::{
    ContainerConfig, ContainerStatus, Event, ExecRequest, ExecResult, ExitInfo, InstanceId,
    RuntimePod, SandboxConfig, SandboxInfo,
};
use super::{Runtime, Signal};

/// One call made on the fake, with its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    CreateSandbox(SandboxConfig),
    StartContainer { pod_uid: String, config: Box<ContainerConfig> },
    KillContainer { pod_uid: String, id: InstanceId, signal: Signal },
    RemoveContainer { pod_uid: String, id: InstanceId },
    Exec { pod_uid: String, request: ExecRequest },
    RemoveSandbox { pod_uid: String, grace: Option<Duration> },
    Status { pod_uid: String },
    List,
}

/// Which operation a scripted failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    CreateSandbox,
    StartContainer,
    KillContainer,
    RemoveContainer,
    Exec,
    RemoveSandbox,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    pods: BTreeMap<String, RuntimePod>,
    failures: HashMap<Op, VecDeque<RuntimeError>>,
    exec_results: VecDeque<ExecResult>,
    next_pid: i32,
}

pub struct FakeRuntime {
    state: Mutex<State>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        let (events_tx, events_rx) = smol::channel::unbounded();
        Self {
            state: Mutex::new(State { next_pid: 1000, ..State::default() }),
            events_tx,
            events_rx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next call of `op` fails with `error` (queued per operation).
    pub fn fail_next(&self, op: Op, error: RuntimeError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// The next exec returns `result` (default: exit 0, no output).
    pub fn push_exec_result(&self, result: ExecResult) {
        self.lock().exec_results.push_back(result);
    }

    /// Applies an event to the fake's pod state and delivers it on the event channel.
    pub fn inject(&self, event: Event) {
        {
            let mut state = self.lock();
            match &event {
                Event::ContainerExited { pod_uid, id, exit } => {
                    let status = state
                        .pods
                        .get_mut(pod_uid)
                        .and_then(|p| p.containers.iter_mut().find(|c| &c.id == id));
                    if let Some(status) = status {
                        status.exit = Some(exit.clone());
                    }
                }
                Event::SandboxDied { pod_uid, .. } => {
                    if let Some(pod) = state.pods.get_mut(pod_uid) {
                        pod.sandbox_running = false;
                    }
                }
                Event::ContainerStarted { .. } => {}
            }
        }
        let _ = self.events_tx.try_send(event);
    }

    /// Shorthand: the instance exited with `exit_code` (no signal, no OOM) at `finished_at`.
    pub fn exit_container(
        &self,
        pod_uid: &str,
        id: &InstanceId,
        exit_code: i32,
        finished_at: SystemTime,
    ) {
        let exit =
            ExitInfo { exit_code, signal: None, oom_killed: false, finished_at, lost: false };
        self.inject(Event::ContainerExited { pod_uid: pod_uid.to_string(), id: id.clone(), exit });
    }

    fn begin(&self, call: Call, op: Option<Op>) -> Result<MutexGuard<'_, State>> {
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(error) =
            op.and_then(|op| state.failures.get_mut(&op).and_then(VecDeque::pop_front))
        {
            return Err(error);
        }
        Ok(state)
    }
}

fn no_sandbox(pod_uid: &str) -> RuntimeError {
    RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() }
}

impl Runtime for FakeRuntime {
    async fn create_sandbox(&self, config: SandboxConfig) -> Result<SandboxInfo> {
        let mut state = self.begin(Call::CreateSandbox(config.clone()), Some(Op::CreateSandbox))?;
        let uid = config.pod_uid.clone();
        if state.pods.contains_key(&uid) {
            return Err(RuntimeError::SandboxExists {
                pod_uid: uid.clone(),
                path: PathBuf::from("/fake").join(&uid),
            });
        }
        state.next_pid += 2;
        let info = SandboxInfo {
            pod_uid: uid.clone(),
            supervisor_pid: state.next_pid - 1,
            pause_pid: None,
            netns: (!config.host_network)
                .then(|| PathBuf::from(format!("/proc/{}/ns/net", state.next_pid))),
            cgroup: config.pod_cgroup(),
            pod_dir: PathBuf::from("/fake").join(&uid),
            created_at: SystemTime::UNIX_EPOCH,
        };
        let pod = RuntimePod {
            pod_uid: uid.clone(),
            sandbox: Some(info.clone()),
            supervisor_alive: true,
            sandbox_running: true,
            containers: Vec::new(),
            termination_grace_period_seconds: config.termination_grace_period_seconds,
            userns: config.userns.clone(),
        };
        state.pods.insert(uid, pod);
        Ok(info)
    }

    async fn start_container(
        &self,
        pod_uid: &str,
        config: ContainerConfig,
    ) -> Result<ContainerStatus> {
        let call =
            Call::StartContainer { pod_uid: pod_uid.to_string(), config: Box::new(config.clone()) };
        let mut state = self.begin(call, Some(Op::StartContainer))?;
        state.next_pid += 1;
        let pid = state.next_pid;
        let pod = state.pods.get_mut(pod_uid).ok_or_else(|| no_sandbox(pod_uid))?;
        let status = ContainerStatus {
            id: config.id.clone(),
            pid,
            started_at: SystemTime::UNIX_EPOCH,
            log_path: PathBuf::from(format!(
                "/fake/{pod_uid}/logs/{}/{}.log",
                config.id.name, config.id.attempt
            )),
            exit: None,
        };
        pod.containers.push(status.clone());
        pod.containers.sort_by(|a, b| a.id.cmp(&b.id));
        drop(state);
        let _ = self.events_tx.try_send(Event::ContainerStarted {
            pod_uid: pod_uid.to_string(),
            status: status.clone(),
        });
        Ok(status)
    }

    async fn kill_container(&self, pod_uid: &str, id: &InstanceId, signal: Signal) -> Result<()> {
        let call = Call::KillContainer { pod_uid: pod_uid.to_string(), id: id.clone(), signal };
        self.begin(call, Some(Op::KillContainer)).map(drop)
    }

    async fn remove_container(&self, pod_uid: &str, id: &InstanceId) -> Result<()> {
        let call = Call::RemoveContainer { pod_uid: pod_uid.to_string(), id: id.clone() };
        let mut state = self.begin(call, Some(Op::RemoveContainer))?;
        if let Some(pod) = state.pods.get_mut(pod_uid) {
            pod.containers.retain(|c| &c.id != id);
        }
        Ok(())
    }

    async fn exec(&self, pod_uid: &str, request: ExecRequest) -> Result<ExecResult> {
        let call = Call::Exec { pod_uid: pod_uid.to_string(), request };
        let mut state = self.begin(call, Some(Op::Exec))?;
        let default = ExecResult {
            exit_code: Some(0),
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
        };
        Ok(state.exec_results.pop_front().unwrap_or(default))
    }

    async fn remove_sandbox(&self, pod_uid: &str, grace: Option<Duration>) -> Result<()> {
        let call = Call::RemoveSandbox { pod_uid: pod_uid.to_string(), grace };
        let mut state = self.begin(call, Some(Op::RemoveSandbox))?;
        state.pods.remove(pod_uid);
        Ok(())
    }

    async fn status(&self, pod_uid: &str) -> Result<RuntimePod> {
        let state = self.begin(Call::Status { pod_uid: pod_uid.to_string() }, None)?;
        state.pods.get(pod_uid).cloned().ok_or_else(|| no_sandbox(pod_uid))
    }

    async fn list(&self) -> Result<Vec<RuntimePod>> {
        let state = self.begin(Call::List, None)?;
        Ok(state.pods.values().cloned().collect())
    }

    fn events(&self) -> Receiver<Event> {
        self.events_rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_and_applies_injected_exits() {
        smol::block_on(async {
            let rt = FakeRuntime::new();
            let events = rt.events();
            rt.create_sandbox(SandboxConfig::new("u1", "default/p", "p")).await.expect("sandbox");
            let id = InstanceId::new("app", 0);
            let config = ContainerConfig {
                id: id.clone(),
                spec: oci_spec::runtime::Spec::default(),
                lower_dirs: vec![],
                log: Default::default(),
                stdio: Default::default(),
            };
            let started = rt.start_container("u1", config).await.expect("start");
            assert!(
                matches!(events.recv().await, Ok(Event::ContainerStarted { status, .. }) if status == started)
            );
            rt.exit_container("u1", &id, 3, SystemTime::UNIX_EPOCH);
            let exited = events.recv().await.expect("event");
            assert_eq!(exited.pod_uid(), "u1");
            let pod = rt.status("u1").await.expect("status");
            assert_eq!(pod.containers[0].exit.as_ref().map(|e| e.exit_code), Some(3));
            rt.fail_next(Op::Exec, RuntimeError::SupervisorGone { pod_uid: "u1".into() });
            let request = ExecRequest {
                id,
                argv: vec!["true".into()],
                timeout: Duration::from_secs(1),
                output_limit: 10,
            };
            assert!(rt.exec("u1", request.clone()).await.is_err());
            assert_eq!(rt.exec("u1", request).await.expect("exec").exit_code, Some(0));
            assert_eq!(rt.calls().len(), 5);
        });
    }
}
