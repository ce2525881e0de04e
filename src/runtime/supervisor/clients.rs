//! Connections on the command socket: non-blocking, with per-client output buffers so a slow
//! or stuck agent never blocks the supervisor.

use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::Supervisor;
use crate::runtime::protocol::{Message, Response, MAX_REQUEST};
use crate::runtime::types::Event;

/// A client that lets this much output pile up is dropped (it can reconnect and resubscribe).
const MAX_BACKLOG: usize = 16 << 20;

pub struct Client {
    pub id: u64,
    pub stream: UnixStream,
    input: Vec<u8>,
    pub output: Vec<u8>,
    /// Descriptors to pass (`SCM_RIGHTS`) with the byte at this offset of `output`, in order.
    fds: VecDeque<(usize, Vec<OwnedFd>)>,
    subscribed: bool,
    pub closed: bool,
}

impl Client {
    fn new(id: u64, stream: UnixStream) -> Self {
        Self {
            id,
            stream,
            input: Vec::new(),
            output: Vec::new(),
            fds: VecDeque::new(),
            subscribed: false,
            closed: false,
        }
    }

    fn send(&mut self, message: &Message, fds: Vec<OwnedFd>) {
        if self.closed {
            return;
        }
        match serde_json::to_vec(message) {
            Ok(line) => {
                if !fds.is_empty() {
                    self.fds.push_back((self.output.len(), fds));
                }
                self.output.extend_from_slice(&line);
                self.output.push(b'\n');
            }
            Err(e) => log::error!("cannot encode a message for client {}: {e}", self.id),
        }
        if self.output.len() > MAX_BACKLOG {
            log::warn!("client {} does not read its messages; disconnecting it", self.id);
            self.closed = true;
            return;
        }
        self.flush();
    }

    /// Writes what the socket takes without blocking. A message with descriptors starts a
    /// `sendmsg` of its own, so they arrive with its first byte.
    pub fn flush(&mut self) {
        while !self.output.is_empty() && !self.closed {
            let with_fds = self.fds.front().is_some_and(|(at, _)| *at == 0);
            let next = self.fds.iter().map(|(at, _)| *at).find(|at| *at > 0);
            let end = next.unwrap_or(self.output.len());
            let written = match self.fds.front() {
                Some((_, fds)) if with_fds => send_fds(&self.stream, &self.output[..end], fds),
                _ => self.stream.write(&self.output[..end]),
            };
            match written {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.output.drain(..n);
                    if with_fds {
                        self.fds.pop_front();
                    }
                    for (at, _) in &mut self.fds {
                        *at -= n;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads what is there; returns complete request lines.
    pub fn read_lines(&mut self) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut lines = Vec::new();
        while let Some(i) = self.input.iter().position(|&b| b == b'\n') {
            lines.push(self.input.drain(..=i).collect());
        }
        if self.input.len() > MAX_REQUEST {
            log::warn!(
                "client {} sent a request line over {MAX_REQUEST} bytes; disconnecting it",
                self.id
            );
            self.closed = true;
        }
        lines
    }
}

/// One non-blocking `sendmsg` of `data` with `fds` attached.
fn send_fds(stream: &UnixStream, data: &[u8], fds: &[OwnedFd]) -> std::io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let control = [ControlMessage::ScmRights(&raw)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(data)], &control, flags, None)
        .map_err(std::io::Error::from)
}

impl Supervisor {
    pub(super) fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.next_client += 1;
            self.clients.push(Client::new(self.next_client, stream));
        }
    }

    pub(super) fn subscribe(&mut self, client: u64) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
            c.subscribed = true;
        }
    }

    pub(super) fn reply(&mut self, client: u64, id: u64, result: Result<Response, String>) {
        self.reply_with_fds(client, id, result, Vec::new());
    }

    /// A reply carrying descriptors; they are closed here once sent (or the client is gone).
    pub(super) fn reply_with_fds(
        &mut self,
        client: u64,
        id: u64,
        result: Result<Response, String>,
        fds: Vec<OwnedFd>,
    ) {
        self.send_to(client, &Message::Reply { id, result }, fds);
    }

    pub(super) fn send_to(&mut self, client: u64, message: &Message, fds: Vec<OwnedFd>) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
            c.send(message, fds);
        }
    }

    /// Whether the client is still connected.
    pub(super) fn connected(&self, client: u64) -> bool {
        self.clients.iter().any(|c| c.id == client && !c.closed)
    }

    pub(super) fn broadcast(&mut self, event: Event) {
        let message = Message::Event(event);
        for c in self.clients.iter_mut().filter(|c| c.subscribed) {
            c.send(&message, Vec::new());
        }
    }

    /// Before exiting: give every client's pending output a bounded chance to go out.
    pub(super) fn flush_before_exit(&mut self) {
        for c in &mut self.clients {
            if c.output.is_empty() || c.closed {
                continue;
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = c.stream.write_all(&c.output);
        }
    }
}
