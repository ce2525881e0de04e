//! Exec: a process started in a running container (libcontainer tenant), answered when it has
//! exited and its output pipes are closed, or when its timeout hits. The loop never blocks on it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use super::container::{decode_wait_status, pipe};
use super::error::{IoContext, Result, SupervisorError};
use super::executor::AppExecutor;
use super::{restore_after_create, Supervisor};
use crate::runtime::protocol::Response;
use crate::runtime::types::{ExecRequest, ExecResult, InstanceId};

pub struct ExecRun {
    pub pid: i32,
    pub client: u64,
    pub request: u64,
    instance: InstanceId,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    out: Vec<u8>,
    err: Vec<u8>,
    limit: usize,
    truncated: bool,
    exit_code: Option<i32>,
    pub deadline: Instant,
}

impl Supervisor {
    pub(super) fn start_exec(
        &mut self,
        client: u64,
        request: u64,
        exec: ExecRequest,
    ) -> Result<()> {
        let id = &exec.id;
        if self.shutdown.is_some() {
            return Err(SupervisorError::ShuttingDown);
        }
        if self.instance(id)?.status.exit.is_some() {
            return Err(SupervisorError::ContainerNotRunning { container: id.to_string() });
        }
        if exec.argv.is_empty() {
            return Err(SupervisorError::EmptyCommand { container: id.to_string() });
        }
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let state = self.dir.state_root();
        let built = ContainerBuilder::new(id.key(), SyscallType::default())
            .with_root_path(&state)
            .map_err(SupervisorError::lc("exec in", id))?
            .with_stdin(File::open("/dev/null").io("open", "/dev/null")?)
            .with_stdout(out_write)
            .with_stderr(err_write)
            .with_executor(AppExecutor)
            .as_tenant()
            .with_container_args(exec.argv.clone())
            .with_detach(true)
            .build();
        restore_after_create(&self.own_oom_score_adj);
        remove_tenant_sockets(&state.join(id.key()));
        let pid = built.map_err(SupervisorError::lc("exec in", id))?.as_raw();
        log::debug!(
            "pod {} container {id}: exec {:?} as pid {pid}",
            self.config.pod_name,
            exec.argv
        );
        self.execs.push(ExecRun {
            pid,
            client,
            request,
            instance: id.clone(),
            stdout: Some(out_read),
            stderr: Some(err_read),
            out: Vec::new(),
            err: Vec::new(),
            limit: exec.output_limit,
            truncated: false,
            exit_code: None,
            deadline: Instant::now() + exec.timeout,
        });
        Ok(())
    }

    /// Reads one exec pipe until it would block; closes it at EOF.
    pub(super) fn pump_exec(&mut self, pid: i32, stdout: bool) {
        let Some(run) = self.execs.iter_mut().find(|e| e.pid == pid) else { return };
        let (fd, buf) =
            if stdout { (&mut run.stdout, &mut run.out) } else { (&mut run.stderr, &mut run.err) };
        let mut chunk = [0u8; 16 * 1024];
        while let Some(f) = fd {
            match nix::unistd::read(f.as_raw_fd(), &mut chunk) {
                Ok(0) => *fd = None,
                Ok(n) => {
                    let room = run.limit.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                    run.truncated |= n > room;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => *fd = None,
            }
        }
    }

    /// An exec process was reaped; returns false if `pid` is not an exec.
    pub(super) fn on_exec_exit(&mut self, pid: i32, wait_status: i32) -> bool {
        if self.abandoned.remove(&pid) {
            return true;
        }
        match self.execs.iter_mut().find(|e| e.pid == pid) {
            Some(run) => {
                run.exit_code = Some(decode_wait_status(wait_status).0);
                true
            }
            None => false,
        }
    }

    /// Answers finished execs, and timed-out ones after killing them.
    pub(super) fn settle_execs(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.execs.len() {
            let run = &self.execs[i];
            let done = run.exit_code.is_some() && run.stdout.is_none() && run.stderr.is_none();
            let timed_out = !done && now >= run.deadline;
            if !done && !timed_out {
                i += 1;
                continue;
            }
            let run = self.execs.swap_remove(i);
            if timed_out {
                if run.exit_code.is_none() {
                    // SAFETY: kill(2) on our own child, which is not reaped (exit_code unset),
                    // so the pid cannot have been reused.
                    unsafe { libc::kill(run.pid, libc::SIGKILL) };
                    self.abandoned.insert(run.pid);
                }
                log::info!(
                    "pod {} container {}: exec pid {} timed out",
                    self.config.pod_name,
                    run.instance,
                    run.pid
                );
            }
            let result = ExecResult {
                exit_code: if timed_out { None } else { run.exit_code },
                timed_out,
                stdout: String::from_utf8_lossy(&run.out).into_owned(),
                stderr: String::from_utf8_lossy(&run.err).into_owned(),
                truncated: run.truncated,
            };
            self.reply(run.client, run.request, Ok(Response::Exec(result)));
        }
    }

    /// The nearest exec deadline, to bound the poll timeout.
    pub(super) fn next_exec_deadline(&self) -> Option<Instant> {
        self.execs.iter().map(|e| e.deadline).min()
    }
}

/// libcontainer leaves a `tenant-notify-*.sock` per exec in the container's state dir.
fn remove_tenant_sockets(state_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("tenant-notify-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
