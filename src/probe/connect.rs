//! TCP connections for probes: from the host, or from inside a pod's network namespace when
//! the pod has no address the host can reach (no CNI network: its loopback only).
//!
//! Over a veth or loopback the whole handshake usually runs inside the `connect` call (the
//! peer's SYN/ACK is processed in the same softirq), so a non-blocking connect that says it
//! is in progress is asked for its peer before waiting: most probes then connect without
//! waiting for the reactor at all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

use crate::tasks::TcpStream;

/// Connects to `addr`, from inside `netns` when given.
pub async fn connect(addr: SocketAddr, netns: Option<&Path>) -> io::Result<TcpStream> {
    match start(addr, netns).await? {
        Connecting::Done(socket) => TcpStream::new(std::net::TcpStream::from(socket)),
        Connecting::Pending(stream) => finish(stream).await,
    }
}

/// Opens a connection to `addr` and closes it at once (a tcpSocket probe): a connect that
/// finished in the syscall never touches the reactor.
pub async fn connect_and_close(addr: SocketAddr, netns: Option<&Path>) -> io::Result<()> {
    match start(addr, netns).await? {
        Connecting::Done(_) => Ok(()),
        Connecting::Pending(stream) => finish(stream).await.map(drop),
    }
}

enum Connecting {
    Done(OwnedFd),
    Pending(TcpStream),
}

async fn start(addr: SocketAddr, netns: Option<&Path>) -> io::Result<Connecting> {
    let socket = match netns {
        Some(netns) => socket_in(netns.to_path_buf(), addr).await?,
        None => new_socket(addr)?,
    };
    match socket::connect(socket.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => return Ok(Connecting::Done(socket)),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    // One syscall where poll and SO_ERROR take two: a peer means connected. A refused or
    // reset connection has none either and is told apart by `finish`.
    if socket::getpeername::<SockaddrStorage>(socket.as_raw_fd()).is_ok() {
        return Ok(Connecting::Done(socket));
    }
    Ok(Connecting::Pending(TcpStream::new(std::net::TcpStream::from(socket))?))
}

/// A non-blocking connect is done when the socket turns writable; SO_ERROR says how.
async fn finish(mut stream: TcpStream) -> io::Result<TcpStream> {
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    Ok(socket::socket(family, SockType::Stream, flags, None)?)
}

/// A non-blocking TCP socket made inside `netns`. A socket keeps the namespace it was created
/// in, so only its creation needs the namespace: on a short-lived thread, since `setns`
/// changes the calling thread and the agent's executor thread must stay on the host.
async fn socket_in(netns: PathBuf, addr: SocketAddr) -> io::Result<OwnedFd> {
    let (tx, rx) = smol::channel::bounded(1);
    std::thread::Builder::new().name("probe-netns".into()).spawn(move || {
        let made = std::fs::File::open(&netns).and_then(|ns| {
            setns(&ns, CloneFlags::CLONE_NEWNET)?;
            new_socket(addr)
        });
        let _ = tx.send_blocking(made);
    })?;
    rx.recv().await.map_err(|_| io::Error::other("the probe-netns thread died"))?
}
