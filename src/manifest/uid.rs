//! Static pods get their UID from their content, as the kubelet derives it by hashing the pod:
//! the same manifest keeps its UID across agent restarts, an edited one gets a new UID.

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

/// Annotations the kubelet puts on static pods; `kubectl describe` shows them.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";

pub(super) fn assign(pod: &mut Pod) {
    pod.metadata.uid = None;
    // Serialization of k8s-openapi types is deterministic (fixed field order, sorted maps).
    let canonical = serde_json::to_vec(&*pod).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let h = hex(&digest[..16]);
    let uid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    annotations.insert(CONFIG_HASH.into(), uid.clone());
    pod.metadata.uid = Some(uid);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
