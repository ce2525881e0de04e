//! The agent side: spawns supervisors, talks to them, turns their pushed events into a
//! channel. No libcontainer here (see the module doc of `runtime`).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use smol::channel::{Receiver, Sender};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::Async;

use super::durable;
use super::error::{Result, RuntimeError};
use super::forkserver::{ForkServer, ForkServerError};
use super::paths::{PodDir, SupervisorRecord};
use super::procfs;
use super::protocol::{Envelope, Message, ReadyLine, Request, Response, MAX_REQUEST};
use super::types::{
    ContainerConfig, ContainerStatus, Event, ExecRequest, ExecResult, InstanceId, RuntimePod,
    SandboxConfig, SandboxDeath, SandboxInfo,
};
use super::{Runtime, Signal};

/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The real runtime: one `outpost supervise` process per pod.
#[derive(Clone)]
pub struct SupervisorRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    pods_dir: PathBuf,
    exe: PathBuf,
    fork_server: OnceLock<ForkServer>,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
}

impl SupervisorRuntime {
    /// Pods live in `<state_dir>/pods/<uid>`; supervisors run this executable (through
    /// `/proc/self/exe`: the sealed copy, see `sealed_exe`, whose path is no host path).
    pub fn new(state_dir: &Path) -> Self {
        Self::with_executable(state_dir, PathBuf::from(super::sealed_exe::SELF_EXE))
    }

    /// Like `new`, with another `outpost` binary (tests run from a test harness binary).
    pub fn with_executable(state_dir: &Path, exe: PathBuf) -> Self {
        let (events_tx, events_rx) = smol::channel::unbounded();
        let inner = Inner {
            pods_dir: state_dir.join("pods"),
            exe,
            fork_server: OnceLock::new(),
            conns: Mutex::default(),
            events_tx,
            events_rx,
        };
        Self { inner: Arc::new(inner) }
    }

    pub(super) fn pod_dir(&self, pod_uid: &str) -> Result<PodDir> {
        let valid = !pod_uid.is_empty()
            && pod_uid != "."
            && pod_uid != ".."
            && !pod_uid.contains(['/', '\0']);
        if !valid {
            return Err(RuntimeError::InvalidPodUid { pod_uid: pod_uid.to_string() });
        }
        let dir = PodDir::new(self.inner.pods_dir.join(pod_uid));
        if dir.socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(RuntimeError::SocketPathTooLong {
                pod_uid: pod_uid.to_string(),
                path: dir.socket(),
            });
        }
        Ok(dir)
    }

    /// Where a removed pod dir is deleted from; a dot name is never a pod UID in `list`.
    fn trash_dir(&self, pod_uid: &str) -> PathBuf {
        self.inner.pods_dir.join(format!(".{pod_uid}.removing"))
    }

    fn connected(&self, pod_uid: &str) -> Option<Arc<Conn>> {
        let conns = self.inner.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.get(pod_uid).filter(|c| !c.shared.closed.load(Ordering::SeqCst)).cloned()
    }

    /// The connection to the pod's live supervisor, connecting (adopting) if needed.
    async fn conn(&self, pod_uid: &str) -> Result<Option<(Arc<Conn>, Option<RuntimePod>)>> {
        if let Some(c) = self.connected(pod_uid) {
            return Ok(Some((c, None)));
        }
        let dir = self.pod_dir(pod_uid)?;
        let Ok(record) = durable::read_json::<SupervisorRecord>(&dir.supervisor_record()) else {
            return Ok(None);
        };
        if !procfs::is_same_process(record.pid, record.starttime) {
            return Ok(None);
        }
        let (conn, state) =
            Conn::open(pod_uid, &dir.socket(), self.inner.events_tx.clone()).await?;
        log::info!("pod {pod_uid}: connected to supervisor {}", record.pid);
        self.inner
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pod_uid.to_string(), conn.clone());
        Ok(Some((conn, Some(state))))
    }

    async fn call(&self, pod_uid: &str, request: Request) -> Result<Response> {
        match self.conn(pod_uid).await? {
            Some((conn, _)) => conn.call(request).await,
            None => Err(RuntimeError::SupervisorGone { pod_uid: pod_uid.to_string() }),
        }
    }

    /// Supervisors are forked by `fork_server` while it runs (see `forkserver`), exec'd after.
    pub fn with_fork_server(self, fork_server: Option<ForkServer>) -> Self {
        if let Some(server) = fork_server {
            log::info!("fork server running, pid {}", server.pid());
            let _ = self.inner.fork_server.set(server);
        }
        self
    }

    /// Starts `outpost supervise` (forked by the fork server, else exec'd) and waits for its
    /// fork parent's one line.
    async fn spawn_supervisor(&self, pod_uid: &str, dir: &PodDir) -> Result<SandboxInfo> {
        let (stdout, failure) = match self.fork_supervisor(pod_uid, dir).await {
            Some(output) => output,
            None => self.exec_supervisor(pod_uid, dir).await?,
        };
        let stdout = String::from_utf8_lossy(&stdout);
        let line = stdout.lines().last().unwrap_or_default();
        match serde_json::from_str::<ReadyLine>(line) {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(message)) => {
                Err(RuntimeError::SandboxFailed { pod_uid: pod_uid.to_string(), message })
            }
            Err(_) => {
                Err(RuntimeError::SandboxFailed { pod_uid: pod_uid.to_string(), message: failure })
            }
        }
    }

    /// Through the fork server if it runs: stdout, and what to say if it holds no ready line.
    /// `None`: the fork server is gone or failed (logged); exec instead.
    async fn fork_supervisor(&self, pod_uid: &str, dir: &PodDir) -> Option<(Vec<u8>, String)> {
        self.inner.fork_server.get()?;
        let inner = self.inner.clone();
        let path = dir.path().to_path_buf();
        let spawned =
            smol::unblock(move || inner.fork_server.get().map(|s| s.spawn(&path))).await?;
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(ForkServerError::Gone) => return None,
            Err(e) => {
                log::warn!("pod {pod_uid}: {e}: exec'ing its supervisor instead");
                return None;
            }
        };
        // Read as the process writes, without holding a thread: the server did not wait for
        // the sandbox either.
        let read = |fd: OwnedFd| async move {
            let mut buf = Vec::new();
            if let Ok(mut pipe) = Async::new(File::from(fd)) {
                let _ = pipe.read_to_end(&mut buf).await;
            }
            buf
        };
        let (stdout, stderr) = smol::future::zip(read(spawned.stdout), read(spawned.stderr)).await;
        let failure = format!(
            "supervise process {} (forked) ended without a ready line: {}",
            spawned.pid,
            String::from_utf8_lossy(&stderr).trim()
        );
        Some((stdout, failure))
    }

    /// `outpost supervise --pod-dir DIR` exec'd: stdout, and what to say if it holds no ready
    /// line.
    async fn exec_supervisor(&self, pod_uid: &str, dir: &PodDir) -> Result<(Vec<u8>, String)> {
        let exe = self.inner.exe.clone();
        let path = dir.path().to_path_buf();
        let spawn_error = |source| RuntimeError::Spawn {
            pod_uid: pod_uid.to_string(),
            exe: self.inner.exe.clone(),
            source,
        };
        let output = smol::unblock(move || {
            Command::new(exe)
                .arg("supervise")
                .arg("--pod-dir")
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Out of the agent's process group: a signal to the agent's group spares it.
                .process_group(0)
                .output()
        })
        .await
        .map_err(spawn_error)?;
        let failure =
            format!("{} {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        Ok((output.stdout, failure))
    }

    /// `outpost supervise --gc`: cleanup by a fresh single-threaded process.
    async fn collect_garbage(&self, pod_uid: &str, dir: &PodDir) -> Result<()> {
        let exe = self.inner.exe.clone();
        let path = dir.path().to_path_buf();
        let output = smol::unblock(move || {
            Command::new(exe)
                .args(["supervise", "--gc", "--pod-dir"])
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        })
        .await
        .map_err(|source| RuntimeError::Spawn {
            pod_uid: pod_uid.to_string(),
            exe: self.inner.exe.clone(),
            source,
        })?;
        if output.status.success() {
            Ok(())
        } else {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            Err(RuntimeError::Cleanup { pod_uid: pod_uid.to_string(), message })
        }
    }

    async fn pod_state(&self, pod_uid: &str) -> Result<RuntimePod> {
        let dir = self.pod_dir(pod_uid)?;
        match self.conn(pod_uid).await {
            Ok(Some((_, Some(state)))) => return Ok(state),
            Ok(Some((conn, None))) => match conn.call(Request::Status).await {
                Ok(Response::State(state)) => return Ok(state),
                Ok(_) => {
                    return Err(RuntimeError::Protocol {
                        pod_uid: pod_uid.to_string(),
                        operation: "status",
                    })
                }
                Err(RuntimeError::SupervisorGone { .. }) => {}
                Err(e) => return Err(e),
            },
            Ok(None) => {}
            Err(e) => log::warn!("{e}"),
        }
        if !dir.path().exists() {
            return Err(RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() });
        }
        Ok(dead_state(pod_uid, &dir))
    }
}

impl Runtime for SupervisorRuntime {
    async fn create_sandbox(&self, config: SandboxConfig) -> Result<SandboxInfo> {
        let pod_uid = config.pod_uid.clone();
        let dir = self.pod_dir(&pod_uid)?;
        if dir.path().exists() {
            return Err(RuntimeError::SandboxExists { pod_uid, path: dir.path().to_path_buf() });
        }
        let io = |path: &Path| {
            let (pod_uid, path) = (pod_uid.clone(), path.to_path_buf());
            move |source| RuntimeError::Io { pod_uid, path, source }
        };
        std::fs::create_dir_all(dir.path()).map_err(io(dir.path()))?;
        durable::write_json(&dir.sandbox_config(), &config).map_err(io(&dir.sandbox_config()))?;
        let info = match self.spawn_supervisor(&pod_uid, &dir).await {
            Ok(info) => info,
            Err(e) => {
                // Whatever the failed setup left (mounts, cgroups) goes with the directory.
                let _ = self.collect_garbage(&pod_uid, &dir).await;
                let _ = std::fs::remove_dir_all(dir.path());
                return Err(e);
            }
        };
        log::info!(
            "pod {} ({pod_uid}): sandbox running, supervisor {}",
            config.pod_name,
            info.supervisor_pid
        );
        self.conn(&pod_uid).await?;
        Ok(info)
    }

    async fn start_container(
        &self,
        pod_uid: &str,
        config: ContainerConfig,
    ) -> Result<ContainerStatus> {
        match self.call(pod_uid, Request::StartContainer(Box::new(config))).await? {
            Response::Started(status) => Ok(status),
            Response::RunFailed(message) => {
                Err(RuntimeError::RunFailed { pod_uid: pod_uid.to_string(), message })
            }
            _ => Err(RuntimeError::Protocol {
                pod_uid: pod_uid.to_string(),
                operation: "start container",
            }),
        }
    }

    async fn kill_container(&self, pod_uid: &str, id: &InstanceId, signal: Signal) -> Result<()> {
        let request = Request::Kill { id: id.clone(), signal: signal as i32 };
        self.call(pod_uid, request).await.map(drop)
    }

    async fn remove_container(&self, pod_uid: &str, id: &InstanceId) -> Result<()> {
        self.call(pod_uid, Request::Remove { id: id.clone() }).await.map(drop)
    }

    async fn exec(&self, pod_uid: &str, request: ExecRequest) -> Result<ExecResult> {
        match self.call(pod_uid, Request::Exec(request)).await? {
            Response::Exec(result) => Ok(result),
            _ => Err(RuntimeError::Protocol { pod_uid: pod_uid.to_string(), operation: "exec" }),
        }
    }

    async fn remove_sandbox(&self, pod_uid: &str, grace: Option<Duration>) -> Result<()> {
        let dir = self.pod_dir(pod_uid)?;
        let mut clean = false;
        if let Ok(Some((conn, _))) = self.conn(pod_uid).await {
            conn.shared.expect_close.store(true, Ordering::SeqCst);
            match conn.call(Request::Shutdown { grace }).await {
                Ok(_) => {
                    // The socket closes when the supervisor has exited.
                    let _ = conn.closed.recv().await;
                    clean = true;
                }
                Err(RuntimeError::SupervisorGone { .. }) => {}
                Err(e) => {
                    conn.shared.expect_close.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        self.inner.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(pod_uid);
        if !dir.path().exists() {
            return Ok(());
        }
        if !clean {
            self.collect_garbage(pod_uid, &dir).await?;
        }
        // Renamed first: an agent killed halfway through the delete must not leave a pod dir
        // without its sandbox config, which `--gc` needs (and so the next removal would fail).
        let trash = self.trash_dir(pod_uid);
        let io = |path: &Path| {
            let (pod_uid, path) = (pod_uid.to_string(), path.to_path_buf());
            move |source| RuntimeError::Io { pod_uid, path, source }
        };
        std::fs::rename(dir.path(), &trash).map_err(io(dir.path()))?;
        let path = trash.clone();
        smol::unblock(move || std::fs::remove_dir_all(&path)).await.map_err(io(&trash))?;
        log::info!("pod {pod_uid}: sandbox removed");
        Ok(())
    }

    async fn status(&self, pod_uid: &str) -> Result<RuntimePod> {
        self.pod_state(pod_uid).await
    }

    async fn list(&self) -> Result<Vec<RuntimePod>> {
        let pods_dir = self.inner.pods_dir.clone();
        let mut uids: Vec<String> = match std::fs::read_dir(&pods_dir) {
            Ok(entries) => {
                entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(RuntimeError::Io { pod_uid: String::new(), path: pods_dir, source })
            }
        };
        // Deletes an agent killed in `remove_sandbox` did not finish.
        for trash in uids.iter().filter(|u| u.starts_with('.')) {
            let path = pods_dir.join(trash);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                log::warn!("removing {}: {e}", path.display());
            }
        }
        uids.retain(|u| !u.starts_with('.'));
        uids.sort();
        // All at once: each connect waits for its supervisor to be scheduled and answer, and
        // after an agent restart there is one per pod.
        let tasks: Vec<_> = uids
            .into_iter()
            .map(|uid| {
                let me = self.clone();
                crate::tasks::spawn(async move { me.pod_state(&uid).await })
            })
            .collect();
        let mut pods = Vec::new();
        for task in tasks {
            // One broken pod must not hide the others.
            match task.await {
                Ok(state) => pods.push(state),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(pods)
    }

    fn events(&self) -> Receiver<Event> {
        self.inner.events_rx.clone()
    }
}

/// One connection to a supervisor: requests go out under a lock, a reader task dispatches
/// replies by id and forwards events.
struct Conn {
    pod_uid: String,
    writer: smol::lock::Mutex<Async<UnixStream>>,
    shared: Arc<Shared>,
    /// Closed by the reader task when the socket closes.
    closed: Receiver<()>,
    _reader: smol::Task<()>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, Sender<Result<Response, String>>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Set during shutdown: the close is not a sandbox death.
    expect_close: AtomicBool,
}

impl Conn {
    /// Connects and subscribes; returns the state at subscription time.
    async fn open(
        pod_uid: &str,
        socket: &Path,
        events: Sender<Event>,
    ) -> Result<(Arc<Conn>, RuntimePod)> {
        let connect_error = |source| RuntimeError::Connect {
            pod_uid: pod_uid.to_string(),
            path: socket.to_path_buf(),
            source,
        };
        let writer = Async::<UnixStream>::connect(socket).await.map_err(connect_error)?;
        let reader = writer.get_ref().try_clone().and_then(Async::new).map_err(connect_error)?;
        let shared = Arc::new(Shared::default());
        let (closed_tx, closed) = smol::channel::bounded(1);
        let dir = PodDir::new(socket.parent().unwrap_or(Path::new("/")));
        let task = crate::tasks::spawn(read_messages(
            pod_uid.to_string(),
            dir,
            reader,
            shared.clone(),
            events,
            closed_tx,
        ));
        let conn = Arc::new(Conn {
            pod_uid: pod_uid.to_string(),
            writer: smol::lock::Mutex::new(writer),
            shared,
            closed,
            _reader: task,
        });
        match conn.call(Request::Subscribe).await? {
            Response::State(state) => Ok((conn, state)),
            _ => {
                Err(RuntimeError::Protocol { pod_uid: pod_uid.to_string(), operation: "subscribe" })
            }
        }
    }

    async fn call(&self, request: Request) -> Result<Response> {
        let operation = request.name();
        let gone = || RuntimeError::SupervisorGone { pod_uid: self.pod_uid.clone() };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let mut line = serde_json::to_vec(&Envelope { id, request })
            .map_err(|_| RuntimeError::Protocol { pod_uid: self.pod_uid.clone(), operation })?;
        if line.len() > MAX_REQUEST {
            return Err(RuntimeError::RequestTooLarge {
                pod_uid: self.pod_uid.clone(),
                operation,
                size: line.len(),
                limit: MAX_REQUEST,
            });
        }
        line.push(b'\n');
        let (tx, rx) = smol::channel::bounded(1);
        self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        let written = self.writer.lock().await.write_all(&line).await;
        if written.is_err() {
            self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return Err(gone());
        }
        match rx.recv().await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(message)) => {
                Err(RuntimeError::Supervisor { pod_uid: self.pod_uid.clone(), operation, message })
            }
            Err(_) => Err(gone()),
        }
    }
}

/// What the durable records say about a pod whose supervisor is gone. An instance recorded
/// running has lost its parent: no exit will ever come for it, so it is reported lost
/// (removing the sandbox kills it), or the pod would wait for it forever.
fn dead_state(pod_uid: &str, dir: &PodDir) -> RuntimePod {
    let sandbox =
        durable::read_json::<SupervisorRecord>(&dir.supervisor_record()).ok().map(|r| r.sandbox);
    let now = std::time::SystemTime::now();
    let mut containers: Vec<ContainerStatus> = std::fs::read_dir(dir.containers())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| durable::read_json(&e.path().join("status.json")).ok())
        .map(|mut s: ContainerStatus| {
            s.exit.get_or_insert_with(|| crate::runtime::ExitInfo::lost(now));
            s
        })
        .collect();
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    let config = durable::read_json::<SandboxConfig>(&dir.sandbox_config()).ok();
    RuntimePod {
        pod_uid: pod_uid.to_string(),
        sandbox,
        supervisor_alive: false,
        sandbox_running: false,
        containers,
        termination_grace_period_seconds: config
            .as_ref()
            .and_then(|c| c.termination_grace_period_seconds),
        userns: config.and_then(|c| c.userns),
    }
}

async fn read_messages(
    pod_uid: String,
    dir: PodDir,
    stream: Async<UnixStream>,
    shared: Arc<Shared>,
    events: Sender<Event>,
    closed: Sender<()>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match serde_json::from_slice::<Message>(&line) {
            Ok(Message::Reply { id, result }) => {
                let waiter =
                    shared.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.try_send(result);
                }
            }
            Ok(Message::Event(event)) => {
                let _ = events.send(event).await;
            }
            // Only streamed execs get these, and the agent starts none.
            Ok(Message::ExecExited { .. }) => {}
            Err(e) => log::warn!("pod {pod_uid}: unreadable message from the supervisor: {e}"),
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    // Dropping the waiters fails their calls with SupervisorGone.
    shared.pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
    if !shared.expect_close.load(Ordering::SeqCst) {
        log::warn!("pod {pod_uid}: lost the connection to the supervisor");
        // No exit will come for what it parented: each instance's recorded end, or lost.
        let state = smol::unblock({
            let (pod_uid, dir) = (pod_uid.clone(), dir.clone());
            move || dead_state(&pod_uid, &dir)
        })
        .await;
        for c in state.containers {
            if let Some(exit) = c.exit {
                let pod_uid = pod_uid.clone();
                let _ = events.send(Event::ContainerExited { pod_uid, id: c.id, exit }).await;
            }
        }
        let _ =
            events.send(Event::SandboxDied { pod_uid, cause: SandboxDeath::SupervisorLost }).await;
    }
    drop(closed);
}
