//! Runs pods: the only module that touches libcontainer and cgroups, and the one that makes
//! the containers' namespaces and mounts (pod network namespaces are `network`'s, volume
//! mounts `volume`'s).
//!
//! # Process model
//!
//! ```text
//! agent (multi-threaded: its executor's thread, async-io's, the blocking pool, the watcher;
//!        never calls libcontainer)
//!   └─ fork server (`forkserver`): forked by `outpost run` before its first thread
//!        └─ per pod, forked on the agent's request (own process group), runs what
//!           `outpost supervise --pod-dir DIR` runs; the agent gets its stdout/stderr pipes
//!           over SCM_RIGHTS and waits for its one line (once the fork server is gone: the
//!           agent execs `outpost supervise --pod-dir DIR` itself, process_group 0)
//!        └─ fork: the parent prints "ready"/error once the sandbox runs, then exits, so the
//!           supervisor is re-parented to PID 1 (or the nearest subreaper), never the agent
//!           supervisor: one per pod, single-threaded, setsid, own cgroup <pod>/supervisor
//!             ├─ pause      only with shareProcessNamespace: libcontainer init running Rust
//!             │             (no image, no execve) holding the pod's pid namespace
//!             ├─ app X.N    init of instance N of container X: joins the pod's net+uts (unless
//!             │             hostNetwork) and ipc (unless hostIPC) namespaces, pinned at
//!             │             DIR/ns/* by the supervisor (`supervisor/namespaces.rs`), overlay
//!             │             rootfs, own mount ns, own pid ns or the pause's
//!             └─ exec'd     probes, hooks, `outpost exec`: forked by the supervisor, which
//!                           joins them to the container (`supervisor/spawn/`)
//! ```
//! All container processes are direct children of the supervisor (libcontainer clones with
//! CLONE_PARENT). The agent talks to each supervisor over `DIR/supervisor.sock`, one JSON object
//! per line (`protocol`): requests with ids, replies, and pushed events. `outpost exec` opens a
//! connection of its own and receives the process's pipes over it (`stream`).
//!
//! # Why a supervisor per pod
//!
//! - **libcontainer is not safe in a multi-threaded process.** Its child runs Rust code between
//!   clone and execve; with other threads alive it inherited a held lock and hung forever
//!   (reproduced 2 of 2), and concurrent creates race on a process-wide `chdir`. It also writes
//!   `oom_score_adj` and the dumpable flag of the calling process. So the smol agent never calls
//!   it; a single-threaded process does, and restores its own `oom_score_adj`/dumpable after.
//! - **Exact exit codes.** libcontainer stores no exit codes; only the parent of a container's
//!   init learns them (`waitpid`). The supervisor is that parent: it records code or 128+signal,
//!   and OOM (cgroup v1 `memory.oom_control` / v2 `memory.events` `oom_kill`, read before the
//!   cgroup is deleted) durably (`containers/<id>/status.json`, tmp + fsync + rename) at once.
//! - **At most one extra process per pod** (plus, with a shared pid namespace, the pause, a
//!   copy-on-write clone of it), idle
//!   in `poll` with no timers, instead of a shim per container; a helper process per operation
//!   would also lose the parenthood of the containers. Measured with `benches/runtime.rs`
//!   (release, one idle pod): supervisor 4.3 MB PSS / 0.2 MB private dirty, pause 1.9 / 0.09
//!   (PSS mostly the binary's text, shared with the agent and other pods' supervisors); with
//!   10 idle pods `benches/pod_startup.rs` gives ~0.60 / 0.17 and ~0.33 / 0.08 (forked ones).
//! - **Pods survive agent restarts and upgrades.** The supervisor has its own session and
//!   cgroup (outside the agent's systemd unit), keeps running, reaping and logging when the agent
//!   dies, and keeps every exit. A new agent finds supervisors from the pod dirs
//!   (`supervisor.json`: pid + /proc start time, zombie = dead), reconnects, subscribes and gets
//!   the full state in the subscribe reply, then events as they happen: nothing is polled.
//! - **Logs.** The supervisor holds the read end of each container's stdout/stderr pipe and
//!   writes CRI-format files, one per instance (`logs/<name>/<attempt>.log`), rotated by size.
//!
//! # Why a fork server
//!
//! An exec'd supervisor is a fresh image of the PIE binary: the dynamic loader relocates its
//! `.data.rel.ro` (~330 KB: vtables, string tables) and the runtime dirties more at start, all
//! private to that process (and its pause, a clone). Forked from one process, every
//! supervisor shares those pages copy-on-write; nothing writes them again (`.data.rel.ro` is
//! read-only after relocation). The agent cannot fork them itself: it is multi-threaded (a
//! child could inherit a lock another thread holds, the hang libcontainer showed), so
//! `outpost run` forks a server before any thread exists, and forking from the agent's own
//! early image also shares the pages with the agent. Linking without PIE had the same effect
//! but gives up ASLR of a root daemon's image. The server is a child of the agent: it dies
//! with it (`PR_SET_PDEATHSIG`), and cannot be re-forked once the agent has threads, so a dead
//! server means exec'd supervisors for the rest of the agent's life (logged once). Supervisors
//! are never its children for long: the double fork re-parents them like exec'd ones, so they
//! outlive the agent and the server. Forked ones are named `outpost-sup` (comm) and show
//! `<exe> supervise --pod-dir DIR` as their command line, like exec'd ones (`PR_SET_MM` where
//! the agent has CAP_SYS_RESOURCE, else written over the agent's, as setproctitle does).
//!
//! # When the supervisor dies
//!
//! Its containers are re-parented to PID 1 and their exit codes are lost; their log pipes lose
//! the reader (further writes get SIGPIPE/EPIPE). The agent sees the socket close
//! ([`Event::SandboxDied`] with [`SandboxDeath::SupervisorLost`]) or, after its own restart, a
//! dead pid in `supervisor.json` (`list` reports `supervisor_alive: false`, containers from the
//! durable records). It then removes the sandbox: `outpost supervise --gc`, a fresh
//! single-threaded helper, loads every container with libcontainer, kills, deletes, unmounts
//! and removes the pod cgroup; the engine recreates the pod as after a sandbox death.
//!
//! # Seams
//!
//! The agent uses the [`Runtime`] trait; [`SupervisorRuntime`] is the real one and
//! [`FakeRuntime`] records calls and lets the agent's unit tests inject events. Networking
//! (`network/`) runs in the agent between [`Runtime::create_sandbox`] (which returns the netns path) and the
//! first [`Runtime::start_container`].

mod client;
mod durable;
mod error;
pub mod fake;
mod forkserver;
mod paths;
pub(crate) mod procfs;
mod protocol;
pub mod readings;
pub mod sealed_exe;
pub mod spec;
mod stream;
pub mod supervisor;
mod timefmt;
mod types;
pub mod usage;
pub mod userns;

use std::future::Future;
use std::time::Duration;

pub use client::SupervisorRuntime;
pub use error::{Result, RuntimeError};
pub use fake::FakeRuntime;
pub use forkserver::{ForkServer, ForkServerError};
pub use nix::sys::signal::Signal;
pub use paths::{log_path, pod_log_dir, PodDir};
pub use stream::{AttachSession, AttachedStdin, ExecStream, ExecWaiter};
pub(crate) use timefmt::civil_from_days;
pub use timefmt::rfc3339_nanos;
pub use types::{
    ContainerConfig, ContainerStatus, ContainerStdio, Event, ExecExit, ExecRequest, ExecResult,
    ExecStreamRequest, ExitInfo, InstanceId, LogOptions, PodUserns, RuntimePod, SandboxConfig,
    SandboxDeath, SandboxInfo,
};

/// The runtime operations; one per engine action. Every fact (start, exit, sandbox death) is
/// also pushed on [`Runtime::events`], so the agent can feed the engine from that stream alone.
pub trait Runtime: Send + Sync {
    /// Starts the pod's sandbox (supervisor + namespaces, + pause for a shared pid namespace).
    /// Returns once it runs.
    fn create_sandbox(
        &self,
        config: SandboxConfig,
    ) -> impl Future<Output = Result<SandboxInfo>> + Send;

    /// Creates and starts one container instance in the pod's sandbox.
    fn start_container(
        &self,
        pod_uid: &str,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<ContainerStatus>> + Send;

    /// Signals every process of the instance; a no-op once it has exited.
    fn kill_container(
        &self,
        pod_uid: &str,
        id: &InstanceId,
        signal: Signal,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes an exited instance (rootfs, cgroup); keeps its log. Unknown instances: no-op.
    fn remove_container(
        &self,
        pod_uid: &str,
        id: &InstanceId,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs a command in a running instance and returns its output and exit code.
    fn exec(
        &self,
        pod_uid: &str,
        request: ExecRequest,
    ) -> impl Future<Output = Result<ExecResult>> + Send;

    /// Stops everything of the pod (SIGTERM, SIGKILL after `grace`; SIGKILL at once without),
    /// removes the sandbox, mounts, cgroups and the pod directory. Unknown pods: no-op.
    fn remove_sandbox(
        &self,
        pod_uid: &str,
        grace: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The state of one pod.
    fn status(&self, pod_uid: &str) -> impl Future<Output = Result<RuntimePod>> + Send;

    /// Every pod on the node, adopting (connecting to) supervisors not yet connected, e.g. after
    /// an agent restart. Pods whose supervisor died have `supervisor_alive: false`.
    fn list(&self) -> impl Future<Output = Result<Vec<RuntimePod>>> + Send;

    /// The event stream (one shared receiver: clone it for one consumer only).
    fn events(&self) -> smol::channel::Receiver<Event>;
}
