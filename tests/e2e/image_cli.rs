//! `outpost image ...` through the binary.

use crate::image_support::*;
use crate::runner::outpost;
use outpost::image::build::ArchiveFormat;

#[test]
fn import_ls_rm() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let busybox = busybox_archive(dir.path(), ArchiveFormat::Docker, true);
    let layered = layered_archive(dir.path(), ArchiveFormat::Oci, false);
    let (code, out, err) = outpost(&[
        "image",
        "import",
        "--state",
        state,
        busybox.to_str().unwrap(),
        layered.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Loaded image: docker.io/library/busybox:latest\nLoaded image: docker.io/library/layered:1\n");

    let store = outpost::image::ImageStore::open(dir.path().join("state/images")).unwrap();
    let listed = store.list().unwrap();
    let id = |i: usize| listed[i].id[7..19].to_string();
    let size = |i: usize| outpost::image::cli::human_size(listed[i].size);
    let (code, out, err) = outpost(&["image", "ls", "--state", state]);
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "REPOSITORY   TAG      IMAGE ID       SIZE\n\
         busybox      latest   {}   {}\n\
         layered      1        {}   {}\n",
        id(0),
        size(0),
        id(1),
        size(1)
    );
    assert_eq!(out, expected);

    let (code, out, err) = outpost(&["image", "rm", "--state", state, "layered:1"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "Untagged: docker.io/library/layered:1\n", "")
    );
    let (code, out, _) = outpost(&["image", "ls", "--state", state]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("busybox      latest"), "{out}");

    let (code, out, err) = outpost(&["image", "rm", "--state", state, "layered:1"]);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: no such image: layered:1\n"));
}

#[test]
fn import_failure_names_the_file_and_imports_the_rest() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.tar");
    std::fs::write(
        &bad,
        raw_tar(&[RawEntry { name: "x", kind: tar::EntryType::Regular, data: b"x", link: None }]),
    )
    .unwrap();
    let good = busybox_archive(dir.path(), ArchiveFormat::Oci, true);
    let (code, out, err) = outpost(&[
        "image",
        "import",
        "--state",
        state.to_str().unwrap(),
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(out, "Loaded image: docker.io/library/busybox:latest\n");
    assert_eq!(
        err,
        format!(
            "error: {}: not an image archive: no index.json (OCI) or manifest.json (docker save)\n",
            bad.display()
        )
    );
}

#[test]
fn build_busybox_writes_an_importable_archive() {
    let _guard = crate::support::shared();
    require_busybox();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busybox.tar.gz");
    let (code, out, err) = outpost(&["image", "build-busybox", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("Wrote {} (busybox:latest)\n", file.display()));
    let store = outpost::image::ImageStore::open(dir.path().join("images")).unwrap();
    assert_eq!(store.import(&file).unwrap(), vec!["docker.io/library/busybox:latest".to_string()]);
    // Deterministic: building again gives the same bytes.
    let again = dir.path().join("again.tar.gz");
    outpost(&["image", "build-busybox", again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&again).unwrap());
}
