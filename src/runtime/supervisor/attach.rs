//! A container's own stdin, kept open for `kubectl attach -i` (the pod's `stdin: true`), as
//! containerd's shim does: the supervisor holds the write end of the container's stdin pipe, or
//! with `tty: true` the master of its terminal (whose output it logs as stdout). An attach
//! client gets a duplicate of that descriptor and writes to it directly; the session lasts as
//! long as its connection. With `stdinOnce`, the end of the first session closes stdin.

use std::os::fd::OwnedFd;

use super::error::{Result, SupervisorError};
use super::Supervisor;
use crate::runtime::protocol::Response;
use crate::runtime::types::InstanceId;

/// What the supervisor keeps of a container's stdin.
pub(super) struct Stdin {
    /// The pipe's write end, or the terminal's master; `None` once closed (`stdinOnce`).
    pub fd: Option<OwnedFd>,
    pub tty: bool,
    pub once: bool,
}

/// An attach session: its client's connection and the instance it writes to.
pub(super) struct Attachment {
    client: u64,
    key: String,
}

impl Supervisor {
    /// Answers with a duplicate of the instance's stdin (pipe or terminal master).
    pub(super) fn attach(&mut self, client: u64, request: u64, id: &InstanceId) -> Result<()> {
        let container = id.to_string();
        let instance = self.instance(id)?;
        if instance.status.exit.is_some() {
            return Err(SupervisorError::ContainerNotRunning { container });
        }
        let no_stdin = |why| SupervisorError::NoStdin { container: container.clone(), why };
        let stdin = instance.stdin.as_ref().ok_or_else(|| no_stdin("stdin is not enabled"))?;
        let fd = stdin
            .fd
            .as_ref()
            .ok_or_else(|| no_stdin("stdin was closed after the first attach (stdinOnce)"))?;
        let fd = fd.try_clone().map_err(|e| SupervisorError::Sys {
            what: "dup stdin",
            source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let tty = stdin.tty;
        self.reply_with_fds(client, request, Ok(Response::Attached { tty }), vec![fd]);
        self.attachments.push(Attachment { client, key: id.key() });
        log::info!("pod {} container {id}: attached", self.config.pod_name);
        Ok(())
    }

    /// Ends the sessions whose client is gone; `stdinOnce` closes stdin after the first.
    pub(super) fn settle_attachments(&mut self) {
        let mut i = 0;
        while i < self.attachments.len() {
            if self.connected(self.attachments[i].client) {
                i += 1;
                continue;
            }
            let ended = self.attachments.swap_remove(i);
            let Some(instance) = self.instances.get_mut(&ended.key) else { continue };
            if let Some(stdin) = instance.stdin.as_mut().filter(|s| s.once && s.fd.is_some()) {
                stdin.fd = None;
                log::info!(
                    "pod {} container {}: attach ended, stdin closed (stdinOnce)",
                    self.config.pod_name,
                    instance.status.id
                );
            }
        }
    }
}
