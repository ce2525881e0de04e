//! Writes image archives (OCI layout or `docker save` format) from layer tarballs: the
//! offline way to make images for the quickstart and the tests. Deterministic: fixed times
//! and owners, so the same input gives the same digests.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::error::{ImageError, Result};
use super::platform;

/// Every time stamp in built archives: 2024-01-01T00:00:00Z.
pub const EPOCH: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// index.json + blobs/, `org.opencontainers.image.ref.name` naming the image.
    Oci,
    /// manifest.json + `<id>/layer.tar` + `<config>.json`, as `docker save` writes.
    Docker,
}

/// One image to put in an archive.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Its name, e.g. `busybox:latest`.
    pub reference: String,
    /// The `config` object of the image config (Env, Cmd, Entrypoint, WorkingDir, User...).
    pub config: serde_json::Value,
    /// Uncompressed layer tarballs, bottom first.
    pub layers: Vec<Vec<u8>>,
}

/// Digests of an image as written (the manifest digest only for OCI archives: the importer
/// writes its own manifest for docker archives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub manifest_digest: Option<String>,
    pub config_digest: String,
    pub diff_ids: Vec<String>,
}

/// Builds a layer tarball entry by entry, in the order given.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(EPOCH);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(&mut h, path, io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(self)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(self)
    }

    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.tar.into_inner()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    // GzEncoder writes mtime 0 and no file name: deterministic.
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// The full image config document for a spec.
fn config_json(spec: &ImageSpec, diff_ids: &[String]) -> serde_json::Value {
    let (arch, variant) = platform::host();
    let mut config = json!({
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": spec.config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": diff_ids.iter().map(|_| json!({ "created": CREATED, "created_by": "outpost image build" })).collect::<Vec<_>>(),
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    config
}

/// Writes `images` as one archive at `path`; layers and the archive itself gzip-compressed
/// when `gzip`.
pub fn write_archive(
    path: &Path,
    images: &[ImageSpec],
    format: ArchiveFormat,
    gzip_it: bool,
) -> Result<Vec<BuiltImage>> {
    let io_err = |e| ImageError::io(path, e);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |name: String, data: Vec<u8>, files: &mut Vec<(String, Vec<u8>)>| {
        if seen.insert(name.clone()) {
            files.push((name, data));
        }
    };
    let mut built = Vec::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    for spec in images {
        let diff_ids: Vec<String> = spec.layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&config_json(spec, &diff_ids)).map_err(|source| {
            ImageError::Json { file: path.to_path_buf(), what: "image config".into(), source }
        })?;
        let config_digest = sha256(&config);
        match format {
            ArchiveFormat::Oci => {
                let mut layer_descs = Vec::new();
                for layer in &spec.layers {
                    let (blob, media) = if gzip_it {
                        (
                            gzip(layer).map_err(io_err)?,
                            "application/vnd.oci.image.layer.v1.tar+gzip",
                        )
                    } else {
                        (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
                    };
                    let digest = sha256(&blob);
                    layer_descs
                        .push(json!({ "mediaType": media, "digest": digest, "size": blob.len() }));
                    add(format!("blobs/sha256/{}", &digest[7..]), blob, &mut files);
                }
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
                    "layers": layer_descs,
                });
                let manifest = serde_json::to_vec(&manifest).map_err(|source| {
                    ImageError::Json { file: path.to_path_buf(), what: "manifest".into(), source }
                })?;
                let manifest_digest = sha256(&manifest);
                index_entries.push(json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest.len(),
                    "annotations": { "org.opencontainers.image.ref.name": spec.reference },
                }));
                add(format!("blobs/sha256/{}", &config_digest[7..]), config, &mut files);
                add(format!("blobs/sha256/{}", &manifest_digest[7..]), manifest, &mut files);
                built.push(BuiltImage {
                    manifest_digest: Some(manifest_digest),
                    config_digest,
                    diff_ids,
                });
            }
            ArchiveFormat::Docker => {
                let mut layer_paths = Vec::new();
                for (layer, diff_id) in spec.layers.iter().zip(&diff_ids) {
                    let name = format!("{}/layer.tar", &diff_id[7..]);
                    let blob = if gzip_it { gzip(layer).map_err(io_err)? } else { layer.clone() };
                    add(name.clone(), blob, &mut files);
                    layer_paths.push(name);
                }
                let config_name = format!("{}.json", &config_digest[7..]);
                add(config_name.clone(), config, &mut files);
                docker_entries.push(json!({ "Config": config_name, "RepoTags": [spec.reference], "Layers": layer_paths }));
                built.push(BuiltImage { manifest_digest: None, config_digest, diff_ids });
            }
        }
    }
    let json_bytes = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    match format {
        ArchiveFormat::Oci => {
            files.push(("oci-layout".into(), json_bytes(json!({ "imageLayoutVersion": "1.0.0" }))));
            files.push((
                "index.json".into(),
                json_bytes(json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index_entries })),
            ));
        }
        ArchiveFormat::Docker => {
            files.push(("manifest.json".into(), json_bytes(json!(docker_entries))))
        }
    }
    let mut outer = tar::Builder::new(Vec::new());
    outer.mode(tar::HeaderMode::Deterministic);
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(EPOCH);
        outer.append_data(&mut h, name, &data[..]).map_err(io_err)?;
    }
    let tarball = outer.into_inner().map_err(io_err)?;
    let out = if gzip_it { gzip(&tarball).map_err(io_err)? } else { tarball };
    let tmp = path.with_extension("partial");
    File::create(&tmp)
        .and_then(|mut f| f.write_all(&out).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err)?;
    Ok(built)
}
