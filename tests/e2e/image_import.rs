//! Importing archives into the store and resolving images (runs as root: layers hold
//! device nodes for whiteouts and owners other than the caller).

use std::collections::HashMap;
use std::path::Path;

use crate::image_support::*;
use outpost::image::build::{write_archive, ArchiveFormat};
use outpost::image::{autoimport, ImageError, ImageStore};

const BUSYBOX_FULL: &str = "docker.io/library/busybox:latest";

fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("images")).expect("open store")
}

fn check_busybox(store: &ImageStore) {
    let spec = busybox_spec();
    for name in ["busybox", "busybox:latest", "library/busybox", BUSYBOX_FULL] {
        let image =
            store.resolve(name).expect("resolve").unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(image.reference, BUSYBOX_FULL);
        let config = image.config.config().as_ref().expect("config section");
        assert_eq!(config.cmd().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(config.entrypoint(), &None);
        assert_eq!(
            config.env().as_deref(),
            Some(&[outpost::image::busybox::PATH_ENV.to_string()][..])
        );
        assert_eq!(image.layers.len(), 1);
        assert!(image.layers[0].join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(image.layers[0].join("bin/sh")).expect("bin/sh symlink"),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            std::fs::read(image.layers[0].join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
        // The layer directory is named after the diff_id.
        let diff_id = sha256_hex(&spec.layers[0]);
        assert_eq!(image.layers[0], store.layers_dir().join(diff_id));
        // By digest too.
        let by_digest = store.resolve(&image.digest).unwrap().expect("by digest");
        assert_eq!(by_digest.digest, image.digest);
    }
    assert!(store.resolve("busybox:1.36").unwrap().is_none());
    assert!(store.resolve("other").unwrap().is_none());
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

#[test]
fn imports_oci_and_docker_archives_plain_and_gzip() {
    let _guard = crate::support::shared();
    let scratch = tempfile::tempdir().unwrap();
    for format in [ArchiveFormat::Oci, ArchiveFormat::Docker] {
        for gzip in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = store(dir.path());
            let file = busybox_archive(scratch.path(), format, gzip);
            let refs =
                store.import(&file).unwrap_or_else(|e| panic!("{format:?} gzip={gzip}: {e}"));
            assert_eq!(refs, vec![BUSYBOX_FULL.to_string()], "{format:?} gzip={gzip}");
            check_busybox(&store);
        }
    }
}

#[test]
fn oci_archive_keeps_its_manifest_digest() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let file = dir.path().join("bb.tar");
    let built = write_archive(&file, &[busybox_spec()], ArchiveFormat::Oci, false).unwrap();
    store.import(&file).unwrap();
    let image = store.resolve("busybox").unwrap().unwrap();
    assert_eq!(Some(image.digest), built[0].manifest_digest);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, built[0].config_digest);
    assert_eq!(listed[0].references, vec![BUSYBOX_FULL.to_string()]);
}

#[test]
fn layers_are_shared_and_unpacked_once() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.import(busybox_archive(dir.path(), ArchiveFormat::Oci, true)).unwrap();
    let busybox = store.resolve("busybox").unwrap().unwrap();
    // A marker in the unpacked layer survives only if the second import does not unpack again.
    let marker = busybox.layers[0].join("marker-from-test");
    std::fs::write(&marker, b"x").unwrap();
    store.import(layered_archive(dir.path(), ArchiveFormat::Docker, false)).unwrap();
    let layered = store.resolve("layered:1").unwrap().unwrap();
    assert_eq!(layered.reference, "docker.io/library/layered:1");
    assert_eq!(layered.layers.len(), 3);
    assert_eq!(layered.layers[0], busybox.layers[0]);
    assert!(marker.exists(), "the shared layer was unpacked again");
    let mut dirs: Vec<String> = std::fs::read_dir(store.layers_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut expected: Vec<String> = layered
        .layers
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(dirs, expected);
    std::fs::remove_file(marker).unwrap();
}

#[test]
fn two_images_in_one_archive() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let file =
        archive(dir.path(), "both", &[busybox_spec(), layered_spec()], ArchiveFormat::Oci, false);
    let refs = store.import(&file).unwrap();
    assert_eq!(refs, vec![BUSYBOX_FULL.to_string(), "docker.io/library/layered:1".to_string()]);
    let names: Vec<Vec<String>> = store.list().unwrap().into_iter().map(|s| s.references).collect();
    assert_eq!(
        names,
        vec![vec![BUSYBOX_FULL.to_string()], vec!["docker.io/library/layered:1".to_string()]]
    );
}

/// A tarball of (name, content) regular files.
fn plain_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<RawEntry> = files
        .iter()
        .map(|(name, data)| RawEntry { name, kind: tar::EntryType::Regular, data, link: None })
        .collect();
    raw_tar(&entries)
}

#[test]
fn digest_mismatch_is_detected_and_nothing_stored() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let claimed = sha256_hex(b"the real content");
    let name = format!("blobs/sha256/{claimed}");
    let file = dir.path().join("tampered.tar");
    std::fs::write(&file, plain_tar(&[("oci-layout", b"{}"), (&name, b"tampered content")]))
        .unwrap();
    let err = store.import(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "digest mismatch in {}: {name}: expected sha256:{claimed}, got sha256:{}",
            file.display(),
            sha256_hex(b"tampered content")
        )
    );
    assert!(!store.root().join("blobs/sha256").join(&claimed).exists());
    assert!(!store.root().join("blobs/sha256").join(sha256_hex(b"tampered content")).exists());
}

#[test]
fn diff_id_mismatch_leaves_no_layer() {
    let _guard = crate::support::shared();
    // A layer whose uncompressed content does not match the config's diff_id.
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let layer = plain_tar(&[("hello", b"world")]);
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let wrong = format!("sha256:{}", sha256_hex(b"something else"));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": outpost::image::platform::host().0, "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [wrong] }
    }))
    .unwrap();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }]
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
                        "annotations": { "org.opencontainers.image.ref.name": "bad:1" } }]
    }))
    .unwrap();
    let names: Vec<String> = [&layer_digest, &config_digest, &manifest_digest]
        .iter()
        .map(|d| format!("blobs/sha256/{}", &d[7..]))
        .collect();
    let file = dir.path().join("bad.tar");
    std::fs::write(
        &file,
        plain_tar(&[
            ("index.json", &index),
            (&names[0], &layer),
            (&names[1], &config),
            (&names[2], &manifest),
        ]),
    )
    .unwrap();
    let err = store.import(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("digest mismatch in layer {layer_digest} (uncompressed): expected {wrong}, got {layer_digest}")
    );
    assert_eq!(tree(store.layers_dir()), Vec::<String>::new());
    assert!(store.resolve("bad:1").unwrap().is_none());
}

#[test]
fn not_an_archive_names_the_file() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let file = dir.path().join("empty.tar");
    std::fs::write(&file, plain_tar(&[("README", b"hi")])).unwrap();
    let err = store.import(&file).unwrap_err();
    assert!(matches!(err, ImageError::UnknownArchive { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not an image archive: no index.json (OCI) or manifest.json (docker save)",
            file.display()
        )
    );
}

#[test]
fn multi_arch_index_picks_the_host_platform() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // An OCI archive whose index.json points at a nested index listing two platforms: the
    // host's (the busybox manifest) and another one whose blobs are absent (as when
    // exported for one platform only).
    let plain = dir.path().join("plain.tar");
    let built = write_archive(&plain, &[busybox_spec()], ArchiveFormat::Oci, false).unwrap();
    let manifest_digest = built[0].manifest_digest.clone().unwrap();
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&plain).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        files.insert(e.path().unwrap().display().to_string(), data);
    }
    let size = files[&format!("blobs/sha256/{}", &manifest_digest[7..])].len();
    let (arch, variant) = outpost::image::platform::host();
    let other = if arch == "s390x" { "riscv64" } else { "s390x" };
    let mut host_platform = serde_json::json!({ "architecture": arch, "os": "linux" });
    if let Some(v) = variant {
        host_platform["variant"] = serde_json::json!(v);
    }
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
              "platform": { "architecture": other, "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": size,
              "platform": host_platform },
        ]
    }))
    .unwrap();
    let nested_digest = sha256_hex(&nested);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{nested_digest}"), "size": nested.len(),
                        "annotations": { "io.containerd.image.name": "docker.io/library/multi:2", "org.opencontainers.image.ref.name": "2" } }]
    }))
    .unwrap();
    files.insert("index.json".into(), index);
    files.insert(format!("blobs/sha256/{nested_digest}"), nested);
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let entries: Vec<(&str, &[u8])> =
        names.iter().map(|n| (n.as_str(), files[*n].as_slice())).collect();
    let file = dir.path().join("multi.tar");
    std::fs::write(&file, plain_tar(&entries)).unwrap();
    assert_eq!(store.import(&file).unwrap(), vec!["docker.io/library/multi:2".to_string()]);
    assert_eq!(store.resolve("multi:2").unwrap().unwrap().digest, manifest_digest);
}

#[test]
fn auto_import_directory_imports_each_file_once() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let drop_dir = store.import_dir();
    busybox_archive(&drop_dir, ArchiveFormat::Docker, true);
    std::fs::write(drop_dir.join("broken.tar"), b"this is not a tarball at all, not even close.")
        .unwrap();
    std::fs::write(drop_dir.join("notes.txt"), b"ignored").unwrap();
    let first = autoimport::scan(&store).unwrap();
    let summary: Vec<(String, Result<Vec<String>, String>)> = first
        .into_iter()
        .map(|o| {
            (
                o.file.file_name().unwrap().to_string_lossy().into_owned(),
                o.result.map_err(|e| e.to_string()),
            )
        })
        .collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert_eq!(summary[0].0, "broken.tar");
    let err = summary[0].1.as_ref().unwrap_err();
    assert!(err.starts_with(&format!("{}: ", drop_dir.join("broken.tar").display())), "{err}");
    assert_eq!(
        summary[1],
        ("busybox-docker.tar.gz".to_string(), Ok(vec![BUSYBOX_FULL.to_string()]))
    );
    // Nothing new: nothing tried, the broken file included.
    assert_eq!(autoimport::scan(&store).unwrap().len(), 0);
    assert!(store.resolve("busybox").unwrap().is_some());
    // Removing the image does not make the same file come back.
    store.remove("busybox").unwrap();
    assert_eq!(autoimport::scan(&store).unwrap().len(), 0);
    assert!(store.resolve("busybox").unwrap().is_none());
}

#[test]
fn auto_import_watcher_picks_up_a_dropped_file() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(store(dir.path()));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let _watcher =
        autoimport::ImportWatcher::start(std::sync::Arc::clone(&store), move |outcome| {
            let _ =
                tx.lock().unwrap().send((outcome.file, outcome.result.map_err(|e| e.to_string())));
        })
        .unwrap();
    // Written elsewhere, then moved in: the way to drop a file atomically.
    let staged = busybox_archive(dir.path(), ArchiveFormat::Oci, false);
    let dropped = store.import_dir().join("busybox.tar");
    std::fs::rename(&staged, &dropped).unwrap();
    // A generous bound only so that a broken watcher fails instead of hanging.
    let (file, result) =
        rx.recv_timeout(std::time::Duration::from_secs(120)).expect("watcher reported nothing");
    assert_eq!(file, dropped);
    assert_eq!(result, Ok(vec![BUSYBOX_FULL.to_string()]));
    assert!(store.resolve("busybox").unwrap().is_some());
}

#[test]
fn remove_by_name_and_by_digest() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.import(busybox_archive(dir.path(), ArchiveFormat::Oci, false)).unwrap();
    let digest = store.resolve("busybox").unwrap().unwrap().digest;
    assert_eq!(store.remove("busybox:latest").unwrap(), vec![BUSYBOX_FULL.to_string()]);
    assert!(store.resolve("busybox").unwrap().is_none());
    assert!(store.resolve(&digest).unwrap().is_none());
    let err = store.remove("busybox").unwrap_err();
    assert_eq!(err.to_string(), "no such image: busybox");
    store.import(busybox_archive(dir.path(), ArchiveFormat::Oci, false)).unwrap();
    assert_eq!(store.remove(&digest).unwrap(), vec![BUSYBOX_FULL.to_string()]);
}

#[test]
fn a_corrupt_header_names_the_archive_and_the_entry_before_it() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut tar = plain_tar(&[("manifest.json", b"[]")]);
    let end = tar.len() - 1024;
    tar[end..end + 5].copy_from_slice(b"junk!");
    let file = dir.path().join("junk.tar");
    std::fs::write(&file, tar).unwrap();
    let err = store.import(&file).unwrap_err().to_string();
    let want = format!("{}: after entry \"manifest.json\": ", file.display());
    assert!(err.starts_with(&want), "{err}");
}

#[test]
fn a_bad_tag_names_the_archive_and_manifest_json() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = br#"[{"Config":"config.json","RepoTags":["Bad Tag!"],"Layers":[]}]"#;
    let file = dir.path().join("badtag.tar");
    std::fs::write(&file, plain_tar(&[("manifest.json", manifest), ("config.json", config)]))
        .unwrap();
    let err = store.import(&file).unwrap_err().to_string();
    let want = format!("{}: manifest.json: invalid image reference \"Bad Tag!\"", file.display());
    assert!(err.starts_with(&want), "{err}");
}
