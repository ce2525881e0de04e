//! The fork server: per-pod supervisors are forked from one long-lived, single-threaded child
//! of the agent instead of exec'd, so they all share the pages a fresh exec of the PIE binary
//! dirties at start (the relocated `.data.rel.ro`, ~330 KB, and the like) with the agent,
//! copy-on-write and never written again.
//!
//! `outpost run` calls [`ForkServer::start`] first thing, before any thread exists (the agent
//! cannot fork a supervisor itself: it is multi-threaded, and a child forked from it could
//! inherit a lock held by another thread). The server does nothing but answer requests on a
//! `SOCK_SEQPACKET` socketpair, one datagram each way:
//!
//! - request: the pod directory's path (bytes);
//! - reply: the forked child's pid as 4 bytes (native endian) with its stdout and stderr read
//!   ends as `SCM_RIGHTS`, or `-errno` without descriptors if the fork failed.
//!
//! The child runs what `outpost supervise --pod-dir DIR` runs, in-process: its parent prints
//! the ready line once the sandbox runs and exits (reaped by the server, which ignores
//! SIGCHLD), its child is the supervisor, re-parented away from the server. The server never
//! waits for a sandbox: the agent reads the ready line from the pipes it received, so pods
//! start in parallel. The server dies with the agent (`PR_SET_PDEATHSIG`) and when its socket
//! closes; once it is gone the agent execs `outpost supervise` instead.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

mod title;

/// The longest request (a pod directory path; the socket path under it is limited to 107).
const MAX_REQUEST: usize = 4096;

/// What `ps` shows for the server (`comm`, at most 15 bytes).
const SERVER_NAME: &[u8] = b"outpost-fork\0";

#[derive(Debug, thiserror::Error)]
pub enum ForkServerError {
    /// Forking a multi-threaded process could copy a lock another thread holds.
    #[error("the fork server must start before any thread ({threads} threads run)")]
    Threads { threads: usize },
    #[error("fork server: {what}: {source}")]
    Sys { what: &'static str, source: Errno },
    /// The server exited (killed, or the agent is shutting down).
    #[error("the fork server is gone")]
    Gone,
    #[error("the fork server could not fork a supervisor: {0}")]
    Fork(Errno),
    #[error("the fork server answered without the supervisor's pipes")]
    Protocol,
    #[error("pod directory path of {len} bytes is too long for the fork server")]
    PathTooLong { len: usize },
}

/// The agent's end. `spawn` is blocking but short (the server answers right after its fork).
pub struct ForkServer {
    pid: i32,
    /// `None` once the server is known to be gone.
    socket: Mutex<Option<OwnedFd>>,
}

/// A forked `supervise` process: its pid and the read ends of its stdout and stderr.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl ForkServer {
    /// Forks the server. Call before any thread exists; fails (and forks nothing) otherwise.
    pub fn start() -> Result<Self, ForkServerError> {
        let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(0);
        if threads != 1 {
            return Err(ForkServerError::Threads { threads });
        }
        let (agent_end, server_end) = socketpair()?;
        let agent = nix::unistd::getpid();
        // SAFETY: the process is single-threaded (checked above), so the child may run any code.
        match unsafe { nix::unistd::fork() }
            .map_err(|source| ForkServerError::Sys { what: "fork", source })?
        {
            nix::unistd::ForkResult::Parent { child } => {
                drop(server_end);
                Ok(Self { pid: child.as_raw(), socket: Mutex::new(Some(agent_end)) })
            }
            nix::unistd::ForkResult::Child => {
                drop(agent_end);
                server_main(server_end, agent)
            }
        }
    }

    /// A client of a server already running on `socket` (tests serve from a thread).
    #[cfg(test)]
    fn with_socket(pid: i32, socket: OwnedFd) -> Self {
        Self { pid, socket: Mutex::new(Some(socket)) }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Has the server fork a `supervise` process for `pod_dir`.
    pub fn spawn(&self, pod_dir: &Path) -> Result<Spawned, ForkServerError> {
        let mut socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = socket.as_ref() else { return Err(ForkServerError::Gone) };
        let result = request(fd, pod_dir);
        if matches!(result, Err(ForkServerError::Gone)) {
            *socket = None;
            log::warn!(
                "the fork server (pid {}) is gone: supervisors are exec'd from now on",
                self.pid
            );
            // Its socket closed as it exited: reap it, or it stays a zombie of the agent.
            if self.pid > 0 {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
            }
        }
        result
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), ForkServerError> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| ForkServerError::Sys { what: "socketpair", source })
}

/// One request and its reply.
fn request(socket: &OwnedFd, pod_dir: &Path) -> Result<Spawned, ForkServerError> {
    let path = pod_dir.as_os_str().as_bytes();
    if path.len() > MAX_REQUEST {
        return Err(ForkServerError::PathTooLong { len: path.len() });
    }
    loop {
        match socket::send(socket.as_raw_fd(), path, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(_) => return Err(ForkServerError::Gone),
        }
    }
    let mut reply = [0u8; 4];
    let mut control = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut reply)];
        match socket::recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(|_| ForkServerError::Protocol)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these descriptors for us.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (msg.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return Err(ForkServerError::Gone),
        }
    };
    if n == 0 {
        return Err(ForkServerError::Gone);
    }
    let pid = i32::from_ne_bytes(reply);
    if n != reply.len() {
        return Err(ForkServerError::Protocol);
    }
    if pid <= 0 {
        return Err(ForkServerError::Fork(Errno::from_raw(-pid)));
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(stdout), Some(stderr)) => Ok(Spawned { pid, stdout, stderr }),
        _ => Err(ForkServerError::Protocol),
    }
}

/// Answers requests on `socket` with `spawn` until the socket closes or breaks.
fn serve(socket: &OwnedFd, spawn: &mut dyn FnMut(&Path) -> nix::Result<Spawned>) {
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        // Idle between forks for the agent's life: only this loop and fork's path run here.
        crate::code_pages::unmap_idle_code();
        let n = match socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        let path = Path::new(OsStr::from_bytes(&buf[..n]));
        let sent = match spawn(path) {
            Ok(child) => {
                let raw = [child.stdout.as_raw_fd(), child.stderr.as_raw_fd()];
                send_reply(socket, child.pid, &[ControlMessage::ScmRights(&raw)])
                // Our copies of the read ends close here: the agent holds its own.
            }
            Err(e) => send_reply(socket, -(e as i32), &[]),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn send_reply(socket: &OwnedFd, value: i32, control: &[ControlMessage]) -> nix::Result<usize> {
    let data = value.to_ne_bytes();
    loop {
        match socket::sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&data)],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
}

/// The server process: never returns.
fn server_main(socket: OwnedFd, agent: nix::unistd::Pid) -> ! {
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The agent may have died before the line above: then nothing would kill us.
    if nix::unistd::getppid() != agent {
        std::process::exit(0);
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, SERVER_NAME.as_ptr(), 0, 0, 0) };
    // The agent's stderr stays (for panics); nothing else of the agent's is kept open.
    let _ = redirect(0, Path::new("/dev/null"));
    let _ = redirect(1, Path::new("/dev/null"));
    close_other_fds(&[socket.as_raw_fd()]);
    // Children are reaped by the kernel: the server never waits.
    // SAFETY: setting a standard disposition for SIGCHLD.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // Compiled once here, every supervisor forked later has the filter most containers use.
    crate::runtime::spec::seccomp::warm_default();
    // The pages the agent rewrites from now on stay here as private copies: give back what is
    // dead (free heap, the stack below this frame: clap's and the logger's start-up, libseccomp's
    // work).
    super::supervisor::trim_memory();
    serve(&socket, &mut fork_supervisor);
    std::process::exit(0)
}

/// In the server: forks one `outpost supervise` for `pod_dir`.
fn fork_supervisor(pod_dir: &Path) -> nix::Result<Spawned> {
    let flags = nix::fcntl::OFlag::O_CLOEXEC;
    let (stdout, stdout_w) = nix::unistd::pipe2(flags)?;
    let (stderr, stderr_w) = nix::unistd::pipe2(flags)?;
    // SAFETY: the server is single-threaded (it never starts a thread).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            Ok(Spawned { pid: child.as_raw(), stdout, stderr })
        }
        nix::unistd::ForkResult::Child => {
            supervise_child(pod_dir, stdout_w.as_raw_fd(), stderr_w.as_raw_fd())
        }
    }
}

/// In the forked child: what `Command` set up for the exec'd `outpost supervise` (own process
/// group, stdin from /dev/null, stdout and stderr to the pipes, default SIGCHLD, empty signal
/// mask, no other descriptors), then the same code in-process.
fn supervise_child(pod_dir: &Path, stdout: RawFd, stderr: RawFd) -> ! {
    // SAFETY: plain system calls on this process; the fds are valid (just created).
    unsafe {
        // Out of the agent's process group: a signal to the agent's group spares it.
        libc::setpgid(0, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::dup2(stdout, 1);
        libc::dup2(stderr, 2);
    }
    let _ = redirect(0, Path::new("/dev/null"));
    close_other_fds(&[]);
    title::set(pod_dir);
    std::process::exit(super::supervisor::command(pod_dir, false).into())
}

/// Opens `path` onto descriptor `target`.
fn redirect(target: RawFd, path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: dup2 onto a standard descriptor from a valid one.
    if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor above stderr but `keep`.
fn close_other_fds(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    // The directory's own descriptor is in the list and already closed: EBADF, harmless.
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: nothing in this process uses these descriptors any more.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A server on a thread whose `spawn` makes pipes carrying a fake ready line.
    fn server(fail: bool) -> (ForkServer, std::thread::JoinHandle<Vec<String>>) {
        let (agent_end, server_end) = socketpair().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            serve(&server_end, &mut |path: &Path| {
                seen.push(path.display().to_string());
                if fail {
                    return Err(Errno::EAGAIN);
                }
                let (stdout, out_w) = nix::unistd::pipe()?;
                let (stderr, err_w) = nix::unistd::pipe()?;
                nix::unistd::write(&out_w, format!("ready {}\n", path.display()).as_bytes())?;
                nix::unistd::write(&err_w, b"some log\n")?;
                Ok(Spawned { pid: 4242, stdout, stderr })
            });
            seen
        });
        (ForkServer::with_socket(-1, agent_end), handle)
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn each_request_gets_the_pid_and_both_pipes() {
        let (client, handle) = server(false);
        for dir in ["/state/pods/a", "/state/pods/b"] {
            let spawned = client.spawn(Path::new(dir)).unwrap();
            assert_eq!(spawned.pid, 4242);
            assert_eq!(read_all(spawned.stdout), format!("ready {dir}\n"));
            assert_eq!(read_all(spawned.stderr), "some log\n");
        }
        drop(client);
        // The server ends when the agent's end closes.
        assert_eq!(handle.join().unwrap(), ["/state/pods/a", "/state/pods/b"]);
    }

    #[test]
    fn a_failed_fork_is_reported_with_its_errno() {
        let (client, handle) = server(true);
        match client.spawn(Path::new("/p")) {
            Err(ForkServerError::Fork(Errno::EAGAIN)) => {}
            other => panic!("expected the fork error, got {other:?}"),
        }
        drop(client);
        handle.join().unwrap();
    }

    #[test]
    fn a_server_that_is_gone_is_reported_once_and_stays_gone() {
        let (agent_end, server_end) = socketpair().unwrap();
        drop(server_end);
        let client = ForkServer::with_socket(-1, agent_end);
        assert!(matches!(client.spawn(Path::new("/p")), Err(ForkServerError::Gone)));
        assert!(client.socket.lock().unwrap().is_none(), "the socket is dropped");
        assert!(matches!(client.spawn(Path::new("/p")), Err(ForkServerError::Gone)));
    }

    #[test]
    fn paths_longer_than_a_request_are_refused_before_sending() {
        let (client, handle) = server(false);
        let long = "x".repeat(MAX_REQUEST + 1);
        assert!(matches!(client.spawn(Path::new(&long)), Err(ForkServerError::PathTooLong { .. })));
        drop(client);
        assert!(handle.join().unwrap().is_empty());
    }

    #[test]
    fn start_refuses_a_multi_threaded_process() {
        // The test harness runs tests on threads of its own.
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        assert!(matches!(ForkServer::start(), Err(ForkServerError::Threads { .. })));
    }
}
