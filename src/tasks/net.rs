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
    Local {
        socket: std::net::TcpStream,
        /// `(reactor, token)` once registered.
        registered: Option<(u64, u64)>,
    },
    /// Made on a thread without a reactor of its own.
    Shared(smol::Async<std::net::TcpStream>),
}

impl TcpStream {
    /// Wraps a non-blocking, connected (or connecting) socket.
    pub fn new(socket: std::net::TcpStream) -> io::Result<Self> {
        let inner = match reactor::current() {
            Some(_) => Inner::Local { socket, registered: None },
            None => Inner::Shared(smol::Async::new(socket)?),
        };
        Ok(Self { inner })
    }

    pub fn get_ref(&self) -> &std::net::TcpStream {
        match &self.inner {
            Inner::Local { socket, .. } => socket,
            Inner::Shared(a) => a.get_ref(),
        }
    }

    /// Resolves once the socket is writable (a non-blocking connect finished, either way).
    pub async fn writable(&mut self) -> io::Result<()> {
        if let Inner::Shared(a) = &self.inner {
            return a.writable().await;
        }
        std::future::poll_fn(|cx| {
            if writable_now(self.as_fd()) {
                return Poll::Ready(Ok(()));
            }
            self.park(cx, Direction::Write)?;
            // Checked again: an edge before this wait is not reported to it.
            if writable_now(self.as_fd()) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Waits for the socket's next edge in `direction` (returning `Ok`: the caller returns
    /// Pending). The first time, it registers and asks the caller to retry at once: the
    /// socket may have turned ready in between.
    fn park(&mut self, cx: &mut Context<'_>, direction: Direction) -> io::Result<()> {
        let Inner::Local { socket, registered } = &mut self.inner else { return Ok(()) };
        let reactor = reactor::current()
            .ok_or_else(|| io::Error::other("socket polled outside its reactor's thread"))?;
        let token = match registered {
            Some((id, token)) if *id == reactor.id() => *token,
            _ => {
                let token = reactor.register(socket.as_fd())?;
                *registered = Some((reactor.id(), token));
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
        let Inner::Local { socket, registered } = &mut self.inner else {
            unreachable!("only local streams run syscalls here")
        };
        let first = registered.is_none();
        match op(socket) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        self.park(cx, direction)?;
        if first {
            // Registered just now: it may have turned ready in between, which epoll would
            // report (as the state at registration), but only after a round through it.
            let Inner::Local { socket, .. } = &mut self.inner else { unreachable!() };
            match op(socket) {
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
        if let Inner::Local { registered: Some((id, token)), .. } = &self.inner {
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
        if let Inner::Shared(a) = &mut self.inner {
            return Pin::new(a).poll_read(cx, buf);
        }
        self.poll_io(cx, Direction::Read, |s| s.read(buf))
    }
}

impl smol::io::AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Inner::Shared(a) = &mut self.inner {
            return Pin::new(a).poll_write(cx, buf);
        }
        self.poll_io(cx, Direction::Write, |s| s.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
