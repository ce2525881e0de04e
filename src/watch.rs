//! The manifest directory watcher. See ARCHITECTURE.md.
