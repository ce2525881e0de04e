//! Why a pull (or a pull policy) failed, worded like the kubelet's `ErrImagePull` events.

use crate::http_client::HttpError;
use crate::image::ImageError;

pub type Result<T, E = PullError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Pull policy `Never` and the image is not in the store (the kubelet's `ErrImageNeverPull`).
    #[error("Container image \"{image}\" is not present with pull policy of Never")]
    NeverPull { image: String },

    /// The reference cannot be parsed (the kubelet's `InvalidImageName`).
    #[error("Failed to apply default image tag \"{image}\": {source}")]
    InvalidName { image: String, source: ImageError },

    /// The pod asks for a pull policy other than Always, IfNotPresent or Never.
    #[error(
        "image \"{image}\": unknown imagePullPolicy {policy:?} (use Always, IfNotPresent or Never)"
    )]
    Policy { image: String, policy: String },

    /// Looking the image up in the local store failed.
    #[error("image \"{image}\": {source}")]
    Store { image: String, source: ImageError },

    /// Talking to the registry or storing what it sent failed (`ErrImagePull`).
    #[error("failed to pull image \"{image}\": {reason}")]
    Failed { image: String, reason: PullFailure },
}

impl PullError {
    /// The kubelet's waiting reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::NeverPull { .. } => "ErrImageNeverPull",
            PullError::InvalidName { .. } => "InvalidImageName",
            PullError::Policy { .. } | PullError::Store { .. } | PullError::Failed { .. } => {
                "ErrImagePull"
            }
        }
    }

    /// Whether the registry could not be reached at all (offline, down, filtered): the case
    /// in which `ensure` with `Always` falls back to a local copy.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PullError::Failed { reason, .. } if reason.is_unreachable())
    }
}

/// What went wrong during a pull; shown after `failed to pull image "x": `.
#[derive(Debug, thiserror::Error)]
pub enum PullFailure {
    /// Reaching the registry or reading its answer failed (lookup, dial, TLS, timeout,
    /// a broken exchange, a CA file, a body over its limit).
    #[error(transparent)]
    Transport(#[from] HttpError),

    /// The manifest or blob does not exist in the registry.
    #[error("{what}: not found")]
    NotFound { what: String },

    /// The registry refused access (no or wrong credentials, or no such repository).
    #[error(
        "unauthorized: {registry} refused {who} access to {repository}{}",
        message_suffix(message)
    )]
    Unauthorized { registry: String, repository: String, who: &'static str, message: String },

    /// The registry answered with an unexpected status.
    #[error("{method} {url}: unexpected status {status}{}", message_suffix(message))]
    Status { method: &'static str, url: String, status: u16, message: String },

    /// The registry asked for an authentication scheme outpost does not speak.
    #[error("{registry}: unsupported authentication challenge {challenge:?}")]
    Challenge { registry: String, challenge: String },

    /// The token server's answer has no token.
    #[error("token from {realm}: {reason}")]
    Token { realm: String, reason: String },

    /// A URL the registry gave (token realm, redirect) is unusable.
    #[error("invalid URL {url:?} from {registry}: {reason}")]
    Url { registry: String, url: String, reason: &'static str },

    /// A descriptor's digest is not one outpost can verify (only sha256 is supported).
    #[error("{what}: unsupported or invalid digest {digest:?} (want sha256:<64 hex digits>)")]
    BadDigest { what: String, digest: String },

    /// A manifest or index is not valid JSON of the expected shape.
    #[error("{what}: {source}")]
    Document { what: String, source: serde_json::Error },

    /// A manifest of a kind outpost cannot run (Docker schema 1, artifacts...).
    #[error("{what}: unsupported manifest media type {media_type:?}")]
    MediaType { what: String, media_type: String },

    /// Content does not hash to the digest it was announced with: corrupt or tampered.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },

    /// A blob is not as long as its descriptor says.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Size { what: String, expected: u64, actual: u64 },

    /// The index has no image for this host's platform.
    #[error("no image for {host} in the index (it has: {available})")]
    NoPlatform { host: String, available: String },

    /// Writing to or committing into the local store failed.
    #[error("{0}")]
    Store(ImageError),
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl PullFailure {
    /// Network-level failures: nothing (or nothing sane) answered.
    pub fn is_unreachable(&self) -> bool {
        match self {
            PullFailure::Transport(e) => e.is_unreachable(),
            // A proxy or load balancer in front of a registry that is down.
            PullFailure::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

impl From<ImageError> for PullFailure {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::DigestMismatch { what, expected, actual } => {
                PullFailure::DigestMismatch { what, expected, actual }
            }
            e => PullFailure::Store(e),
        }
    }
}
