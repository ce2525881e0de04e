//! Connections on the command socket: non-blocking, with per-client output buffers so a slow
//! or stuck agent never blocks the supervisor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::Supervisor;
use crate::runtime::protocol::{Message, Response};
use crate::runtime::types::Event;

/// A client that lets this much output pile up is dropped (it can reconnect and resubscribe).
const MAX_BACKLOG: usize = 16 << 20;
/// Longest request line accepted (a container config with a large spec fits easily).
const MAX_REQUEST: usize = 4 << 20;

pub struct Client {
    pub id: u64,
    pub stream: UnixStream,
    input: Vec<u8>,
    pub output: Vec<u8>,
    subscribed: bool,
    pub closed: bool,
}

impl Client {
    fn new(id: u64, stream: UnixStream) -> Self {
        Self { id, stream, input: Vec::new(), output: Vec::new(), subscribed: false, closed: false }
    }

    fn send(&mut self, message: &Message) {
        if self.closed {
            return;
        }
        match serde_json::to_vec(message) {
            Ok(line) => {
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

    /// Writes what the socket takes without blocking.
    pub fn flush(&mut self) {
        while !self.output.is_empty() && !self.closed {
            match self.stream.write(&self.output) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.output.drain(..n);
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
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
            c.send(&Message::Reply { id, result });
        }
    }

    pub(super) fn broadcast(&mut self, event: Event) {
        let message = Message::Event(event);
        for c in self.clients.iter_mut().filter(|c| c.subscribed) {
            c.send(&message);
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
