//! The supervisor's one loop: poll, reap, pump logs and exec output, serve requests.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use libcontainer::container::Container;

use super::container::decode_wait_status;
use super::error::SupervisorError;
use super::logs::Pumped;
use super::namespaces;
use super::sandbox::PAUSE_ID;
use super::{cgroups, overlay, sigchld, Shutdown, Supervisor};
use crate::runtime::protocol::{Envelope, Request, Response};
use crate::runtime::types::{Event, InstanceId, RuntimePod, SandboxDeath};

#[derive(Clone, Copy)]
enum Source {
    Wake,
    Listen,
    Client(u64),
    Log(usize),
    Exec(i32, bool),
}

impl Supervisor {
    pub fn run(&mut self) {
        while !self.quit {
            let mut fds = Vec::new();
            let mut sources = Vec::new();
            let mut add = |fd: RawFd, events: i16, source: Source| {
                fds.push(libc::pollfd { fd, events, revents: 0 });
                sources.push(source);
            };
            add(self.wake.as_raw_fd(), libc::POLLIN, Source::Wake);
            add(self.listener.as_raw_fd(), libc::POLLIN, Source::Listen);
            for c in &self.clients {
                let out = if c.output.is_empty() { 0 } else { libc::POLLOUT };
                add(c.stream.as_raw_fd(), libc::POLLIN | out, Source::Client(c.id));
            }
            for (i, p) in self.pipes.iter().enumerate() {
                add(p.fd.as_raw_fd(), libc::POLLIN, Source::Log(i));
            }
            for e in &self.execs {
                if let Some(fd) = &e.stdout {
                    add(fd.as_raw_fd(), libc::POLLIN, Source::Exec(e.pid, true));
                }
                if let Some(fd) = &e.stderr {
                    add(fd.as_raw_fd(), libc::POLLIN, Source::Exec(e.pid, false));
                }
            }
            if std::mem::take(&mut self.trim) {
                super::memory::trim();
            }
            let timeout = self.poll_timeout(Instant::now());
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                // EINTR from SIGCHLD: the self-pipe is readable on the next round.
                continue;
            }
            let mut lines = Vec::new();
            let mut closed_pipes = Vec::new();
            for (fd, source) in fds.iter().zip(sources) {
                if fd.revents == 0 {
                    continue;
                }
                match source {
                    Source::Wake => {
                        sigchld::drain(&self.wake);
                        self.reap();
                    }
                    Source::Listen => self.accept_clients(),
                    Source::Client(id) => {
                        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
                            c.flush();
                            lines.extend(c.read_lines().into_iter().map(|l| (id, l)));
                        }
                    }
                    Source::Log(i) => {
                        if self.pump_log(i) {
                            closed_pipes.push(i);
                        }
                    }
                    Source::Exec(pid, stdout) => self.pump_exec(pid, stdout),
                }
            }
            // Indices stay valid: requests only append pipes, removal goes backwards.
            for (client, line) in lines {
                self.handle(client, &line);
            }
            for i in closed_pipes.into_iter().rev() {
                let pipe = self.pipes.remove(i);
                if !self.pipes.iter().any(|p| p.instance == pipe.instance) {
                    self.log_files.remove(&pipe.instance);
                }
            }
            let now = Instant::now();
            self.settle_execs(now);
            self.settle_attachments();
            self.progress_shutdown(now);
            self.clients.retain(|c| !c.closed);
        }
        self.flush_before_exit();
    }

    fn poll_timeout(&self, now: Instant) -> i32 {
        let shutdown = self.shutdown.as_ref().and_then(|s| s.kill_at);
        match [self.next_exec_deadline(), shutdown].into_iter().flatten().min() {
            // Round up so the deadline has passed when poll returns.
            Some(at) => {
                at.saturating_duration_since(now).as_millis().min(i32::MAX as u128 - 1) as i32 + 1
            }
            None => -1,
        }
    }

    /// Returns true at EOF.
    pub(super) fn pump_log(&mut self, i: usize) -> bool {
        let pipe = &mut self.pipes[i];
        match self.log_files.get_mut(&pipe.instance) {
            Some(file) => matches!(pipe.pump(file), Pumped::Eof),
            None => true,
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            self.on_child_exit(pid, status);
        }
    }

    fn on_child_exit(&mut self, pid: i32, status: i32) {
        if self.on_exec_exit(pid, status) {
            return;
        }
        if Some(pid) == self.info.pause_pid {
            self.on_pause_exit(status);
            return;
        }
        let key = self
            .instances
            .iter()
            .find(|(_, i)| i.status.pid == pid && i.status.exit.is_none())
            .map(|(k, _)| k.clone());
        match key {
            Some(key) => self.on_instance_exit(&key, status),
            None => log::debug!("pod {}: reaped orphan {pid}", self.config.pod_name),
        }
    }

    fn on_pause_exit(&mut self, status: i32) {
        self.sandbox_alive = false;
        if self.shutdown.is_some() {
            return;
        }
        let (exit_code, _) = decode_wait_status(status);
        log::warn!(
            "pod {}: the sandbox's pause (pid {}) exited with {exit_code}",
            self.config.pod_name,
            self.info.pause_pid.unwrap_or(0)
        );
        for id in self.running() {
            if let Err(e) = self.kill(&id, libc::SIGKILL) {
                log::warn!("pod {} container {id}: {e}", self.config.pod_name);
            }
        }
        let cause = SandboxDeath::PauseExited { exit_code };
        self.broadcast(Event::SandboxDied { pod_uid: self.config.pod_uid.clone(), cause });
    }

    fn running(&self) -> Vec<InstanceId> {
        self.instances
            .values()
            .filter(|i| i.status.exit.is_none())
            .map(|i| i.status.id.clone())
            .collect()
    }

    pub(super) fn state(&self) -> RuntimePod {
        let mut containers: Vec<_> = self.instances.values().map(|i| i.status.clone()).collect();
        containers.sort_by(|a, b| a.id.cmp(&b.id));
        RuntimePod {
            pod_uid: self.config.pod_uid.clone(),
            sandbox: Some(self.info.clone()),
            supervisor_alive: true,
            sandbox_running: self.sandbox_alive,
            containers,
            termination_grace_period_seconds: self.config.termination_grace_period_seconds,
            userns: self.config.userns.clone(),
        }
    }

    fn handle(&mut self, client: u64, line: &[u8]) {
        let envelope: Envelope = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(source) => {
                return self.reply(
                    client,
                    0,
                    Err(SupervisorError::BadRequest { source }.to_string()),
                )
            }
        };
        let id = envelope.id;
        let result = match envelope.request {
            Request::Subscribe => {
                self.subscribe(client);
                Ok(Response::State(self.state()))
            }
            Request::Status => Ok(Response::State(self.state())),
            Request::StartContainer(config) => match self.start_container(*config) {
                Ok(status) => Ok(Response::Started(status)),
                Err(e) if e.is_run_failure() => {
                    log::warn!("pod {}: request {id} failed: {e}", self.config.pod_name);
                    Ok(Response::RunFailed(e.to_string()))
                }
                Err(e) => Err(e),
            },
            Request::Kill { id, signal } => self.kill(&id, signal).map(|()| Response::Done),
            Request::Remove { id } => self.remove(&id).map(|()| Response::Done),
            Request::Exec(exec) => match self.start_exec(client, id, exec) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::ExecStream(exec) => match self.start_exec_stream(client, id, exec) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::Attach { id: instance } => match self.attach(client, id, &instance) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::Shutdown { grace } => return self.begin_shutdown(client, id, grace),
        };
        self.trim = true;
        if let Err(e) = &result {
            log::warn!("pod {}: request {id} failed: {e}", self.config.pod_name);
        }
        self.reply(client, id, result.map_err(|e| e.to_string()));
    }

    fn begin_shutdown(&mut self, client: u64, request: u64, grace: Option<Duration>) {
        if self.shutdown.is_some() {
            return self.reply(client, request, Err(SupervisorError::ShuttingDown.to_string()));
        }
        log::info!("pod {}: shutting down (grace {grace:?})", self.config.pod_name);
        let signal = if grace.is_some() { libc::SIGTERM } else { libc::SIGKILL };
        for id in self.running() {
            if let Err(e) = self.kill(&id, signal) {
                log::warn!("pod {} container {id}: {e}", self.config.pod_name);
            }
        }
        self.shutdown =
            Some(Shutdown { client, request, kill_at: grace.map(|g| Instant::now() + g) });
        self.progress_shutdown(Instant::now());
    }

    /// Escalates to SIGKILL after the grace period; tears down once nothing runs.
    fn progress_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            return;
        }
        let running = self.running();
        let Some(shutdown) = &mut self.shutdown else { return };
        if !running.is_empty() {
            if shutdown.kill_at.is_some_and(|at| now >= at) {
                shutdown.kill_at = None;
                for id in running {
                    if let Err(e) = self.kill(&id, libc::SIGKILL) {
                        log::warn!("pod {} container {id}: {e}", self.config.pod_name);
                    }
                }
            }
            return;
        }
        let (client, request) = (shutdown.client, shutdown.request);
        self.teardown();
        self.reply(client, request, Ok(Response::Done));
        self.quit = true;
    }

    /// Everything but the logs and the supervisor's own log goes.
    fn teardown(&mut self) {
        for run in std::mem::take(&mut self.execs) {
            self.abandoned.insert(run.pid);
            self.reply(run.client, run.request, Err(SupervisorError::ShuttingDown.to_string()));
        }
        for i in 0..self.pipes.len() {
            self.pump_log(i);
        }
        self.pipes.clear();
        self.log_files.clear();
        let ids: Vec<InstanceId> = self.instances.values().map(|i| i.status.id.clone()).collect();
        for id in ids {
            if let Err(e) = self.remove(&id) {
                log::warn!("pod {} container {id}: {e}", self.config.pod_name);
                overlay::unmount(&self.dir.container_dir(&id).join("rootfs"));
            }
        }
        if let Some(pause) = self.info.pause_pid {
            if self.sandbox_alive {
                // SAFETY: kill and a blocking waitpid on our own unreaped child.
                unsafe {
                    libc::kill(pause, libc::SIGKILL);
                    libc::waitpid(pause, std::ptr::null_mut(), 0);
                }
            }
            match Container::load(self.dir.state_root().join(PAUSE_ID)) {
                Ok(mut pause) => {
                    if let Err(e) = pause.delete(true) {
                        log::warn!("pod {}: delete sandbox: {e}", self.config.pod_name);
                    }
                }
                Err(e) => log::warn!("pod {}: load sandbox: {e}", self.config.pod_name),
            }
        }
        self.sandbox_alive = false;
        namespaces::release(&self.dir);
        cgroups::remove_pod(&self.config.pod_cgroup());
        let _ = std::fs::remove_file(self.dir.socket());
        let _ = std::fs::remove_file(self.dir.supervisor_record());
        for dir in [self.dir.state_root(), self.dir.pause_bundle(), self.dir.containers()] {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!("pod {}: remove {}: {e}", self.config.pod_name, dir.display());
            }
        }
        log::info!("pod {}: sandbox removed", self.config.pod_name);
    }
}
