//! Manifest files to desired state, without root: validation with the API server's rules and
//! messages, hostile and mutated input, and the directory watcher.

mod fuzz;
mod limits;
mod rescan;
mod validate;
mod watch;
