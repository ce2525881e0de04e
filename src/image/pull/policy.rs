//! The kubelet's `imagePullPolicy`, with one deviation for offline edge devices.

use std::sync::Arc;

use super::error::{PullError, Result};
use super::{pull, PullOptions};
use crate::image::reference::Reference;
use crate::image::{Image, ImageStore};

/// Makes `reference` available according to `policy`, as the kubelet's image manager:
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
) -> Result<Image> {
    let parsed = Reference::parse(reference)
        .map_err(|source| PullError::InvalidName { image: reference.to_string(), source })?;
    let policy = match policy {
        "" if parsed.tag.as_deref() == Some("latest") => "Always",
        "" => "IfNotPresent",
        p => p,
    };
    match policy {
        "Never" => local(store, reference)
            .await?
            .ok_or_else(|| PullError::NeverPull { image: reference.to_string() }),
        "IfNotPresent" => match local(store, reference).await? {
            Some(image) => Ok(image),
            None => pull(store, reference, options).await,
        },
        "Always" => {
            match pull(store, reference, options).await {
                Ok(image) => Ok(image),
                Err(e) if e.is_unreachable() => match local(store, reference).await? {
                    Some(image) => {
                        log::warn!("{e}; using the local copy {} (pull policy Always, registry unreachable)", image.digest);
                        Ok(image)
                    }
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        other => Err(PullError::Policy { image: reference.to_string(), policy: other.to_string() }),
    }
}

async fn local(store: &Arc<ImageStore>, reference: &str) -> Result<Option<Image>> {
    let (s, r) = (Arc::clone(store), reference.to_string());
    smol::unblock(move || s.resolve(&r))
        .await
        .map_err(|source| PullError::Store { image: reference.to_string(), source })
}
