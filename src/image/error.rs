//! What can go wrong in the image store, each variant naming the file, layer or entry involved.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file or directory of the store (or an archive being imported) could not be used.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    /// The image reference is not a valid Docker-style `name[:tag][@digest]`.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: &'static str },

    /// Content does not hash to the digest it was announced with: corrupt or tampered.
    #[error("digest mismatch in {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },

    /// A tar stream (an archive or a layer) could not be read.
    #[error("{}: {what}: {source}", file.display())]
    Tar { file: PathBuf, what: String, source: io::Error },

    /// The archive is neither a docker-archive (manifest.json) nor an OCI layout (index.json).
    #[error(
        "{}: not an image archive: no index.json (OCI) or manifest.json (docker save)",
        file.display()
    )]
    UnknownArchive { file: PathBuf },

    /// A JSON document (manifest, index, config) could not be parsed.
    #[error("{}: {what}: {source}", file.display())]
    Json { file: PathBuf, what: String, source: serde_json::Error },

    /// A document or layer that the image needs is not in the archive or the store.
    #[error("{}: missing {what}", file.display())]
    Missing { file: PathBuf, what: String },

    /// A metadata file of the archive is larger than any sane one.
    #[error("{}: {entry} is larger than {limit} bytes", file.display())]
    TooLarge { file: PathBuf, entry: String, limit: u64 },

    /// The archive holds images for other platforms only.
    #[error("{}: no image for {host} (the archive has: {available})", file.display())]
    NoPlatform { file: PathBuf, host: String, available: String },

    /// The manifest and the image config disagree on the number of layers.
    #[error(
        "image {manifest}: {layers} layers in the manifest but {diff_ids} diff_ids in the config"
    )]
    LayerCount { manifest: String, layers: usize, diff_ids: usize },

    /// The layer is compressed with something outpost cannot decompress.
    #[error("layer {layer}: unsupported compression {format} (use gzip, zstd or none)")]
    UnsupportedCompression { layer: String, format: &'static str },

    /// A layer's tar entry would write outside the layer directory or through a link.
    #[error("layer {layer}: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry { layer: String, entry: String, reason: Unsafe },

    /// A layer's tar stream is corrupt or truncated where a header should be; `after` names
    /// the entry before it (None: the first header).
    #[error("layer {layer}: corrupt tar stream {}: {source}", position(after.as_deref()))]
    LayerTar { layer: String, after: Option<String>, source: io::Error },

    /// Writing one entry of a layer failed.
    #[error("layer {layer}: entry {entry:?}: {source}")]
    Unpack { layer: String, entry: String, source: io::Error },

    /// Something an entry of an archive being imported says is wrong or cannot be stored.
    #[error("{}: {entry}: {source}", file.display())]
    InArchive { file: PathBuf, entry: String, source: Box<ImageError> },

    /// No image by that reference in the store.
    #[error("no such image: {reference}")]
    NotFound { reference: String },

    /// The store's lock file could not be taken.
    #[error("{}: cannot lock the image store: {source}", path.display())]
    Lock { path: PathBuf, source: nix::Error },

    /// Something the image builder needs is not installed.
    #[error("{}: {source}: {hint}", path.display())]
    Prerequisite { path: PathBuf, hint: &'static str, source: io::Error },

    /// An OCI document could not be built or parsed.
    #[error("{what}: {source}")]
    Spec { what: String, source: oci_spec::OciSpecError },

    /// The file watcher for the import directory could not start.
    #[error("{}: cannot watch: {}", path.display(), crate::watch::watch_failure(source))]
    Watch { path: PathBuf, source: notify::Error },
}

/// Why a layer entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("absolute path")]
    Absolute,
    #[error("path contains '..'")]
    DotDot,
    #[error("path goes through {component:?}, which is a symlink or not a directory")]
    ThroughLink { component: String },
    #[error("hardlink target {target:?} is outside the layer")]
    HardlinkOutside { target: String },
    #[error("hardlink target {target:?} does not exist earlier in the layer")]
    HardlinkMissing { target: String },
}

/// Where in a tar stream a header could not be read, for an error message.
pub(crate) fn position(after: Option<&str>) -> String {
    match after {
        Some(entry) => format!("after entry {entry:?}"),
        None => "at the first entry".to_string(),
    }
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io { path: path.into(), source }
    }
}
