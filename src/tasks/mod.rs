//! Where the agent's background tasks run.
//!
//! Not on smol's global executor: its thread sits in async-io's `block_on`, and while any
//! thread does, async-io's reactor thread follows every event with a dozen timed wake-ups
//! (its back-off for sharing the reactor), which cost more than a probe. The agent registers
//! its own executor here; one-shot commands (no agent) fall back to `smol::spawn`.
//!
//! The agent's thread runs that executor in [`block_on`], parked in a reactor of its own
//! ([`reactor`]) that also serves the probes' sockets ([`TcpStream`]) and the agent's timers
//! ([`sleep`]).

mod net;
mod reactor;
mod timer;

pub use net::TcpStream;
pub use reactor::block_on;
pub use timer::{sleep, Sleep};

use std::future::Future;
use std::sync::{Arc, OnceLock};

static AGENT: OnceLock<Arc<smol::Executor<'static>>> = OnceLock::new();

/// Makes [`spawn`] use `ex`, and drives child-process reaping on it (async-process would
/// otherwise start a thread of its own inside `block_on`).
pub fn use_executor(ex: &Arc<smol::Executor<'static>>) {
    if AGENT.set(ex.clone()).is_ok() {
        ex.spawn(smol::process::driver()).detach();
    }
}

/// Spawns `fut` on the agent's executor, or smol's global one outside the agent.
pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> smol::Task<T> {
    match AGENT.get() {
        Some(ex) => ex.spawn(fut),
        None => smol::spawn(fut),
    }
}

#[cfg(test)]
mod tests;
