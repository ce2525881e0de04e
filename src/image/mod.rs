//! The local image store: import, unpack, resolve, garbage-collect.
//!
//! Images arrive as tarballs (`outpost image import`, or dropped into `<state>/images/import/`);
//! their blobs are stored by digest and each layer is unpacked once into a directory that
//! overlayfs stacks directly. `ImageStore::resolve` turns a reference into the config and the
//! lower dirs a container needs. Registry pulls (`pull`) write through `write_blob` + `commit`.

pub mod autoimport;
mod blobs;
pub mod build;
pub mod busybox;
pub mod cli;
pub mod compression;
mod error;
mod fsutil;
pub mod gc;
mod import;
pub mod platform;
pub mod pull;
pub mod reference;
mod refs;
mod store;
pub mod unpack;

pub use autoimport::{ImportOutcome, ImportWatcher};
pub use error::{ImageError, Result, Unsafe};
pub use gc::GcReport;
pub use store::{Image, ImageStore, ImageSummary};

/// The store directory inside outpost's state directory.
pub fn store_dir(state: &std::path::Path) -> std::path::PathBuf {
    state.join("images")
}
