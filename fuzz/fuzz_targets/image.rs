//! One input is fed twice: as an image archive (`outpost image import`, then resolving every
//! image it added, which unpacks its layers) and as a single layer extracted into an empty
//! directory. Runs as root (layers hold device nodes and owners) in tmpfs, where the fsyncs
//! of the store cost nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost::image::{unpack, ImageStore};

mod budget;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new().prefix("outpost-fuzz").tempdir_in("/dev/shm").unwrap();
    budget::within_budget("image", || {
        let archive = dir.path().join("archive.tar");
        std::fs::write(&archive, data).unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        if let Ok(refs) = store.import(&archive) {
            for r in refs {
                let _ = store.resolve(&r);
            }
        }
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let _ = unpack::extract(data, &layer, "fuzz");
    });
});
