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
