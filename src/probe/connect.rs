//! TCP connections for probes: from the host, or from inside a pod's network namespace when
//! the pod has no address the host can reach (no CNI network: its loopback only).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// Connects to `addr`, from inside `netns` when given.
pub async fn connect(addr: SocketAddr, netns: Option<&Path>) -> io::Result<smol::net::TcpStream> {
    let Some(netns) = netns else { return smol::net::TcpStream::connect(addr).await };
    let socket = socket_in(netns.to_path_buf(), addr).await?;
    let addr_storage = SockaddrStorage::from(addr);
    match socket::connect(socket.as_raw_fd(), &addr_storage) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = smol::Async::new(std::net::TcpStream::from(socket))?;
    // A non-blocking connect is done when the socket turns writable; SO_ERROR says how.
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    Ok(smol::net::TcpStream::from(stream))
}

/// A non-blocking TCP socket made inside `netns`. A socket keeps the namespace it was created
/// in, so only its creation needs the namespace: on a short-lived thread, since `setns`
/// changes the calling thread and the agent's executor thread must stay on the host.
async fn socket_in(netns: PathBuf, addr: SocketAddr) -> io::Result<OwnedFd> {
    let (tx, rx) = smol::channel::bounded(1);
    std::thread::Builder::new().name("probe-netns".into()).spawn(move || {
        let made = std::fs::File::open(&netns).and_then(|ns| {
            setns(&ns, CloneFlags::CLONE_NEWNET)?;
            let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            Ok(socket::socket(family, SockType::Stream, flags, None)?)
        });
        let _ = tx.send_blocking(made);
    })?;
    rx.recv().await.map_err(|_| io::Error::other("the probe-netns thread died"))?
}
