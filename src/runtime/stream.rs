//! The client side of a streamed exec (`outpost exec`): a connection of its own to the pod's
//! supervisor, the process's pipes received over it (`SCM_RIGHTS`), then its exit. Blocking:
//! the caller is a command-line process, not the agent.

use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::error::{Result, RuntimeError};
use super::protocol::{Envelope, Message, Request, Response};
use super::types::{ExecExit, ExecStreamRequest, InstanceId};
use super::SupervisorRuntime;

/// A running streamed exec. Read `stdout` and `stderr` as the process writes them (they end
/// when the process and whatever inherited them closed them); write `stdin` if asked for.
/// With a terminal, `stdout` is its master (reads end with `EIO` once every process closed
/// the terminal), `stderr` is `None` and `stdin` a second handle on the master.
pub struct ExecStream {
    pub pid: i32,
    pub stdout: File,
    pub stderr: Option<File>,
    pub stdin: Option<File>,
    socket: Connection,
    id: u64,
}

/// One request id per connection is enough: it only ever carries this exec.
const REQUEST_ID: u64 = 1;

impl SupervisorRuntime {
    /// Starts `request` in the pod's supervisor; returns once the process runs.
    pub fn exec_stream(&self, pod_uid: &str, request: ExecStreamRequest) -> Result<ExecStream> {
        let (stdin, tty) = (request.stdin, request.tty);
        let (socket, response, fds) =
            self.open_request(pod_uid, Request::ExecStream(request), "exec")?;
        let Response::ExecStarted { pid } = response else { return Err(socket.protocol()) };
        let mut fds = fds.into_iter().map(File::from);
        let stdout = fds.next().ok_or_else(|| socket.protocol())?;
        if tty {
            let stdin =
                if stdin { Some(stdout.try_clone().map_err(|_| socket.protocol())?) } else { None };
            return Ok(ExecStream { pid, stdout, stderr: None, stdin, socket, id: REQUEST_ID });
        }
        let stderr = Some(fds.next().ok_or_else(|| socket.protocol())?);
        let stdin = if stdin { Some(fds.next().ok_or_else(|| socket.protocol())?) } else { None };
        Ok(ExecStream { pid, stdout, stderr, stdin, socket, id: REQUEST_ID })
    }
}

impl SupervisorRuntime {
    /// A connection of its own to the pod's supervisor carrying one `request`: the reply and
    /// the descriptors that came with it, or the supervisor's refusal as the error.
    fn open_request(
        &self,
        pod_uid: &str,
        request: Request,
        operation: &'static str,
    ) -> Result<(Connection, Response, Vec<OwnedFd>)> {
        let dir = self.pod_dir(pod_uid)?;
        let stream = UnixStream::connect(dir.socket()).map_err(|source| RuntimeError::Connect {
            pod_uid: pod_uid.to_string(),
            path: dir.socket(),
            source,
        })?;
        let mut socket = Connection { pod_uid: pod_uid.to_string(), stream, input: Vec::new() };
        socket.send(&Envelope { id: REQUEST_ID, request })?;
        let (message, fds) = socket.receive()?;
        match message {
            Message::Reply { id: REQUEST_ID, result: Ok(response) } => Ok((socket, response, fds)),
            Message::Reply { id: REQUEST_ID, result: Err(message) } => {
                Err(RuntimeError::Supervisor { pod_uid: pod_uid.to_string(), operation, message })
            }
            _ => Err(socket.protocol()),
        }
    }
}

/// An attach session's hold on a container's stdin ([`SupervisorRuntime::attach_stdin`]):
/// write to `stdin` (with `tty`, the terminal's master: also resize it); the session ends when
/// `session` is dropped (with `stdinOnce`, that closes the container's stdin).
pub struct AttachedStdin {
    pub stdin: File,
    pub tty: bool,
    pub session: AttachSession,
}

/// The connection an attach session lasts as long as.
pub struct AttachSession {
    _socket: UnixStream,
}

impl SupervisorRuntime {
    /// Attaches to the stdin the supervisor keeps for instance `id` (`stdin: true`); the
    /// supervisor's message says why not otherwise (not enabled, closed by `stdinOnce`).
    pub fn attach_stdin(&self, pod_uid: &str, id: InstanceId) -> Result<AttachedStdin> {
        let (socket, response, fds) =
            self.open_request(pod_uid, Request::Attach { id }, "attach")?;
        let Response::Attached { tty } = response else { return Err(socket.protocol()) };
        let stdin = fds.into_iter().next().map(File::from).ok_or_else(|| socket.protocol())?;
        Ok(AttachedStdin { stdin, tty, session: AttachSession { _socket: socket.stream } })
    }
}

impl ExecStream {
    /// Waits for the process to end (its output may still be in the pipes).
    pub fn wait(&mut self) -> Result<ExecExit> {
        loop {
            match self.socket.receive()?.0 {
                Message::ExecExited { id, exit } if id == self.id => return Ok(exit),
                Message::Reply { id, result: Err(message) } if id == self.id => {
                    return Err(RuntimeError::Supervisor {
                        pod_uid: self.socket.pod_uid.clone(),
                        operation: "exec",
                        message,
                    })
                }
                _ => {}
            }
        }
    }
}

/// The supervisor's side of a streamed exec, for an async caller (the agent's API): it answers
/// once, with the exit. Dropping it before kills the process.
pub struct ExecWaiter {
    pod_uid: String,
    socket: smol::Async<UnixStream>,
    input: Vec<u8>,
    id: u64,
}

impl ExecStream {
    /// Splits off the connection to wait on it asynchronously; the pipes stay with the caller.
    pub fn into_parts(self) -> (File, Option<File>, Option<File>, Result<ExecWaiter>) {
        let Connection { pod_uid, stream, input } = self.socket;
        let waiter = smol::Async::new(stream)
            .map(|socket| ExecWaiter { pod_uid: pod_uid.clone(), socket, input, id: self.id })
            .map_err(|_| RuntimeError::SupervisorGone { pod_uid });
        (self.stdout, self.stderr, self.stdin, waiter)
    }
}

impl ExecWaiter {
    /// Waits for the process to end (its output may still be in the pipes).
    pub async fn wait(mut self) -> Result<ExecExit> {
        use smol::io::AsyncReadExt;
        let gone = |w: &Self| RuntimeError::SupervisorGone { pod_uid: w.pod_uid.clone() };
        loop {
            while let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                let message = serde_json::from_slice(&line).map_err(|_| {
                    RuntimeError::Protocol { pod_uid: self.pod_uid.clone(), operation: "exec" }
                })?;
                match message {
                    Message::ExecExited { id, exit } if id == self.id => return Ok(exit),
                    Message::Reply { id, result: Err(message) } if id == self.id => {
                        return Err(RuntimeError::Supervisor {
                            pod_uid: self.pod_uid.clone(),
                            operation: "exec",
                            message,
                        })
                    }
                    _ => {}
                }
            }
            let mut buf = [0u8; 4096];
            match self.socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(gone(&self)),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
            }
        }
    }
}

struct Connection {
    pod_uid: String,
    stream: UnixStream,
    input: Vec<u8>,
}

impl Connection {
    fn protocol(&self) -> RuntimeError {
        RuntimeError::Protocol { pod_uid: self.pod_uid.clone(), operation: "exec" }
    }

    fn gone(&self) -> RuntimeError {
        RuntimeError::SupervisorGone { pod_uid: self.pod_uid.clone() }
    }

    fn send(&mut self, envelope: &Envelope) -> Result<()> {
        let mut line = serde_json::to_vec(envelope).map_err(|_| self.protocol())?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(|_| self.gone())
    }

    /// The next message and the descriptors that came with it.
    fn receive(&mut self) -> Result<(Message, Vec<OwnedFd>)> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut fds = Vec::new();
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                let message = serde_json::from_slice(&line).map_err(|_| self.protocol())?;
                return Ok((message, fds));
            }
            let mut buf = [0u8; 4096];
            let mut control = nix::cmsg_space!([RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let received = recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let (n, new_fds) = match received {
                Ok(msg) => {
                    let mut new_fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(|_| self.protocol())? {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            // SAFETY: the kernel just installed these descriptors for us.
                            new_fds.extend(
                                raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    (msg.bytes, new_fds)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Err(self.gone()),
            };
            fds.extend(new_fds);
            if n == 0 {
                return Err(self.gone());
            }
            self.input.extend_from_slice(&buf[..n]);
        }
    }
}
