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
    /// `(reactor, token)` once registered.
    registered: Option<(u64, u64)>,
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
            // Checked again: an edge before this wait is not reported to it.
            if writable_now(local.socket.as_fd()) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Local {
    /// Wakes the task at the socket's next edge in `direction`, registering the socket with
    /// this thread's reactor first if it is not yet.
    fn park(&mut self, cx: &mut Context<'_>, direction: Direction) -> io::Result<()> {
        let reactor = reactor::current()
            .ok_or_else(|| io::Error::other("socket polled outside its reactor's thread"))?;
        let token = match self.registered {
            Some((id, token)) if id == reactor.id() => token,
            _ => {
                let token = reactor.register(self.socket.as_fd())?;
                self.registered = Some((reactor.id(), token));
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
        let first = self.registered.is_none();
        match op(&mut self.socket) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        self.park(cx, direction)?;
        if first {
            // Registered just now: it may have turned ready in between, which epoll would
            // report (as the state at registration), but only after a round through it.
            match op(&mut self.socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
        Poll::Pending
    }
}

/// A zero-timeout poll: the socket is writable or in error.
pub fn writable_now(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Inner::Local(Local { registered: Some((id, token)), .. }) = &self.inner {
            if let Some(r) = reactor::current().filter(|r| r.id() == *id) {
                r.deregister(*token);
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
