//! Shared fixtures for the volume tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use outpost::manifest::{DesiredState, ObjectKey};
use outpost::quantity::Quantity;
use outpost::runtime::spec::Allocatable;
use outpost::volume::{Mounter, VolumeContext};
use serde_json::{json, Value};

/// 2026-11-25 12:00:00.123456789 UTC.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_795_608_000, 123_456_789)
}

pub fn allocatable() -> Allocatable {
    Allocatable {
        cpu: Quantity::from_units(4),
        memory: "8Gi".parse().unwrap(),
        ephemeral_storage: Quantity::from_units(100_000_000_000),
    }
}

/// A pod `default/web` with the given volumes and one container `app` with `resources`.
pub fn pod(volumes: Value, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                     "labels": {"app": "web", "tier": "front"}, "annotations": {"a": "1"}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}],
                 "volumes": volumes}
    }))
    .expect("test pod must deserialize")
}

pub fn add_config_map(desired: &mut DesiredState, name: &str, data: Value) {
    let cm = serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "data": data}),
    )
    .unwrap();
    desired.config_maps.insert(ObjectKey::new("default", name), cm);
}

pub fn add_secret(desired: &mut DesiredState, name: &str, data: &[(&str, &[u8])]) {
    let mut s: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}}))
            .unwrap();
    s.data = Some(
        data.iter().map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec()))).collect(),
    );
    desired.secrets.insert(ObjectKey::new("default", name), s);
}

pub fn ctx<'a>(
    pod: &'a Pod,
    desired: &'a DesiredState,
    pod_dir: &'a Path,
    allocatable: &'a Allocatable,
    mounter: &'a dyn Mounter,
) -> VolumeContext<'a> {
    VolumeContext { pod, desired, pod_dir, allocatable, mounter, now: now() }
}

/// Mode bits of a path (not following symlinks).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn link(p: &Path) -> PathBuf {
    std::fs::read_link(p).unwrap()
}

/// Names in a directory, sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
