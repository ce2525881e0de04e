//! Imports `docker save` archives and OCI image layouts in a tarball.
//!
//! One streaming pass (a gzip stream cannot seek): every file goes straight into the blob
//! store (OCI blobs verified against their names), the few metadata documents are kept in
//! memory. Then the images are assembled from what the archive said.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path};

use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifestBuilder, MediaType,
};
use serde::Deserialize;

use super::blobs::MAX_JSON;
use super::compression::{self, Compression};
use super::error::{position, ImageError, Result};
use super::platform;
use super::reference::Reference;
use super::refs::StoreLock;
use super::store::ImageStore;

/// Top-level documents kept in memory instead of the blob store.
const METADATA: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What the single pass over the archive found.
#[derive(Default)]
struct Contents {
    metadata: HashMap<String, Vec<u8>>,
    /// Archive path → (digest, size) of the blob it was stored as.
    files: HashMap<String, (String, u64)>,
    /// Archive path → target path (docker save links repeated layers).
    links: HashMap<String, String>,
}

impl ImageStore {
    /// Imports a docker-archive or OCI-archive tarball (plain, gzip or zstd); returns the
    /// references it added (a manifest digest for an image without a name).
    pub fn import(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        import_archive(self, path.as_ref())
    }
}

fn import_archive(store: &ImageStore, file: &Path) -> Result<Vec<String>> {
    let lock = store.lock()?;
    let contents = read_archive(store, file)?;
    let images = if contents.metadata.contains_key("index.json") {
        oci_images(store, file, &contents)?
    } else if contents.metadata.contains_key("manifest.json") {
        docker_images(store, file, &contents)?
    } else {
        return Err(ImageError::UnknownArchive { file: file.to_path_buf() });
    };
    if images.is_empty() {
        return Err(ImageError::Missing { file: file.to_path_buf(), what: "images".into() });
    }
    let mut refs = Vec::new();
    for (digest, names) in images {
        refs.extend(commit(store, &lock, &digest, &names, file)?);
    }
    log::info!("imported {}: {}", file.display(), refs.join(", "));
    Ok(refs)
}

fn commit(
    store: &ImageStore,
    lock: &StoreLock,
    digest: &str,
    names: &[String],
    file: &Path,
) -> Result<Vec<String>> {
    store.commit_locked(lock, digest, names).map_err(|e| match e {
        ImageError::Missing { what, .. } => ImageError::Missing { file: file.to_path_buf(), what },
        e => e,
    })
}

fn read_archive(store: &ImageStore, file: &Path) -> Result<Contents> {
    let tar_err = |what: &str, source| ImageError::Tar {
        file: file.to_path_buf(),
        what: what.into(),
        source,
    };
    let f = File::open(file).map_err(|e| ImageError::io(file, e))?;
    let (_, reader) = compression::decompress(BufReader::with_capacity(256 * 1024, f))
        .map_err(|e| ImageError::io(file, e))?
        .map_err(|format| ImageError::UnsupportedCompression {
            layer: file.display().to_string(),
            format,
        })?;
    let mut archive = tar::Archive::new(reader);
    let mut contents = Contents::default();
    // The entry read last: a header that cannot be read is named by what came before it.
    let mut last: Option<String> = None;
    for entry in archive.entries().map_err(|e| tar_err(&position(None), e))? {
        let mut entry = entry.map_err(|e| tar_err(&position(last.as_deref()), e))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        last = Some(raw_name.clone());
        let raw = entry.path().map_err(|e| tar_err(&format!("entry {raw_name:?}"), e))?;
        let name = normalize(&raw);
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(target) = entry.link_name().map_err(|e| tar_err(&name, e))? {
                    let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                        let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                        normalize(&parent.join(target))
                    } else {
                        normalize(&target)
                    };
                    contents.links.insert(name, target);
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if METADATA.contains(&name.as_str()) {
                    let mut data = Vec::new();
                    (&mut entry)
                        .take(MAX_JSON + 1)
                        .read_to_end(&mut data)
                        .map_err(|e| tar_err(&name, e))?;
                    if data.len() as u64 > MAX_JSON {
                        return Err(ImageError::TooLarge {
                            file: file.into(),
                            entry: name,
                            limit: MAX_JSON,
                        });
                    }
                    contents.metadata.insert(name, data);
                    continue;
                }
                let expected =
                    name.strip_prefix("blobs/sha256/").map(|hex| format!("sha256:{hex}"));
                let what = format!("{}: {name}", file.display());
                let stored = store.blobs.write(&mut entry, expected.as_deref(), &what)?;
                contents.files.insert(name, stored);
            }
            _ => {}
        }
    }
    Ok(contents)
}

/// Archive paths as plain relative strings: "./a/../b" → "b". Only ever used as map keys.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str().unwrap_or("\u{fffd}")),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

impl Contents {
    fn json<T: for<'de> Deserialize<'de>>(&self, file: &Path, name: &str) -> Result<T> {
        let data = self.metadata.get(name).ok_or_else(|| ImageError::Missing {
            file: file.to_path_buf(),
            what: name.to_string(),
        })?;
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            file: file.to_path_buf(),
            what: name.to_string(),
            source,
        })
    }

    /// The stored blob behind an archive path, following links.
    fn blob(&self, file: &Path, path: &str) -> Result<&(String, u64)> {
        let mut p = normalize(Path::new(path));
        for _ in 0..8 {
            if let Some(found) = self.files.get(&p) {
                return Ok(found);
            }
            match self.links.get(&p) {
                Some(target) => p = target.clone(),
                None => break,
            }
        }
        Err(ImageError::Missing { file: file.to_path_buf(), what: path.to_string() })
    }
}

/// OCI layout: index.json lists manifests (or nested indexes for multi-arch images).
fn oci_images(
    store: &ImageStore,
    file: &Path,
    contents: &Contents,
) -> Result<Vec<(String, Vec<String>)>> {
    let index: ImageIndex = contents.json(file, "index.json")?;
    let mut images = Vec::new();
    let mut other_platforms = Vec::new();
    for desc in index.manifests() {
        let names = names_of(desc, file).map_err(|e| in_archive(file, "index.json", e))?;
        let manifest = if is_index(desc.media_type()) {
            pick_from_index(store, file, desc.digest().as_ref(), 0)
                .map_err(|e| in_archive(file, "index.json", e))?
        } else if desc.platform().as_ref().is_some_and(|p| !platform::matches(p)) {
            other_platforms.extend(desc.platform().as_ref().map(platform::describe));
            continue;
        } else {
            desc.digest().to_string()
        };
        if !store.blobs.exists(&manifest) {
            return Err(ImageError::Missing {
                file: file.to_path_buf(),
                what: format!("manifest blob {manifest}"),
            });
        }
        images.push((manifest, names));
    }
    if images.is_empty() && !other_platforms.is_empty() {
        return Err(ImageError::NoPlatform {
            file: file.to_path_buf(),
            host: platform::host_name(),
            available: other_platforms.join(", "),
        });
    }
    Ok(images)
}

fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(m) => m == DOCKER_LIST,
        _ => false,
    }
}

/// Follows a (possibly nested) index down to the host platform's manifest.
fn pick_from_index(store: &ImageStore, file: &Path, digest: &str, depth: usize) -> Result<String> {
    let index: ImageIndex = store.blobs.read_json(digest, "image index")?;
    let chosen = platform::select(index.manifests()).ok_or_else(|| ImageError::NoPlatform {
        file: file.to_path_buf(),
        host: platform::host_name(),
        available: index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref().map(platform::describe))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if is_index(chosen.media_type()) && depth < 4 {
        return pick_from_index(store, file, chosen.digest().as_ref(), depth + 1);
    }
    Ok(chosen.digest().to_string())
}

/// The names an OCI index entry gives its image. containerd's full-name annotation wins;
/// `ref.name` counts only when it is a full reference (buildkit writes a bare tag there,
/// which names no repository).
fn names_of(desc: &Descriptor, file: &Path) -> Result<Vec<String>> {
    let Some(annotations) = desc.annotations() else { return Ok(Vec::new()) };
    let name = match (annotations.get(CONTAINERD_NAME), annotations.get(REF_NAME)) {
        (Some(full), _) => full,
        (None, Some(r)) if r.contains(':') || r.contains('/') => r,
        (None, Some(tag)) => {
            log::warn!(
                "{}: image {} has only the tag {tag:?}, no repository: importing it by digest",
                file.display(),
                desc.digest()
            );
            return Ok(Vec::new());
        }
        (None, None) => return Ok(Vec::new()),
    };
    Ok(Reference::parse(name)?.tagged().into_iter().collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// docker save: manifest.json lists config and layer files; we write an OCI manifest for
/// each image so the store holds one kind of image.
fn docker_images(
    store: &ImageStore,
    file: &Path,
    contents: &Contents,
) -> Result<Vec<(String, Vec<String>)>> {
    let entries: Vec<DockerEntry> = contents.json(file, "manifest.json")?;
    let repositories: HashMap<String, HashMap<String, String>> =
        if contents.metadata.contains_key("repositories") {
            contents.json(file, "repositories")?
        } else {
            HashMap::new()
        };
    let mut images = Vec::new();
    for entry in entries {
        let (config_digest, config_size) = contents.blob(file, &entry.config)?.clone();
        let config: ImageConfiguration = store
            .blobs
            .read_json(&config_digest, "image config")
            .map_err(|e| in_archive(file, &entry.config, e))?;
        let host = platform::host().0;
        if config.architecture().to_string() != host {
            log::warn!(
                "{}: image is for {}, this host is {host}",
                file.display(),
                config.architecture()
            );
        }
        let mut layers = Vec::new();
        for path in &entry.layers {
            let (digest, size) = contents.blob(file, path)?.clone();
            let media_type =
                layer_media_type(store, &digest).map_err(|e| in_archive(file, path, e))?;
            layers.push(descriptor(media_type, size, &digest)?);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, config_size, &config_digest)?)
            .layers(layers)
            .build()
            .map_err(|source| ImageError::Spec {
                what: format!("{}: manifest", file.display()),
                source,
            })?;
        let json = serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
            file: file.to_path_buf(),
            what: "generated manifest".into(),
            source,
        })?;
        let digest = store.blobs.write_bytes(&json, "generated manifest")?;
        let mut tags = entry.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            tags = legacy_tags(&repositories, &entry.layers);
        }
        let names = tags
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.tagged().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| in_archive(file, "manifest.json", e))?;
        images.push((digest, names));
    }
    Ok(images)
}

/// The old `repositories` file maps repo → tag → id of the top layer's directory.
fn legacy_tags(
    repositories: &HashMap<String, HashMap<String, String>>,
    layers: &[String],
) -> Vec<String> {
    let Some(top) = layers.last().and_then(|l| l.split('/').next()) else { return Vec::new() };
    let mut tags: Vec<String> = repositories
        .iter()
        .flat_map(|(repo, tags)| {
            tags.iter().filter(|(_, id)| *id == top).map(move |(t, _)| format!("{repo}:{t}"))
        })
        .collect();
    tags.sort();
    tags
}

/// Names the archive and the entry in an error of the store or of a reference.
fn in_archive(file: &Path, entry: &str, source: ImageError) -> ImageError {
    ImageError::InArchive {
        file: file.to_path_buf(),
        entry: entry.to_string(),
        source: Box::new(source),
    }
}

fn layer_media_type(store: &ImageStore, digest: &str) -> Result<MediaType> {
    let mut head = [0u8; 8];
    let mut f = store.blobs.open_blob(digest)?;
    let n = f
        .read(&mut head)
        .map_err(|e| ImageError::io(store.blobs.path(digest).unwrap_or_default(), e))?;
    Ok(match compression::detect(&head[..n]) {
        Ok(Compression::Gzip) => MediaType::ImageLayerGzip,
        Ok(Compression::Zstd) => MediaType::ImageLayerZstd,
        // Unsupported formats are reported when the layer is unpacked, naming it.
        Ok(Compression::None) | Err(_) => MediaType::ImageLayer,
    })
}

fn descriptor(media_type: MediaType, size: u64, digest: &str) -> Result<Descriptor> {
    let d = Digest::try_from(digest)
        .map_err(|source| ImageError::Spec { what: format!("digest {digest}"), source })?;
    Ok(Descriptor::new(media_type, size, d))
}
