//! What `outpost validate` and the manifest watcher do with one file's bytes: parse and validate
//! every document, then build the desired state from them.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use outpost::manifest::{parse_bytes, DesiredState};

mod budget;

fuzz_target!(|data: &[u8]| {
    budget::within_budget("manifest", || {
        if let Ok(docs) = parse_bytes(Path::new("fuzz.yaml"), data) {
            let _ = DesiredState::build([docs.as_slice()], &DesiredState::default());
        }
    });
});
