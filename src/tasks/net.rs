//! A non-blocking TCP stream on the thread's own reactor, for the probes' short exchanges.
//!
//! It registers with the epoll only when a syscall would block, so a probe whose answer is
//! already there never touches it; closing the socket removes it from the epoll.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::reactor::{self, Direction};

pub struct TcpStream {
    inner: Inner,
}

enum Inner {
    Local(Local),
    /// Made on a thread without a reactor of its own.
    Shared(smol::Async<std::net::TcpStream>),
}

/// A socket on the thread's own reactor.
struct Local {
    socket: std::net::TcpStream,
    registered: Option<Registration>,
}

/// A socket's place in a reactor's epoll.
struct Registration {
    reactor: u64,
    token: u64,
    /// The one direction registered; `None` once both are.
    only: Option<Direction>,
}

impl TcpStream {
    /// Wraps a non-blocking, connected (or connecting) socket.
    pub fn new(socket: std::net::TcpStream) -> io::Result<Self> {
        let inner = match reactor::current() {
            Some(_) => Inner::Local(Local { socket, registered: None }),
            None => Inner::Shared(smol::Async::new(socket)?),
        };
        Ok(Self { inner })
    }

    pub fn get_ref(&self) -> &std::net::TcpStream {
        match &self.inner {
            Inner::Local(l) => &l.socket,
            Inner::Shared(a) => a.get_ref(),
        }
    }

    /// Resolves once the socket is writable (a non-blocking connect finished, either way).
    pub async fn writable(&mut self) -> io::Result<()> {
        let local = match &mut self.inner {
            Inner::Shared(a) => return a.writable().await,
            Inner::Local(l) => l,
        };
        std::future::poll_fn(|cx| {
            if writable_now(local.socket.as_fd()) {
                return Poll::Ready(Ok(()));
            }
            local.park(cx, Direction::Write)?;
            Poll::Pending
        })
        .await
    }
}

impl Local {
    /// Wakes the task at the socket's next edge in `direction`, registering the socket with
    /// this thread's reactor for it first if it is not yet. A registration reports readiness
    /// already there, so a socket that turned ready since the caller's syscall is not missed.
    fn park(&mut self, cx: &mut Context<'_>, direction: Direction) -> io::Result<()> {
        let reactor = reactor::current()
            .ok_or_else(|| io::Error::other("socket polled outside its reactor's thread"))?;
        let fd = self.socket.as_fd();
        let token = match &mut self.registered {
            Some(r) if r.reactor == reactor.id() => {
                if r.only.is_some_and(|d| d != direction) {
                    reactor.register_both(fd, r.token)?;
                    r.only = None;
                }
                r.token
            }
            _ => {
                let token = reactor.register(fd, direction)?;
                let only = Some(direction);
                self.registered = Some(Registration { reactor: reactor.id(), token, only });
                token
            }
        };
        reactor.wait_for(token, direction, cx.waker());
        Ok(())
    }

    /// Runs a non-blocking syscall, waiting for readiness while it would block.
    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&mut std::net::TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        match op(&mut self.socket) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        self.park(cx, direction)?;
        Poll::Pending
    }
}

/// A zero-timeout poll: the socket is writable or in error.
fn writable_now(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Inner::Local(Local { registered: Some(registration), .. }) = &self.inner {
            if let Some(r) = reactor::current().filter(|r| r.id() == registration.reactor) {
                r.deregister(registration.token);
            }
        }
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl smol::io::AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Shared(a) => Pin::new(a).poll_read(cx, buf),
            Inner::Local(l) => l.poll_io(cx, Direction::Read, |s| s.read(buf)),
        }
    }
}

impl smol::io::AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Shared(a) => Pin::new(a).poll_write(cx, buf),
            Inner::Local(l) => l.poll_io(cx, Direction::Write, |s| s.write(buf)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
