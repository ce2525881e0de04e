//! `outpost run`: wires the watcher, the engine and the runtime, and owns their lifetimes.
//!
//! One task owns all state (the engine, the desired state, each pod's context: [`state`]) and
//! runs the loop ([`event_loop`]): reconcile → dispatch actions as tasks ([`dispatch`]) →
//! publish the API snapshot and commit to the store ([`publish`]) → wait for the next input (a
//! manifest change, an action's outcome, a runtime event, the engine's wake-up time). Action
//! tasks ([`sandbox`], [`container`], [`handlers`]) never touch that state; they answer with an
//! [`outcome::Outcome`].

mod adopt;
pub mod config;
mod container;
mod deps;
mod dispatch;
mod event_loop;
mod events;
mod handlers;
mod housekeeping;
pub mod memory;
mod node;
mod node_conditions;
mod node_object;
mod outcome;
mod pod_files;
mod publish;
mod sandbox;
mod start;
mod state;
mod termination;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::ForkServer;

pub use config::Config;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Containers need namespaces, mounts and cgroups.
    #[error("outpost run must run as root (it creates namespaces, mounts and cgroups)")]
    NotRoot,
    #[error("state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    /// Two agents on one state directory would fight over the same pods.
    #[error("another outpost agent already uses {path} (lock held): stop it first")]
    Locked { path: PathBuf },
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: crate::watch::WatchError },
    #[error(transparent)]
    ManifestUrl(#[from] crate::watch::url::UrlError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Images(#[from] crate::image::ImageError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("user namespace id pool: {0}")]
    UsernsPool(#[from] crate::userns::PoolError),
    #[error("the agent's event loop (epoll, eventfd): {0}")]
    EventLoop(std::io::Error),
}

/// `fork_server`: started by `main` before any thread; supervisors are exec'd without it.
pub fn run(config: Config, fork_server: Option<ForkServer>) -> Result<(), AgentError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(AgentError::NotRoot);
    }
    let state = &config.state;
    std::fs::create_dir_all(state)
        .map_err(|source| AgentError::StateDir { path: state.clone(), source })?;
    let _lock = lock(state, LOCK_WAIT)?;
    let ex = Arc::new(smol::Executor::new());
    // Not `smol::block_on`: with it, async-io's reactor thread and this one take turns at
    // the reactor, and after each turn the reactor thread polls with a backoff of a dozen
    // timed wake-ups, which cost more than the probes themselves. This thread parks in a
    // reactor of its own instead, which also serves the probes and the loop's timer.
    crate::tasks::block_on(ex.run(start::start(config, ex.clone(), fork_server)))
        .map_err(AgentError::EventLoop)?
}

/// An exclusive lock on `<state>/outpost.lock`, held while the agent runs.
fn lock(state: &Path, wait: Duration) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    let path = state.join("outpost.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AgentError::StateDir { path: path.clone(), source })?;
    // A killed agent's lock can outlive it for a moment (a child it forked has not reached
    // execve, which closes the descriptor): wait for that before refusing to start.
    let deadline = std::time::Instant::now() + wait;
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, _)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => return Err(AgentError::Locked { path }),
        }
    }
}

/// How long a start waits for another agent's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);
