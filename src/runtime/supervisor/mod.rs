//! `outpost supervise`: the per-pod supervisor process. See the module doc of `runtime`.
//!
//! Single-threaded by construction (libcontainer forks and runs Rust code in the child, which
//! hangs when another thread held a lock at fork time). One `poll` loop without timers serves
//! the command socket, the SIGCHLD self-pipe, the log pipes and the exec pipes; deadlines
//! (exec timeouts, shutdown grace) only shorten the poll timeout.

mod attach;
mod cgroups;
mod clients;
mod container;
mod error;
mod event_loop;
mod exec;
mod executor;
mod gc;
mod logs;
mod memory;
mod namespaces;
mod overlay;
mod preflight;
mod sandbox;
mod sigchld;
mod spawn;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use error::SupervisorError;
use error::{IoContext, Result};
pub use gc::gc;
pub(crate) use memory::trim as trim_memory;

use super::durable;
use super::paths::{PodDir, SupervisorRecord};
use super::procfs;
use super::protocol::ReadyLine;
use super::types::{ContainerStatus, SandboxConfig, SandboxInfo};

/// A container instance the supervisor started and has not removed.
struct Instance {
    status: ContainerStatus,
    cgroup: PathBuf,
    /// How to start processes in it, or why that is not possible.
    exec: std::result::Result<spawn::ExecTemplate, &'static str>,
    /// Its stdin, kept open for attach (`stdin: true`).
    stdin: Option<attach::Stdin>,
}

/// A shutdown in progress: containers were signalled, the reply waits until they are gone.
struct Shutdown {
    client: u64,
    request: u64,
    /// When SIGKILL follows SIGTERM; `None` once SIGKILL was sent.
    kill_at: Option<Instant>,
}

pub struct Supervisor {
    config: SandboxConfig,
    dir: PodDir,
    info: SandboxInfo,
    /// Where the pod's namespaces are pinned (containers join them).
    namespaces: namespaces::PodNamespaces,
    /// Until the pause exits (a pod sharing one pid namespace) or the pod shuts down.
    sandbox_alive: bool,
    instances: BTreeMap<String, Instance>,
    log_files: HashMap<String, logs::LogFile>,
    pipes: Vec<logs::LogPipe>,
    execs: Vec<exec::ExecRun>,
    attachments: Vec<attach::Attachment>,
    /// Exec processes given up on (timed out); reaped silently.
    abandoned: HashSet<i32>,
    clients: Vec<clients::Client>,
    next_client: u64,
    listener: UnixListener,
    wake: OwnedFd,
    shutdown: Option<Shutdown>,
    quit: bool,
    /// libcontainer writes a container's `oomScoreAdj` into the calling process; restored after.
    own_oom_score_adj: String,
    /// A libcontainer call left garbage: give memory back before the next wait.
    trim: bool,
}

/// `outpost supervise [--gc] --pod-dir DIR` as an exit code: run by `main` and, in-process, by
/// the children of the fork server (`runtime::forkserver`).
pub fn command(pod_dir: &Path, gc: bool) -> u8 {
    let result = if gc { self::gc(pod_dir).map(|()| true) } else { supervise(pod_dir) };
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("outpost supervise: {e}");
            1
        }
    }
}

/// `outpost supervise --pod-dir DIR`: forks; the child becomes the supervisor, the parent
/// prints one [`ReadyLine`] once the sandbox runs (or failed) and exits, so the agent never
/// parents the supervisor and never misses its error.
pub fn supervise(pod_dir: &Path) -> Result<bool> {
    ensure_single_threaded()?;
    let (read, write) =
        nix::unistd::pipe().map_err(|source| SupervisorError::Sys { what: "pipe", source })?;
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    match unsafe { nix::unistd::fork() }
        .map_err(|source| SupervisorError::Sys { what: "fork", source })?
    {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write);
            let mut line = String::new();
            let _ = File::from(read).read_to_string(&mut line);
            let line = line.trim();
            let ready: ReadyLine = serde_json::from_str(line).unwrap_or_else(|_| {
                Err(format!(
                    "the supervisor exited during setup (see {})",
                    PodDir::new(pod_dir).supervisor_log().display()
                ))
            });
            println!("{}", serde_json::to_string(&ready).unwrap_or_default());
            Ok(ready.is_ok())
        }
        nix::unistd::ForkResult::Child => {
            drop(read);
            let mut ready = File::from(write);
            let dir = PodDir::new(pod_dir);
            match setup(&dir) {
                Ok(mut sup) => {
                    let line =
                        serde_json::to_string(&ReadyLine::Ok(sup.info.clone())).unwrap_or_default();
                    let _ = writeln!(ready, "{line}");
                    drop(ready);
                    match sup.info.pause_pid {
                        Some(pid) => log::info!(
                            "pod {}: sandbox running, pause pid {pid}",
                            sup.config.pod_name
                        ),
                        None => log::info!("pod {}: sandbox running", sup.config.pod_name),
                    }
                    sup.run();
                    log::info!("pod {}: supervisor exiting", sup.config.pod_name);
                    Ok(true)
                }
                Err(e) => {
                    log::error!("sandbox setup in {} failed: {e}", pod_dir.display());
                    let line =
                        serde_json::to_string(&ReadyLine::Err(e.to_string())).unwrap_or_default();
                    let _ = writeln!(ready, "{line}");
                    Err(e)
                }
            }
        }
    }
}

fn ensure_single_threaded() -> Result<()> {
    let tasks = std::fs::read_dir("/proc/self/task").io("list", "/proc/self/task")?.count();
    if tasks != 1 {
        return Err(SupervisorError::Sys {
            what: "supervise must be single-threaded",
            source: nix::errno::Errno::EBUSY,
        });
    }
    Ok(())
}

/// Detaches, joins the pod cgroup, opens the socket and starts the sandbox.
fn setup(dir: &PodDir) -> Result<Supervisor> {
    // Own session: no SIGHUP/SIGINT from the agent's terminal, out of its process group.
    nix::unistd::setsid().map_err(|source| SupervisorError::Sys { what: "setsid", source })?;
    redirect_stdio(dir)?;
    nix::unistd::chdir("/").map_err(|source| SupervisorError::Sys { what: "chdir /", source })?;
    let config: SandboxConfig =
        durable::read_json(&dir.sandbox_config()).io("read", dir.sandbox_config())?;
    // Orphans of the pod (daemonized processes of host_pid containers) are reaped here.
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let own_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
        .io("read", "/proc/self/oom_score_adj")?;
    cgroups::clear_stale(&config.pod_cgroup());
    cgroups::join_supervisor_leaf(&config.pod_cgroup())?;
    if let Some(max) = config.pids_max {
        cgroups::set_pids_max(&config.pod_cgroup(), max)?;
    }
    let wake = sigchld::install()?;
    let socket = dir.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).io("listen on", &socket)?;
    listener.set_nonblocking(true).io("set non-blocking", &socket)?;
    for d in [dir.state_root(), dir.containers()] {
        std::fs::create_dir_all(&d).io("create", &d)?;
    }
    let pod_namespaces = namespaces::make(dir, &config)?;
    let pause_pid = if config.share_process_namespace && !config.host_pid {
        let memory = memory::regions_for_pause();
        match sandbox::start(dir, &config, &pod_namespaces, &own_oom_score_adj, memory) {
            Ok(pid) => Some(pid),
            Err(e) => {
                namespaces::release(dir);
                return Err(e);
            }
        }
    } else {
        None
    };
    let info = SandboxInfo {
        pod_uid: config.pod_uid.clone(),
        supervisor_pid: std::process::id() as i32,
        pause_pid,
        netns: pod_namespaces.net.clone(),
        cgroup: config.pod_cgroup(),
        pod_dir: dir.path().to_path_buf(),
        created_at: std::time::SystemTime::now(),
    };
    let me = std::process::id() as i32;
    let record = SupervisorRecord {
        pid: me,
        starttime: procfs::live_starttime(me).unwrap_or(0),
        sandbox: info.clone(),
    };
    durable::write_json(&dir.supervisor_record(), &record).io("write", dir.supervisor_record())?;
    Ok(Supervisor {
        config,
        dir: dir.clone(),
        info,
        namespaces: pod_namespaces,
        sandbox_alive: true,
        instances: BTreeMap::new(),
        log_files: HashMap::new(),
        pipes: Vec::new(),
        execs: Vec::new(),
        attachments: Vec::new(),
        abandoned: HashSet::new(),
        clients: Vec::new(),
        next_client: 0,
        listener,
        wake,
        shutdown: None,
        quit: false,
        own_oom_score_adj,
        trim: true,
    })
}

/// stdin from /dev/null, stdout and stderr (the `log` output) to `supervisor.log`: the agent's
/// pipes must close, or its wait for the fork parent would never end.
fn redirect_stdio(dir: &PodDir) -> Result<()> {
    let null = File::open("/dev/null").io("open", "/dev/null")?;
    let log_path = dir.supervisor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .io("open", &log_path)?;
    for (from, to) in [(null.as_raw_fd(), 0), (log.as_raw_fd(), 1), (log.as_raw_fd(), 2)] {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid and owned here.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(SupervisorError::Sys { what: "dup2", source: nix::errno::Errno::last() });
        }
    }
    Ok(())
}

/// libcontainer's create writes `process.oomScoreAdj` into the calling process and makes it
/// non-dumpable; undo both so later containers and /proc readers see the supervisor's own.
fn restore_after_create(own_oom_score_adj: &str) {
    let _ = std::fs::write("/proc/self/oom_score_adj", own_oom_score_adj.trim());
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
}
