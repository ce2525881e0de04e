//! The kubelet's `imagePullPolicy`, with one deviation for offline edge devices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{PullError, Result};
use super::{pull, PullOptions};
use crate::image::reference::Reference;
use crate::image::{Image, ImageStore};

/// What `ensure` did to make the image available.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub image: Image,
    /// How long the registry pull took; `None` when the stored image was used without one
    /// (present under `IfNotPresent` or `Never`, or `Always` with the registry unreachable).
    pub pulled: Option<Duration>,
}

/// Makes `reference` available according to `policy`, as the kubelet's image manager, and
/// calls `pulling` once just before it asks the registry (the kubelet's `Pulling` event):
/// - `Never`: the local image or `ErrImageNeverPull`;
/// - `IfNotPresent`: the local image, else a pull;
/// - `Always`: a pull (cheap when nothing changed: only the manifest is fetched, stored
///   blobs are not downloaded again);
/// - `""`: the API server's default, `Always` for `:latest` or no tag (and no digest),
///   else `IfNotPresent`.
///
/// **Deviation from the kubelet:** with `Always`, when the registry cannot be reached
/// (name lookup or connection failure, timeout, broken connection, 502–504 from a proxy)
/// and the image is in the store, the local copy is used and a warning logged; the kubelet
/// would fail with `ErrImagePull` and back off. An edge device is often offline, and a
/// restart must not wait for the network. Registry answers (not found, unauthorized,
/// digest mismatch...) still fail the pull.
pub async fn ensure(
    store: &Arc<ImageStore>,
    reference: &str,
    policy: &str,
    options: &PullOptions,
    pulling: impl FnOnce(),
) -> Result<Ensured> {
    let parsed = Reference::parse(reference)
        .map_err(|source| PullError::InvalidName { image: reference.to_string(), source })?;
    let policy = match policy {
        "" if parsed.tag.as_deref() == Some("latest") => "Always",
        "" => "IfNotPresent",
        p => p,
    };
    let stored = |image| Ensured { image, pulled: None };
    match policy {
        "Never" => local(store, reference)
            .await?
            .map(stored)
            .ok_or_else(|| PullError::NeverPull { image: reference.to_string() }),
        "IfNotPresent" => match local(store, reference).await? {
            Some(image) => Ok(stored(image)),
            None => fetch(store, reference, options, pulling).await,
        },
        "Always" => {
            match fetch(store, reference, options, pulling).await {
                Err(e) if e.is_unreachable() => match local(store, reference).await? {
                    Some(image) => {
                        log::warn!("{e}; using the local copy {} (pull policy Always, registry unreachable)", image.digest);
                        Ok(stored(image))
                    }
                    None => Err(e),
                },
                result => result,
            }
        }
        other => Err(PullError::Policy { image: reference.to_string(), policy: other.to_string() }),
    }
}

async fn fetch(
    store: &Arc<ImageStore>,
    reference: &str,
    options: &PullOptions,
    pulling: impl FnOnce(),
) -> Result<Ensured> {
    pulling();
    let start = Instant::now();
    let image = pull(store, reference, options).await?;
    Ok(Ensured { image, pulled: Some(start.elapsed()) })
}

async fn local(store: &Arc<ImageStore>, reference: &str) -> Result<Option<Image>> {
    let (s, r) = (Arc::clone(store), reference.to_string());
    smol::unblock(move || s.resolve(&r))
        .await
        .map_err(|source| PullError::Store { image: reference.to_string(), source })
}
