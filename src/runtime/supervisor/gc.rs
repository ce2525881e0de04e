//! `outpost supervise --gc --pod-dir DIR`: recovery after a supervisor died. A fresh
//! single-threaded process loads what libcontainer recorded, kills and deletes it, unmounts
//! the overlays, unpins the pod's namespaces and removes the pod cgroup. The containers are no longer anyone's children
//! here (they were re-parented to PID 1), so their exit codes are gone.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libcontainer::container::Container;

use super::error::{IoContext, Result, SupervisorError};
use super::{cgroups, namespaces, overlay};
use crate::runtime::durable;
use crate::runtime::paths::{PodDir, SupervisorRecord};
use crate::runtime::procfs;
use crate::runtime::types::SandboxConfig;

/// How long to wait for one SIGKILLed process to disappear.
const KILL_WAIT_MS: i32 = 5000;

pub fn gc(pod_dir: &Path) -> Result<()> {
    let dir = PodDir::new(pod_dir);
    let config: SandboxConfig =
        durable::read_json(&dir.sandbox_config()).io("read", dir.sandbox_config())?;
    // A supervisor that still lives (hung, or the agent gave up on it) must not race us.
    if let Ok(record) = durable::read_json::<SupervisorRecord>(&dir.supervisor_record()) {
        if procfs::is_same_process(record.pid, record.starttime) {
            log::warn!(
                "pod {}: killing the unresponsive supervisor {}",
                config.pod_name,
                record.pid
            );
            kill_and_wait(record.pid);
        }
    }
    let mut first_error = None;
    if let Ok(entries) = std::fs::read_dir(dir.state_root()) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Err(e) = destroy(&entry.path(), &id) {
                log::error!("pod {} container {id}: {e}", config.pod_name);
                first_error.get_or_insert(e);
            } else {
                log::info!("pod {} container {id}: killed and deleted", config.pod_name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.containers()) {
        for entry in entries.flatten() {
            overlay::unmount(&entry.path().join("rootfs"));
        }
    }
    cgroups::remove_pod(&config.pod_cgroup());
    namespaces::release(&dir);
    let _ = std::fs::remove_file(dir.socket());
    let _ = std::fs::remove_file(dir.supervisor_record());
    for d in [dir.state_root(), dir.pause_bundle(), dir.containers()] {
        match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                first_error.get_or_insert(SupervisorError::Io {
                    what: "remove",
                    path: d,
                    source: e,
                });
            }
            _ => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn destroy(state: &Path, id: &str) -> Result<()> {
    let lc = |operation| SupervisorError::lc(operation, id);
    let mut container = Container::load(state.to_path_buf()).map_err(lc("load"))?;
    if let Some(pid) = container.pid() {
        let _ = container.kill(
            libcontainer::signal::Signal::try_from(libc::SIGKILL)
                .map_err(|_| SupervisorError::InvalidSignal { signal: 9 })?,
            true,
        );
        wait_gone(pid.as_raw());
    }
    container.delete(true).map_err(lc("delete"))
}

fn kill_and_wait(pid: i32) {
    // SAFETY: kill(2) has no memory effects; the pid was checked against its start time.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
}

/// Waits (bounded) until `pid` has terminated, with a pidfd: not our child, so no waitpid.
fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: fd is a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, KILL_WAIT_MS) };
}
