//! Pulling images from OCI registries (the distribution API: Docker Hub, ghcr.io, a local
//! `registry:2`...) into the image store, and the kubelet's pull policies (`ensure`).
//!
//! Manifests and indexes are fetched into memory (bounded) and verified; config and layer
//! blobs the store lacks are streamed to disk through `ImageStore::write_blob`, which
//! verifies their digest; then `ImageStore::commit` unpacks the layers and records the
//! reference. The protocol is spoken with the hyper client already in the tree (see
//! `crate::http_client`): no second HTTP stack, no tokio runtime.

pub mod auth;
mod error;
pub mod keyring;
mod policy;
mod registry;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub use auth::Credentials;
pub use error::{PullError, PullFailure, Result};
pub use policy::{ensure, Ensured};

use super::blobs::MAX_JSON;
use super::reference::{validate_digest, Reference};
use super::{platform, Image, ImageError, ImageStore};
use registry::Registry;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Chunks in flight between the network and the blob writer (each at most a few 10 kB).
const CHANNEL_CHUNKS: usize = 16;

/// Where credentials and trust come from, and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// The node's docker `config.json` files (`auths.<host>.auth` = base64 `user:pass`).
    pub auth_files: Vec<PathBuf>,
    /// The pod's `imagePullSecrets`, tried before the node's credentials.
    pub pod_credentials: keyring::Keyring,
    /// Registries (`host` or `host:port`) spoken to over plain http; loopback always is.
    pub insecure_registries: Vec<String>,
    /// PEM files of CAs trusted besides the built-in Mozilla roots (private registries).
    pub ca_files: Vec<PathBuf>,
    /// Bound on connecting, on waiting for each response, and on each pause in a body.
    pub timeout: Duration,
}

impl PullOptions {
    /// Defaults for outpost's state directory: credentials from `<state>/auth.json`, then
    /// `/root/.docker/config.json`; 30 s timeouts.
    pub fn for_state(state: &Path) -> PullOptions {
        PullOptions {
            auth_files: vec![state.join("auth.json"), PathBuf::from("/root/.docker/config.json")],
            pod_credentials: keyring::Keyring::default(),
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Pulls `reference` (`busybox`, `ghcr.io/a/b:1`, `host:5000/app@sha256:…`) for this
/// host's platform into `store` and returns it as `resolve` would. Blobs already stored
/// are not downloaded again. Takes the store by `Arc`: disk writes and layer unpacking run
/// on blocking threads, off the caller's executor.
pub async fn pull(
    store: &Arc<ImageStore>,
    reference: &str,
    options: &PullOptions,
) -> Result<Image> {
    let parsed = Reference::parse(reference)
        .map_err(|source| PullError::InvalidName { image: reference.to_string(), source })?;
    let failed = |reason| PullError::Failed { image: reference.to_string(), reason };
    let start = Instant::now();
    let (image, fetched) = pull_parsed(store, &parsed, options).await.map_err(failed)?;
    log::info!(
        "pulled image {reference} ({}) in {} ms: {} blobs, {} bytes downloaded",
        image.digest,
        start.elapsed().as_millis(),
        fetched.0,
        fetched.1
    );
    Ok(image)
}

async fn pull_parsed(
    store: &Arc<ImageStore>,
    reference: &Reference,
    options: &PullOptions,
) -> std::result::Result<(Image, (usize, u64)), PullFailure> {
    let (name, repository) = reference.repository.split_once('/').ok_or_else(|| {
        PullFailure::Store(ImageError::InvalidReference {
            reference: reference.repository.clone(),
            reason: "no repository path",
        })
    })?;
    let wanted = reference.digest.clone().or_else(|| reference.tag.clone());
    let wanted = wanted.unwrap_or_else(|| "latest".into());
    let shown = match &reference.digest {
        Some(d) => format!("{}@{d}", reference.repository),
        None => format!("{}:{wanted}", reference.repository),
    };
    log::info!("pulling image {shown}");
    // Each credential that may serve the image in turn, the pod's first (the kubelet's
    // order); anonymous only when there is none. The first the registry accepts pulls.
    let mut candidates = options.pod_credentials.lookup(name, repository);
    for c in keyring::Keyring::from_files(&options.auth_files).lookup(name, repository) {
        if !candidates.contains(&c) {
            candidates.push(c);
        }
    }
    let mut candidates: Vec<Option<Credentials>> = candidates.into_iter().map(Some).collect();
    if candidates.is_empty() {
        candidates.push(None);
    }
    let mut attempt = 0;
    let (mut registry, (manifest_digest, manifest_bytes, index_digest)) = loop {
        let mut registry = Registry::new(name, repository, options, candidates[attempt].clone())?;
        match fetch_manifest(&mut registry, &wanted, &shown).await {
            Ok(manifest) => break (registry, manifest),
            Err(e @ PullFailure::Unauthorized { .. }) if attempt + 1 < candidates.len() => {
                attempt += 1;
                log::debug!("registry {name}: credentials refused, trying the next: {e}");
            }
            Err(e) => return Err(e),
        }
    };
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|source| {
        PullFailure::Document { what: format!("manifest {manifest_digest}"), source }
    })?;
    // The key the image is recorded (and resolved) under.
    let key = match (&reference.digest, reference.tagged()) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t,
        (None, None) => format!("{}:latest", reference.repository),
    };
    // A digest key for a manifest is recorded by commit itself; an index digest maps to the
    // manifest chosen from it.
    let names = if reference.digest.as_ref() == Some(&manifest_digest) {
        Vec::new()
    } else {
        vec![key.clone()]
    };
    if let Some(index) = &index_digest {
        log::debug!("image {shown}: index {index} → manifest {manifest_digest}");
    }
    let mut fetched = (0, 0);
    // Twice at most: a gc running between our blob writes and the commit may remove them.
    for attempt in 0..2 {
        write_bytes(store, manifest_bytes.clone(), &manifest_digest).await?;
        for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = desc.digest().to_string();
            validate_digest(&digest).map_err(|_| PullFailure::BadDigest {
                what: format!("manifest {manifest_digest}"),
                digest: digest.clone(),
            })?;
            if store.blobs.exists(&digest) {
                log::debug!("image {shown}: blob {digest} already present");
                continue;
            }
            fetched.1 += fetch_blob(store, &mut registry, desc).await?;
            fetched.0 += 1;
        }
        let (s, m, n) = (Arc::clone(store), manifest_digest.clone(), names.clone());
        match smol::unblock(move || s.commit(&m, &n)).await {
            Ok(_) => break,
            Err(ImageError::Missing { what, .. }) if attempt == 0 => {
                log::warn!("image {shown}: {what} vanished before commit, fetching again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let s = Arc::clone(store);
    let lookup = key.clone();
    let image = smol::unblock(move || s.resolve(&lookup))
        .await?
        .ok_or_else(|| PullFailure::Store(ImageError::NotFound { reference: key }))?;
    Ok((image, fetched))
}

/// What a manifest response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

/// Follows tag or digest → (index →) manifest: (manifest digest, its bytes, top index digest).
async fn fetch_manifest(
    registry: &mut Registry,
    wanted: &str,
    shown: &str,
) -> std::result::Result<(String, Vec<u8>, Option<String>), PullFailure> {
    let mut target = wanted.to_string();
    let mut what = shown.to_string();
    let mut index_digest = None;
    for _ in 0..3 {
        let (body, content_type, announced) =
            registry.manifest(&target, ACCEPT, MAX_JSON, &what).await?;
        let digest = format!("sha256:{:x}", Sha256::digest(&body));
        let expected = if target.starts_with("sha256:") { Some(target.clone()) } else { announced };
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(PullFailure::DigestMismatch { what, expected, actual: digest });
        }
        match kind(content_type.as_deref(), &body, &what)? {
            Kind::Manifest => return Ok((digest, body, index_digest)),
            Kind::Index => {
                let index: ImageIndex = serde_json::from_slice(&body).map_err(|source| {
                    PullFailure::Document { what: format!("index {digest}"), source }
                })?;
                let chosen = pick(&index)?;
                validate_digest(&chosen).map_err(|_| PullFailure::BadDigest {
                    what: format!("index {digest}"),
                    digest: chosen.clone(),
                })?;
                log::debug!("{what}: {} manifest is {chosen}", platform::host_name());
                index_digest.get_or_insert(digest);
                what = format!("{shown} ({})", platform::host_name());
                target = chosen;
            }
        }
    }
    Err(PullFailure::MediaType { what, media_type: "index nested too deep".into() })
}

fn pick(index: &ImageIndex) -> std::result::Result<String, PullFailure> {
    platform::select(index.manifests()).map(|d| d.digest().to_string()).ok_or_else(|| {
        PullFailure::NoPlatform {
            host: platform::host_name(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref().map(platform::describe))
                .collect::<Vec<_>>()
                .join(", "),
        }
    })
}

/// Manifest or index, by Content-Type, else by the document's own `mediaType` or shape.
fn kind(
    content_type: Option<&str>,
    body: &[u8],
    what: &str,
) -> std::result::Result<Kind, PullFailure> {
    let by_type = |t: &str| match t {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    };
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    if let Some(k) = content_type.as_deref().and_then(by_type) {
        return Ok(k);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let shape: Shape = serde_json::from_slice(body)
        .map_err(|source| PullFailure::Document { what: what.to_string(), source })?;
    let unsupported =
        |media_type: String| PullFailure::MediaType { what: what.to_string(), media_type };
    if shape.schema_version == Some(1) {
        return Err(unsupported("application/vnd.docker.distribution.manifest.v1+json".into()));
    }
    match (shape.media_type, shape.manifests, shape.layers) {
        (Some(t), _, _) => by_type(&t).ok_or_else(|| unsupported(t)),
        (None, Some(_), _) => Ok(Kind::Index),
        (None, None, Some(_)) => Ok(Kind::Manifest),
        (None, None, None) => Err(unsupported(content_type.unwrap_or_default())),
    }
}

async fn write_bytes(
    store: &Arc<ImageStore>,
    data: Vec<u8>,
    digest: &str,
) -> std::result::Result<(), PullFailure> {
    let (s, d) = (Arc::clone(store), digest.to_string());
    smol::unblock(move || s.write_blob(&data[..], Some(&d))).await?;
    Ok(())
}

/// Streams one blob into the store: the network side feeds a bounded channel, a blocking
/// thread writes and hashes. Returns the bytes downloaded.
async fn fetch_blob(
    store: &Arc<ImageStore>,
    registry: &mut Registry,
    desc: &Descriptor,
) -> std::result::Result<u64, PullFailure> {
    let digest = desc.digest().to_string();
    let what = format!("blob {digest}");
    let expected = desc.size();
    let mut response = registry.blob(&digest, &what).await?;
    log::debug!("downloading {what} ({expected} bytes)");
    let (tx, rx) = smol::channel::bounded::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let (s, d) = (Arc::clone(store), digest.clone());
    let writer =
        smol::unblock(move || s.write_blob(ChannelReader { rx, current: Bytes::new() }, Some(&d)));
    let feed = async move {
        let mut total = 0u64;
        let outcome = loop {
            match response.chunk().await {
                Ok(Some(data)) => {
                    total += data.len() as u64;
                    if total > expected {
                        break Err(PullFailure::Size {
                            what: what.clone(),
                            expected,
                            actual: total,
                        });
                    }
                    if tx.send(Ok(data)).await.is_err() {
                        // The writer stopped: its error says why.
                        return Ok(total);
                    }
                }
                Ok(None) if total == expected => return Ok(total),
                Ok(None) => {
                    break Err(PullFailure::Size { what: what.clone(), expected, actual: total })
                }
                Err(e) => break Err(e.into()),
            }
        };
        // Make the writer fail too, so a partial blob is never stored.
        let _ = tx.send(Err(io::Error::other("download failed"))).await;
        outcome
    };
    let (fed, written) = smol::future::zip(feed, writer).await;
    let total = fed?;
    written?;
    Ok(total)
}

/// A blocking `Read` over chunks sent by the async side.
struct ChannelReader {
    rx: smol::channel::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv_blocking() {
                Ok(Ok(data)) => self.current = data,
                Ok(Err(e)) => return Err(e),
                // The sender is gone: end of the blob.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_manifests_from_indexes() {
        let k = |ct: Option<&str>, body: &str| kind(ct, body.as_bytes(), "x");
        assert_eq!(k(Some(OCI_MANIFEST), "{}").unwrap(), Kind::Manifest);
        assert_eq!(k(Some(&format!("{DOCKER_LIST}; charset=utf-8")), "{}").unwrap(), Kind::Index);
        assert_eq!(k(Some("application/json"), r#"{"manifests":[]}"#).unwrap(), Kind::Index);
        assert_eq!(k(None, r#"{"schemaVersion":2,"layers":[]}"#).unwrap(), Kind::Manifest);
        assert_eq!(
            k(None, &format!(r#"{{"mediaType":"{DOCKER_MANIFEST}"}}"#)).unwrap(),
            Kind::Manifest
        );
        let schema1 = k(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            r#"{"schemaVersion":1}"#,
        );
        assert_eq!(
            schema1.unwrap_err().to_string(),
            "x: unsupported manifest media type \"application/vnd.docker.distribution.manifest.v1+json\""
        );
    }

    #[test]
    fn loopback_and_listed_registries_are_plain_http() {
        let mut options = PullOptions::for_state(Path::new("/s"));
        assert!(registry::is_insecure("127.0.0.1:5000", &options));
        assert!(registry::is_insecure("localhost", &options));
        assert!(registry::is_insecure("[::1]:5000", &options));
        assert!(!registry::is_insecure("docker.io", &options));
        assert!(!registry::is_insecure("reg.lan:5000", &options));
        options.insecure_registries.push("reg.lan:5000".into());
        assert!(registry::is_insecure("reg.lan:5000", &options));
        assert!(!registry::is_insecure("reg.lan:5001", &options));
    }
}
