//! `outpost run`: wires the watcher to the engine and the runtime, and owns their lifetimes.

use crate::cli::RunArgs;
use crate::watch::{WatchOptions, Watcher};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("watching {path}: {source}")]
    Watch { path: std::path::PathBuf, source: crate::watch::WatchError },
}

pub fn run(args: RunArgs) -> Result<(), AgentError> {
    let (watcher, updates) = Watcher::start(&args.manifests, WatchOptions::default())
        .map_err(|source| AgentError::Watch { path: args.manifests.clone(), source })?;
    log::info!("outpost {} watching {}", env!("CARGO_PKG_VERSION"), watcher.dir().display());
    smol::block_on(async {
        while let Ok(update) = updates.recv().await {
            for error in &update.errors {
                log::warn!("{error}");
            }
            for change in &update.changes {
                log::info!("{change}");
            }
            log::debug!(
                "desired state: {} pods, {} configmaps, {} secrets",
                update.state.pods.len(),
                update.state.config_maps.len(),
                update.state.secrets.len()
            );
        }
    });
    Ok(())
}
