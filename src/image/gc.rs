//! Garbage collection: removes blobs and unpacked layers that no referenced or running
//! image needs, and temp files of writers that died.

use std::collections::HashSet;
use std::path::Path;

use super::blobs::hex_of;
use super::error::{ImageError, Result};
use super::fsutil::{is_stale_tmp, TMP_PREFIX};
use super::store::ImageStore;

/// What one `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    /// Bytes of removed blobs (unpacked layers are not measured).
    pub blob_bytes: u64,
}

impl ImageStore {
    /// Keeps every image that has a reference or whose manifest digest is in `in_use`
    /// (images of running containers, even untagged since); removes the rest.
    pub fn gc(&self, in_use: &HashSet<String>) -> Result<GcReport> {
        let lock = self.lock()?;
        let index = self.refs.load()?;
        let roots: HashSet<&String> = index.refs.values().chain(in_use.iter()).collect();
        let mut keep_blobs = HashSet::new();
        let mut keep_layers = HashSet::new();
        for digest in roots {
            match self.content_of(digest) {
                Ok((config, layers, diff_ids)) => {
                    keep_blobs.insert(digest.clone());
                    keep_blobs.insert(config);
                    keep_blobs.extend(layers);
                    keep_layers.extend(diff_ids);
                }
                // Its blobs are unreadable, so nothing can be kept for it.
                Err(e) => log::warn!("gc: image {digest} is broken, keeping nothing for it: {e}"),
            }
        }
        let keep_blobs: HashSet<&str> = keep_blobs.iter().filter_map(|d| hex_of(d)).collect();
        let keep_layers: HashSet<&str> = keep_layers.iter().filter_map(|d| hex_of(d)).collect();
        let mut report = GcReport::default();
        for (name, path, meta) in entries(self.blobs.dir())? {
            if sweepable(&name, &keep_blobs) {
                std::fs::remove_file(&path).map_err(|e| ImageError::io(&path, e))?;
                self.forget(&format!("sha256:{name}"));
                report.blobs_removed += 1;
                report.blob_bytes += meta.len();
            }
        }
        for (name, path, _) in entries(self.layers_dir())? {
            if sweepable(&name, &keep_layers) {
                std::fs::remove_dir_all(&path).map_err(|e| ImageError::io(&path, e))?;
                report.layers_removed += 1;
            }
        }
        drop(lock);
        if report != GcReport::default() {
            log::info!(
                "image gc: removed {} blobs ({} bytes) and {} layers",
                report.blobs_removed,
                report.blob_bytes,
                report.layers_removed
            );
        }
        Ok(report)
    }
}

/// Unreferenced content, or a temp file whose writer is gone (a live one is mid-write).
fn sweepable(name: &str, keep: &HashSet<&str>) -> bool {
    if name.starts_with(TMP_PREFIX) {
        is_stale_tmp(name)
    } else {
        !keep.contains(name)
    }
}

fn entries(dir: &Path) -> Result<Vec<(String, std::path::PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))? {
        let e = e.map_err(|e| ImageError::io(dir, e))?;
        let meta = e.metadata().map_err(|err| ImageError::io(e.path(), err))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path(), meta));
    }
    Ok(out)
}
/// Which images a collection removes besides unreferenced content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unused {
    /// Tagged images stay, used or not (periodic collection: as the kubelet's image GC keeps
    /// images until disk pressure, for an edge device may be offline when it needs one).
    Keep,
    /// Images no pod names are removed (the kubelet's `DeleteUnusedImages` under disk
    /// pressure).
    Remove,
}

/// What [`collect`] did.
#[derive(Debug, Default)]
pub struct Collected {
    pub images_removed: usize,
    pub gc: GcReport,
}

/// The one image collection path: removes per `unused`, then collects content that no tag
/// and no image of `used` (references pods name) needs. Logs what it did; failures are
/// logged and leave the store as it was.
pub fn collect(store: &ImageStore, used: &[String], unused: Unused) -> Collected {
    let in_use: HashSet<String> =
        used.iter().filter_map(|i| store.resolve(i).ok().flatten()).map(|i| i.digest).collect();
    let mut done = Collected::default();
    if unused == Unused::Remove {
        for image in store.list().unwrap_or_default() {
            if in_use.contains(&image.digest) {
                continue;
            }
            match store.remove(&image.digest) {
                Ok(names) => {
                    log::warn!("images: disk pressure: removed unused image {}", names.join(", "));
                    done.images_removed += 1;
                }
                Err(e) => log::warn!("images: disk pressure: removing image {}: {e}", image.digest),
            }
        }
    }
    match store.gc(&in_use) {
        Ok(r) => {
            if r.blobs_removed + r.layers_removed > 0 || unused == Unused::Keep {
                log::info!(
                    "images: garbage collection removed {} blobs ({} bytes) and {} layers",
                    r.blobs_removed,
                    r.blob_bytes,
                    r.layers_removed
                );
            }
            done.gc = r;
        }
        Err(e) => log::warn!("images: garbage collection: {e}"),
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::build::{write_archive, ArchiveFormat, ImageSpec, LayerBuilder};

    /// Node-level reclaim removes exactly the images no pod names, and their content.
    #[test]
    fn removing_unused_images_keeps_what_pods_name() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::open(dir.path().join("images")).unwrap();
        let spec = |reference: &str, data: &[u8]| {
            let mut l = LayerBuilder::new();
            l.file("data", 0o644, data).unwrap();
            ImageSpec {
                reference: reference.into(),
                config: serde_json::json!({"Cmd": ["sh"]}),
                layers: vec![l.finish().unwrap()],
            }
        };
        let archive = dir.path().join("two.tar");
        let specs = [spec("example.com/used:1", b"used"), spec("example.com/unused:1", b"unused")];
        write_archive(&archive, &specs, ArchiveFormat::Oci, false).unwrap();
        images.import(&archive).unwrap();
        assert_eq!(images.list().unwrap().len(), 2);
        let used = ["example.com/used:1".to_string()];
        assert_eq!(collect(&images, &used, Unused::Remove).images_removed, 1);
        let left: Vec<Vec<String>> =
            images.list().unwrap().into_iter().map(|i| i.references).collect();
        assert_eq!(left, [vec!["example.com/used:1".to_string()]]);
        assert_eq!(collect(&images, &used, Unused::Remove).images_removed, 0, "nothing left");
        // Periodic collection keeps tagged images, used or not.
        assert_eq!(collect(&images, &[], Unused::Keep).images_removed, 0);
        assert_eq!(images.list().unwrap().len(), 1);
    }
}
