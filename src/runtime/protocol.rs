//! The supervisor's socket protocol: one JSON object per line in each direction.
//!
//! The agent sends [`Envelope`]s; the supervisor answers each with a [`Message::Reply`] carrying
//! the same id (exec replies come when the process is done, so replies can be out of order) and
//! pushes [`Message::Event`]s to every client that sent [`Request::Subscribe`].
//!
//! A streamed exec ([`Request::ExecStream`]) is answered at once with
//! [`Response::ExecStarted`], whose line carries the process's pipes as `SCM_RIGHTS` ancillary
//! data on its first byte (stdout read end, stderr read end, then the stdin write end if asked
//! for; with `tty`, only the terminal's master, read and written by the client, which also
//! resizes it): the client reads them directly, nothing is copied through the supervisor. The same
//! connection later gets one [`Message::ExecExited`] with the request's id. A client that
//! disconnects before that kills the process. An attach ([`Request::Attach`]) is answered the
//! same way with the container's stdin.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{
    ContainerConfig, ContainerStatus, Event, ExecExit, ExecRequest, ExecResult, ExecStreamRequest,
    InstanceId, RuntimePod,
};

/// Longest request line a supervisor accepts. The agent checks before sending: one
/// oversized container spec (a huge environment) must fail that container, not cut the
/// connection that the whole pod depends on.
pub const MAX_REQUEST: usize = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Start pushing events to this connection; the reply is the state at that moment, so no
    /// exit is missed between a reconnect and the first event.
    Subscribe,
    Status,
    StartContainer(Box<ContainerConfig>),
    Kill {
        id: InstanceId,
        signal: i32,
    },
    Remove {
        id: InstanceId,
    },
    Exec(ExecRequest),
    ExecStream(ExecStreamRequest),
    /// Attach to a running instance's stdin (`kubectl attach -i`): answered with
    /// [`Response::Attached`] and the descriptor to write to; the session lasts as long as the
    /// connection (with `stdinOnce`, its end closes the container's stdin).
    Attach {
        id: InstanceId,
    },
    /// Stop every container (SIGTERM, then SIGKILL after `grace`; SIGKILL at once without),
    /// remove them and the sandbox, then exit.
    Shutdown {
        grace: Option<Duration>,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Subscribe => "subscribe",
            Request::Status => "status",
            Request::StartContainer(_) => "start container",
            Request::Kill { .. } => "kill container",
            Request::Remove { .. } => "remove container",
            Request::Exec(_) => "exec",
            Request::ExecStream(_) => "exec",
            Request::Attach { .. } => "attach",
            Request::Shutdown { .. } => "shutdown",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    State(RuntimePod),
    Started(ContainerStatus),
    /// The runtime got as far as creating the container but it could not run (the kubelet's
    /// `RunContainerError`, e.g. its command or working directory): the message says why.
    RunFailed(String),
    Exec(ExecResult),
    /// The streamed exec runs as `pid` (in the supervisor's pid namespace); its pipes ride
    /// along with this line.
    ExecStarted {
        pid: i32,
    },
    /// The container's stdin rides along with this line: its pipe's write end, or with `tty`
    /// its terminal's master (written and resized by the client; the supervisor reads it).
    Attached {
        tty: bool,
    },
    Done,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// `Err` carries the supervisor's error message.
    Reply {
        id: u64,
        result: Result<Response, String>,
    },
    Event(Event),
    /// The streamed exec started by request `id` ended.
    ExecExited {
        id: u64,
        exit: ExecExit,
    },
}

/// The fork parent of `outpost supervise` prints this as its only stdout line.
pub type ReadyLine = Result<super::types::SandboxInfo, String>;
