//! Shared test helpers: offline test images and store shortcuts.
//!
//! Use from an integration test with `mod support;`. Every archive is deterministic (fixed
//! times and owners), so digests are stable on one machine.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

pub use outpost::image::build::{
    write_archive, ArchiveFormat, BuiltImage, ImageSpec, LayerBuilder,
};
use outpost::image::{busybox, Image, ImageStore};

/// Panics with the install hint when busybox-static is missing.
pub fn require_busybox() {
    if !Path::new(busybox::BUSYBOX).exists() {
        panic!("{}", busybox::INSTALL_HINT);
    }
}

/// The `busybox:latest` image spec (one layer from the host's /bin/busybox).
pub fn busybox_spec() -> ImageSpec {
    require_busybox();
    busybox::spec().unwrap_or_else(|e| panic!("building the busybox layer: {e}"))
}

/// Writes `busybox:latest` into `dir` and returns the archive's path.
pub fn busybox_archive(dir: &Path, format: ArchiveFormat, gzip: bool) -> PathBuf {
    archive(dir, "busybox", &[busybox_spec()], format, gzip)
}

/// The two layers `layered:1` adds on top of busybox:
/// - first: `a/keep`, `a/gone`, `d/old`, `d/sub/deep`, `f` ("v1");
/// - second: whiteout `a/.wh.gone`, opaque `d/.wh..wh..opq`, `d/new`, `f` ("v2").
pub fn layered_layers() -> (Vec<u8>, Vec<u8>) {
    let mut first = LayerBuilder::new();
    first
        .dir("a", 0o755)
        .and_then(|l| l.file("a/keep", 0o644, b"keep"))
        .and_then(|l| l.file("a/gone", 0o644, b"gone"))
        .and_then(|l| l.dir("d", 0o755))
        .and_then(|l| l.file("d/old", 0o644, b"old"))
        .and_then(|l| l.dir("d/sub", 0o755))
        .and_then(|l| l.file("d/sub/deep", 0o600, b"deep"))
        .and_then(|l| l.file("f", 0o644, b"v1"))
        .expect("first layer");
    let mut second = LayerBuilder::new();
    second
        .dir("a", 0o755)
        .and_then(|l| l.file("a/.wh.gone", 0o644, b""))
        .and_then(|l| l.dir("d", 0o755))
        .and_then(|l| l.file("d/.wh..wh..opq", 0o644, b""))
        .and_then(|l| l.file("d/new", 0o644, b"new"))
        .and_then(|l| l.file("f", 0o644, b"v2"))
        .expect("second layer");
    (first.finish().expect("first layer"), second.finish().expect("second layer"))
}

/// `layered:1`: busybox's layer plus `layered_layers()`, so it shares its base with busybox.
pub fn layered_spec() -> ImageSpec {
    let mut spec = busybox_spec();
    let (first, second) = layered_layers();
    spec.reference = "layered:1".into();
    spec.layers.push(first);
    spec.layers.push(second);
    spec
}

pub fn layered_archive(dir: &Path, format: ArchiveFormat, gzip: bool) -> PathBuf {
    archive(dir, "layered", &[layered_spec()], format, gzip)
}

/// Writes `images` as `dir/<stem>-<format>.tar[.gz]`.
pub fn archive(
    dir: &Path,
    stem: &str,
    images: &[ImageSpec],
    format: ArchiveFormat,
    gzip: bool,
) -> PathBuf {
    let kind = match format {
        ArchiveFormat::Oci => "oci",
        ArchiveFormat::Docker => "docker",
    };
    let path = dir.join(format!("{stem}-{kind}.tar{}", if gzip { ".gz" } else { "" }));
    write_archive(&path, images, format, gzip)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Opens a store in `store_dir`, imports busybox:latest (OCI archive) and resolves it.
pub fn import_busybox(store_dir: &Path) -> (ImageStore, Image) {
    let store = ImageStore::open(store_dir).expect("open image store");
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = busybox_archive(scratch.path(), ArchiveFormat::Oci, false);
    store.import(&file).unwrap_or_else(|e| panic!("importing busybox: {e}"));
    let image = store.resolve("busybox").expect("resolve busybox").expect("busybox in the store");
    (store, image)
}

/// One entry of a hand-made tarball; names are written verbatim (no `..` checks), so
/// hostile layers can be built.
pub struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    pub link: Option<&'a str>,
}

pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            if let Some(link) = e.link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        h.set_entry_type(e.kind);
        h.set_mode(if e.kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(e.data.len() as u64);
        h.set_mtime(outpost::image::build::EPOCH);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append(&h, e.data).expect("append raw entry");
    }
    builder.into_inner().expect("finish raw tar")
}

/// Every path below `dir`, relative, sorted (symlinks not followed).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// An OCI archive made by hand: each layer given as (blob as stored, diff_id), so tests can
/// use any compression or lie about the diff_id. Named `reference` by ref.name.
pub fn oci_archive_with_blobs(
    dir: &Path,
    reference: &str,
    layers: &[(Vec<u8>, String)],
) -> PathBuf {
    use serde_json::json;
    let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": outpost::image::platform::host().0, "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids }
    }))
    .expect("config json");
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(blob, _)| json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(blob), "size": blob.len() }))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": layer_descs,
    }))
    .expect("manifest json");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
                        "annotations": { "org.opencontainers.image.ref.name": reference } }]
    }))
    .expect("index json");
    let mut files: Vec<(String, Vec<u8>)> = vec![("index.json".into(), index)];
    for blob in layers.iter().map(|(b, _)| b.clone()).chain([config, manifest]) {
        files.push((format!("blobs/sha256/{}", &sha256(&blob)[7..]), blob));
    }
    let entries: Vec<RawEntry> = files
        .iter()
        .map(|(name, data)| RawEntry { name, kind: tar::EntryType::Regular, data, link: None })
        .collect();
    let path = dir.join(format!("{}.tar", reference.replace([':', '/'], "_")));
    std::fs::write(&path, raw_tar(&entries)).expect("write archive");
    path
}
