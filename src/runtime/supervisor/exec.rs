//! Exec: a process started in a running container ([`super::spawn`]). Two kinds:
//! - captured (probes, hooks): the supervisor reads its output up to a limit and answers when
//!   it has exited and its pipes are closed, or when its timeout hits;
//! - streamed (`outpost exec`): its pipes go to the client at once, the supervisor only
//!   reports the exit.
//!
//! A timed-out exec is killed (kubelet ≥ 1.20), and so is one whose client disconnected. A
//! captured exec runs as the init of its own pid namespace, so whatever it started dies with
//! it ([`Isolation`]). The loop never blocks on an exec.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use super::container::{decode_wait_status, pipe};
use super::error::{Result, SupervisorError};
use super::spawn::Isolation;
use super::Supervisor;
use crate::runtime::protocol::{Message, Response};
use crate::runtime::types::{ExecExit, ExecRequest, ExecResult, ExecStreamRequest, InstanceId};

pub struct ExecRun {
    pub pid: i32,
    pub client: u64,
    pub request: u64,
    instance: InstanceId,
    /// Captured output pipes (none for a streamed exec).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    out: Vec<u8>,
    err: Vec<u8>,
    limit: usize,
    truncated: bool,
    streamed: bool,
    exit_code: Option<i32>,
    pub deadline: Option<Instant>,
}

/// An exec's standard descriptors (stdin `None`: /dev/null; `tty`: stdin is a terminal).
struct Stdio<'a> {
    stdin: Option<&'a OwnedFd>,
    stdout: &'a OwnedFd,
    stderr: &'a OwnedFd,
    tty: bool,
}

/// A plain close-on-exec pipe (both ends blocking): (read end, write end).
pub(super) fn blocking_pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|source| SupervisorError::Sys { what: "pipe2", source })
}

/// A new pseudo-terminal, both ends close-on-exec: (master, terminal). Allocated on the
/// host's devpts (the container's own `/dev/pts` is a new instance the supervisor cannot
/// reach), as a client-side console would be; the process gets it as its controlling terminal.
pub(super) fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let sys = |what| move |source| SupervisorError::Sys { what, source };
    let pty = nix::pty::openpty(None, None).map_err(sys("openpty"))?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys("fcntl"))?;
    }
    Ok((pty.master, pty.slave))
}

impl Supervisor {
    /// Starts `argv` in the running instance `id` with the given stdio.
    fn spawn_in(
        &self,
        id: &InstanceId,
        argv: &[String],
        stdio: Stdio,
        isolation: Isolation,
    ) -> Result<i32> {
        let Stdio { stdin, stdout, stderr, tty } = stdio;
        if self.shutdown.is_some() {
            return Err(SupervisorError::ShuttingDown);
        }
        let instance = self.instance(id)?;
        if instance.status.exit.is_some() {
            return Err(SupervisorError::ContainerNotRunning { container: id.to_string() });
        }
        let template = instance.exec.as_ref().map_err(|reason| {
            SupervisorError::ExecUnsupported { container: id.to_string(), reason }
        })?;
        let pid = template.spawn(
            argv,
            stdin.map(AsRawFd::as_raw_fd),
            stdout.as_raw_fd(),
            stderr.as_raw_fd(),
            isolation,
            tty,
        )?;
        log::debug!("pod {} container {id}: exec {argv:?} as pid {pid}", self.config.pod_name);
        Ok(pid)
    }

    pub(super) fn start_exec(
        &mut self,
        client: u64,
        request: u64,
        exec: ExecRequest,
    ) -> Result<()> {
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        // A probe or hook takes what it started in the background with it.
        let pid = self.spawn_in(
            &exec.id,
            &exec.argv,
            Stdio { stdin: None, stdout: &out_write, stderr: &err_write, tty: false },
            Isolation::OwnPidNamespace,
        )?;
        self.execs.push(ExecRun {
            pid,
            client,
            request,
            instance: exec.id,
            stdout: Some(out_read),
            stderr: Some(err_read),
            out: Vec::new(),
            err: Vec::new(),
            limit: exec.output_limit,
            truncated: false,
            streamed: false,
            exit_code: None,
            deadline: Some(Instant::now() + exec.timeout),
        });
        Ok(())
    }

    /// Starts a streamed exec and answers with its pipes at once.
    pub(super) fn start_exec_stream(
        &mut self,
        client: u64,
        request: u64,
        exec: ExecStreamRequest,
    ) -> Result<()> {
        let (fds, pid) = if exec.tty {
            // The terminal is the process's stdin, stdout and stderr (and its controlling
            // terminal); the client gets the master. Without stdin, nobody writes to it.
            let (master, terminal) = open_pty()?;
            let pid = self.spawn_in(
                &exec.id,
                &exec.argv,
                Stdio { stdin: Some(&terminal), stdout: &terminal, stderr: &terminal, tty: true },
                Isolation::None,
            )?;
            (vec![master], pid)
        } else {
            let (out_read, out_write) = blocking_pipe()?;
            let (err_read, err_write) = blocking_pipe()?;
            let stdin = if exec.stdin { Some(blocking_pipe()?) } else { None };
            let pid = self.spawn_in(
                &exec.id,
                &exec.argv,
                Stdio {
                    stdin: stdin.as_ref().map(|(read, _)| read),
                    stdout: &out_write,
                    stderr: &err_write,
                    tty: false,
                },
                Isolation::None,
            )?;
            let mut fds = vec![out_read, err_read];
            fds.extend(stdin.map(|(_, write)| write));
            (fds, pid)
        };
        self.reply_with_fds(client, request, Ok(Response::ExecStarted { pid }), fds);
        self.execs.push(ExecRun {
            pid,
            client,
            request,
            instance: exec.id,
            stdout: None,
            stderr: None,
            out: Vec::new(),
            err: Vec::new(),
            limit: 0,
            truncated: false,
            streamed: true,
            exit_code: None,
            deadline: exec.timeout.map(|t| Instant::now() + t),
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

    /// Answers finished execs; kills timed-out ones and those whose client is gone.
    pub(super) fn settle_execs(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.execs.len() {
            let run = &self.execs[i];
            let done = run.exit_code.is_some() && run.stdout.is_none() && run.stderr.is_none();
            let timed_out = !done && run.deadline.is_some_and(|d| now >= d);
            let orphaned = !done && !self.connected(run.client);
            if !done && !timed_out && !orphaned {
                i += 1;
                continue;
            }
            let run = self.execs.swap_remove(i);
            if timed_out || orphaned {
                if run.exit_code.is_none() {
                    // SAFETY: kill(2) on our own child, which is not reaped (exit_code unset),
                    // so the pid cannot have been reused.
                    unsafe { libc::kill(run.pid, libc::SIGKILL) };
                    self.abandoned.insert(run.pid);
                }
                let why = if timed_out { "timed out" } else { "lost its client" };
                log::info!(
                    "pod {} container {}: exec pid {} {why}, killed",
                    self.config.pod_name,
                    run.instance,
                    run.pid
                );
                if orphaned {
                    continue;
                }
            }
            let exit_code = if timed_out { None } else { run.exit_code };
            if run.streamed {
                let exit = ExecExit { exit_code, timed_out };
                self.send_to(
                    run.client,
                    &Message::ExecExited { id: run.request, exit },
                    Vec::new(),
                );
                continue;
            }
            let result = ExecResult {
                exit_code,
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
        self.execs.iter().filter_map(|e| e.deadline).min()
    }
}
