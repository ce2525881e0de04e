//! `ImageStore`: the one entry point of the image module.
//!
//! Layout under the store directory (`<state>/images`):
//! - `blobs/sha256/<hex>`: manifests, configs, layer tarballs, by digest;
//! - `layers/<hex of diff_id>/`: each layer unpacked once, usable as an overlay lower dir;
//! - `refs.json`: reference → manifest digest; `lock`: taken by writers;
//! - `import/`: tarballs dropped here are imported (see `autoimport`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};

use super::blobs::Blobs;
use super::error::{ImageError, Result};
use super::reference::{parse_lookup, Lookup};
use super::refs::{self, Refs, StoreLock};
use super::{fsutil, unpack};

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    /// The normalized reference it was resolved by (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Manifest digest: what `gc`'s in-use set holds.
    pub digest: String,
    pub config: ImageConfiguration,
    /// Unpacked layer directories, bottom → top. overlayfs wants `lowerdir=` top first:
    /// reverse them.
    pub layers: Vec<PathBuf>,
    /// Bytes of config and layer blobs as stored, as in [`ImageSummary::size`] (the kubelet's
    /// "Image size" in its `Pulled` event).
    pub size: u64,
}

/// One image of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalized `repository:tag` names; empty for an image imported without a name.
    pub references: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Config digest: Docker's and crictl's IMAGE ID.
    pub id: String,
    /// Bytes of config and layer blobs as stored (compressed where they came compressed).
    pub size: u64,
}

/// A manifest and config, parsed once: the content behind a digest never changes.
struct Parsed {
    manifest: ImageManifest,
    config: ImageConfiguration,
    layer_dirs: Vec<PathBuf>,
}

impl Parsed {
    fn size(&self) -> u64 {
        let m = &self.manifest;
        m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

pub struct ImageStore {
    root: PathBuf,
    pub(crate) blobs: Blobs,
    layers_dir: PathBuf,
    pub(crate) refs: Refs,
    parsed: Mutex<HashMap<String, Arc<Parsed>>>,
}

impl ImageStore {
    /// Opens (creating if needed) the store in `dir`, normally `<state>/images`.
    pub fn open(dir: impl AsRef<Path>) -> Result<ImageStore> {
        let root = dir.as_ref().to_path_buf();
        let blobs = Blobs::open(&root)?;
        let layers_dir = root.join("layers");
        fsutil::create_dir_all(&layers_dir)?;
        fsutil::create_dir_all(&root.join("import"))?;
        let refs = Refs::new(&root);
        Ok(ImageStore { root, blobs, layers_dir, refs, parsed: Mutex::new(HashMap::new()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layers_dir(&self) -> &Path {
        &self.layers_dir
    }

    /// Where tarballs are dropped for automatic import.
    pub fn import_dir(&self) -> PathBuf {
        self.root.join("import")
    }

    pub(crate) fn lock(&self) -> Result<StoreLock> {
        refs::lock(&self.root.join("lock"))
    }

    /// Finds an image by `name[:tag]`, `name@sha256:…` or a manifest digest. Ok(None) when
    /// the store has no such image. Cheap when nothing changed: a `stat` of the index and
    /// one per layer directory (a missing layer is unpacked again from its blob).
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>> {
        let lookup = parse_lookup(reference)?;
        let index = self.refs.load()?;
        let (name, digest) = match &lookup {
            Lookup::Tag(t) => match index.refs.get(t) {
                Some(d) => (t.clone(), d.clone()),
                None => return Ok(None),
            },
            Lookup::Digest(d) if index.is_referenced(d) => (d.clone(), d.clone()),
            // An index digest a pull recorded, mapped to the manifest chosen from it.
            Lookup::Digest(d) => match index.refs.get(d) {
                Some(manifest) => (d.clone(), manifest.clone()),
                None => return Ok(None),
            },
        };
        let parsed = self.parsed(&digest)?;
        let diff_ids = parsed.config.rootfs().diff_ids();
        for ((layer, diff_id), dir) in
            parsed.manifest.layers().iter().zip(diff_ids).zip(&parsed.layer_dirs)
        {
            if !dir.is_dir() {
                log::warn!("image {name}: layer {} missing, unpacking it again", dir.display());
                unpack::ensure_layer(
                    &self.layers_dir,
                    &self.blobs,
                    layer.digest().as_ref(),
                    diff_id,
                )?;
            }
        }
        Ok(Some(Image {
            reference: name,
            digest,
            config: parsed.config.clone(),
            layers: parsed.layer_dirs.clone(),
            size: parsed.size(),
        }))
    }

    /// All images, sorted by first reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let index = self.refs.load()?;
        let mut by_digest: HashMap<&str, Vec<String>> = HashMap::new();
        for (name, digest) in &index.refs {
            let names = by_digest.entry(digest).or_default();
            if !name.starts_with("sha256:") {
                names.push(name.clone());
            }
        }
        let mut out = Vec::new();
        for (digest, references) in by_digest {
            let parsed = self.parsed(digest)?;
            out.push(ImageSummary {
                references,
                digest: digest.to_string(),
                id: parsed.manifest.config().digest().to_string(),
                size: parsed.size(),
            });
        }
        out.sort_by(|a, b| {
            (a.references.first(), &a.digest).cmp(&(b.references.first(), &b.digest))
        });
        Ok(out)
    }

    /// Removes a reference; by digest, every reference to that manifest. Returns what was
    /// removed. Content stays until `gc`, which knows what running containers use.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>> {
        let lookup = parse_lookup(reference)?;
        let lock = self.lock()?;
        let removed = self.refs.update(&lock, |index| match &lookup {
            Lookup::Tag(t) => index.refs.remove(t).map(|_| vec![t.clone()]).unwrap_or_default(),
            Lookup::Digest(d) => {
                let names: Vec<String> =
                    index.refs.iter().filter(|(_, v)| *v == d).map(|(k, _)| k.clone()).collect();
                for n in &names {
                    index.refs.remove(n);
                }
                names
            }
        })?;
        if removed.is_empty() {
            return Err(ImageError::NotFound { reference: reference.to_string() });
        }
        log::info!("image references removed: {}", removed.join(", "));
        Ok(removed)
    }

    /// Stores a blob, verifying it against `expected` when given. With `commit`, the seam a
    /// registry puller writes through: blobs first, then the manifest is committed.
    pub fn write_blob(
        &self,
        reader: impl std::io::Read,
        expected: Option<&str>,
    ) -> Result<(String, u64)> {
        self.blobs.write(reader, expected, expected.unwrap_or("blob"))
    }

    /// Makes a stored manifest (and its stored config and layer blobs) an image under
    /// `names` (normalized references; none = by digest only): unpacks its layers, then
    /// records the references. Returns the references recorded.
    pub fn commit(&self, manifest_digest: &str, names: &[String]) -> Result<Vec<String>> {
        let lock = self.lock()?;
        self.commit_locked(&lock, manifest_digest, names)
    }

    pub(crate) fn commit_locked(
        &self,
        lock: &StoreLock,
        manifest_digest: &str,
        names: &[String],
    ) -> Result<Vec<String>> {
        let parsed = self.parsed(manifest_digest)?;
        let diff_ids = parsed.config.rootfs().diff_ids();
        for (layer, diff_id) in parsed.manifest.layers().iter().zip(diff_ids) {
            if !self.blobs.exists(layer.digest().as_ref()) {
                return Err(ImageError::Missing {
                    file: self.blobs.dir().to_path_buf(),
                    what: format!("layer blob {} of image {manifest_digest}", layer.digest()),
                });
            }
            unpack::ensure_layer(&self.layers_dir, &self.blobs, layer.digest().as_ref(), diff_id)?;
        }
        let keys: Vec<String> =
            if names.is_empty() { vec![manifest_digest.to_string()] } else { names.to_vec() };
        self.refs.update(lock, |index| {
            for k in &keys {
                index.refs.insert(k.clone(), manifest_digest.to_string());
            }
        })?;
        log::info!("image {manifest_digest} stored as {}", keys.join(", "));
        Ok(keys)
    }

    /// Manifest and config behind a digest, parsed once and cached.
    fn parsed(&self, digest: &str) -> Result<Arc<Parsed>> {
        if let Some(p) = self.parsed.lock().unwrap_or_else(PoisonError::into_inner).get(digest) {
            return Ok(Arc::clone(p));
        }
        let manifest: ImageManifest = self.blobs.read_json(digest, "image manifest")?;
        if matches!(manifest.media_type(), Some(MediaType::ImageIndex)) {
            return Err(ImageError::Missing {
                file: self.blobs.dir().to_path_buf(),
                what: format!("image manifest {digest} (it is an index)"),
            });
        }
        let config: ImageConfiguration =
            self.blobs.read_json(manifest.config().digest().as_ref(), "image config")?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::LayerCount {
                manifest: digest.to_string(),
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layer_dirs = diff_ids
            .iter()
            .map(|d| unpack::layer_path(&self.layers_dir, d))
            .collect::<Result<Vec<_>>>()?;
        let parsed = Arc::new(Parsed { manifest, config, layer_dirs });
        self.parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.to_string(), Arc::clone(&parsed));
        Ok(parsed)
    }

    /// Manifest digest → (config digest, layer blob digests, diff_ids), for gc.
    pub(crate) fn content_of(&self, digest: &str) -> Result<(String, Vec<String>, Vec<String>)> {
        let p = self.parsed(digest)?;
        Ok((
            p.manifest.config().digest().to_string(),
            p.manifest.layers().iter().map(|l| l.digest().to_string()).collect(),
            p.config.rootfs().diff_ids().clone(),
        ))
    }

    pub(crate) fn forget(&self, digest: &str) {
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner).remove(digest);
    }
}
