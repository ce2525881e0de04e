//! One input is fed twice: as an image archive (`outpost image import`, then resolving every
//! image it added, which unpacks its layers) and as a single layer extracted into an empty
//! directory. Runs as root (layers hold device nodes and owners) in tmpfs, where the fsyncs
//! of the store cost nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost::image::{unpack, ImageStore};

mod budget;

/// No file over 256 MiB: a layer that expands to more (a gzip or sparse-file bomb) ends the
/// run with SIGXFSZ, which libFuzzer reports as a crash, instead of filling tmpfs (memory).
fn limit_file_size() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = libc::rlimit { rlim_cur: 256 << 20, rlim_max: 256 << 20 };
        // SAFETY: a valid resource and a filled-in limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0, "setrlimit");
    });
}

fuzz_target!(|data: &[u8]| {
    limit_file_size();
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
