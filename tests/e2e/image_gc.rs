//! Garbage collection keeps referenced and in-use images, removes the rest.

use std::collections::HashSet;

use crate::image_support::*;
use outpost::image::build::ArchiveFormat;
use outpost::image::{GcReport, ImageStore};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn gc_removes_unreferenced_blobs_and_layers_and_keeps_in_use_ones() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    store.import(busybox_archive(dir.path(), ArchiveFormat::Oci, false)).unwrap();
    let busybox = store.resolve("busybox").unwrap().unwrap();
    let blobs_dir = store.root().join("blobs/sha256");
    // busybox alone: manifest, config, one layer.
    assert_eq!(store.gc(&HashSet::new()).unwrap(), GcReport::default());
    let busybox_blobs = names(&blobs_dir);
    assert_eq!(busybox_blobs.len(), 3);

    store.import(layered_archive(dir.path(), ArchiveFormat::Oci, false)).unwrap();
    let layered = store.resolve("layered:1").unwrap().unwrap();
    assert_eq!(names(&blobs_dir).len(), 3 + 4, "layered adds manifest, config and two layers");
    store.remove("layered:1").unwrap();

    // Untagged but still running: nothing goes.
    let in_use: HashSet<String> = [layered.digest.clone()].into();
    assert_eq!(store.gc(&in_use).unwrap(), GcReport::default());
    assert!(layered.layers.iter().all(|l| l.is_dir()));

    // Stopped: its own blobs and layers go, the base it shares with busybox stays.
    let report = store.gc(&HashSet::new()).unwrap();
    assert_eq!((report.blobs_removed, report.layers_removed), (4, 2));
    assert!(report.blob_bytes > 0);
    assert_eq!(names(&blobs_dir), busybox_blobs);
    assert!(!layered.layers[1].exists() && !layered.layers[2].exists());
    assert_eq!(
        names(store.layers_dir()),
        vec![busybox.layers[0].file_name().unwrap().to_string_lossy().into_owned()]
    );
    // busybox still resolves, with its config parsed from the kept blobs.
    let again = store.resolve("busybox").unwrap().unwrap();
    assert_eq!(again.layers, busybox.layers);

    // Everything unreferenced: the store empties.
    store.remove("busybox").unwrap();
    let report = store.gc(&HashSet::new()).unwrap();
    assert_eq!((report.blobs_removed, report.layers_removed), (3, 1));
    assert_eq!(names(&blobs_dir), Vec::<String>::new());
    assert_eq!(names(store.layers_dir()), Vec::<String>::new());
}

#[test]
fn a_missing_layer_dir_is_unpacked_again_on_resolve() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let (store, image) = import_busybox(&dir.path().join("images"));
    std::fs::remove_dir_all(&image.layers[0]).unwrap();
    let again = store.resolve("busybox").unwrap().unwrap();
    assert!(again.layers[0].join("bin/busybox").is_file());
}
