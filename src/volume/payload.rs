//! The files of configMap, secret, downwardAPI and projected volumes (kubelet `MakePayload`,
//! `CollectData`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::atomic_writer::{FileProjection, Payload};
use super::{VolumeContext, VolumeError};
use crate::manifest::ObjectKey;
use crate::runtime::spec::downward::{metadata_value, resource_field_value};

fn key(pod: &Pod, name: &str) -> ObjectKey {
    ObjectKey::new(pod.metadata.namespace.clone().unwrap_or_default(), name)
}

/// Files from a key → bytes map: every key, or only `items` (each with its path and mode).
fn make_payload(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    missing_key: impl Fn(String) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(
                    k.clone(),
                    FileProjection { data: v.clone(), mode: default_mode as u32 },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(item.key.clone()));
                };
                let mode = item.mode.unwrap_or(default_mode) as u32;
                payload.insert(item.path.clone(), FileProjection { data: v.clone(), mode });
            }
        }
    }
    Ok(payload)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.entry(k.clone()).or_insert_with(|| v.0.clone());
    }
    data
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

/// Where a configMap or secret volume (or projection) takes its keys from.
#[derive(Clone, Copy)]
enum Object {
    ConfigMap,
    Secret,
}

impl Object {
    fn data(self, ctx: &VolumeContext<'_>, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let key = key(ctx.pod, name);
        match self {
            Object::ConfigMap => ctx.desired.config_maps.get(&key).map(config_map_data),
            Object::Secret => ctx.desired.secrets.get(&key).map(secret_data),
        }
    }

    fn not_found(self, volume: &str, name: &str) -> VolumeError {
        let (volume, name) = (volume.into(), name.into());
        match self {
            Object::ConfigMap => VolumeError::ConfigMapNotFound { volume, name },
            Object::Secret => VolumeError::SecretNotFound { volume, name },
        }
    }

    fn key_not_found(self, volume: &str, key: String) -> VolumeError {
        let volume = volume.into();
        match self {
            Object::ConfigMap => VolumeError::ConfigMapKeyNotFound { volume, key },
            Object::Secret => VolumeError::SecretKeyNotFound { volume, key },
        }
    }
}

/// The files of a ConfigMap or Secret, `items` selecting and renaming keys.
fn object_payload(
    ctx: &VolumeContext<'_>,
    object: Object,
    volume: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let data = match object.data(ctx, name) {
        Some(data) => data,
        None if optional => BTreeMap::new(),
        None => return Err(object.not_found(volume, name)),
    };
    make_payload(&data, items, default_mode, optional, |key| object.key_not_found(volume, key))
}

fn downward_payload(
    ctx: &VolumeContext<'_>,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    let downward = |source| VolumeError::Downward { volume: volume.into(), source };
    for item in items {
        let data = if let Some(f) = item.field_ref.as_ref() {
            metadata_value(ctx.pod, &f.field_path).map_err(downward)?
        } else if let Some(r) = item.resource_field_ref.as_ref() {
            let wanted = r.container_name.as_deref().unwrap_or_default();
            let spec = ctx.pod.spec.as_ref();
            let containers = spec
                .into_iter()
                .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
            let container = containers.into_iter().find(|c| c.name == wanted).ok_or_else(|| {
                VolumeError::ContainerNotFound { volume: volume.into(), container: wanted.into() }
            })?;
            resource_field_value(r, container, ctx.allocatable).map_err(downward)?
        } else {
            continue;
        };
        let mode = item.mode.unwrap_or(default_mode) as u32;
        payload.insert(item.path.clone(), FileProjection { data: data.into_bytes(), mode });
    }
    Ok(payload)
}

/// The files of an AtomicWriter volume, or None for other kinds.
pub fn payload(ctx: &VolumeContext<'_>, v: &Volume) -> Option<Result<Payload, VolumeError>> {
    let name = v.name.as_str();
    const DEFAULT_MODE: i32 = 0o644;
    if let Some(cm) = v.config_map.as_ref() {
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        let optional = cm.optional == Some(true);
        let items = cm.items.as_ref();
        return Some(object_payload(ctx, Object::ConfigMap, name, &cm.name, items, mode, optional));
    }
    if let Some(s) = v.secret.as_ref() {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        let optional = s.optional == Some(true);
        let secret_name = s.secret_name.as_deref().unwrap_or_default();
        let items = s.items.as_ref();
        return Some(object_payload(ctx, Object::Secret, name, secret_name, items, mode, optional));
    }
    if let Some(d) = v.downward_api.as_ref() {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        return Some(downward_payload(ctx, name, d.items.as_deref().unwrap_or_default(), mode));
    }
    let p = v.projected.as_ref()?;
    let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
    let mut merged = Payload::new();
    for source in p.sources.iter().flatten() {
        let part = if let Some(s) = source.secret.as_ref() {
            let optional = s.optional == Some(true);
            object_payload(ctx, Object::Secret, name, &s.name, s.items.as_ref(), mode, optional)
        } else if let Some(cm) = source.config_map.as_ref() {
            let (items, optional) = (cm.items.as_ref(), cm.optional == Some(true));
            object_payload(ctx, Object::ConfigMap, name, &cm.name, items, mode, optional)
        } else if let Some(d) = source.downward_api.as_ref() {
            downward_payload(ctx, name, d.items.as_deref().unwrap_or_default(), mode)
        } else {
            let kind = if source.service_account_token.is_some() {
                "serviceAccountToken"
            } else if source.cluster_trust_bundle.is_some() {
                "clusterTrustBundle"
            } else {
                "podCertificate"
            };
            Err(VolumeError::Unsupported { volume: name.into(), kind })
        };
        match part {
            Ok(files) => merged.extend(files),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(merged))
}
