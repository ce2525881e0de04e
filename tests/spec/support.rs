//! Shared fixtures for the `runtime::spec` tests: pods from JSON, a node, an image config.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use oci_spec::image::Config as ImageConfig;
use outpost::manifest::{DesiredState, ObjectKey};
use outpost::quantity::Quantity;
use outpost::runtime::spec::{
    container_spec, Allocatable, ContainerInput, ContainerSpec, NodeInfo, PodFiles, SpecError,
};
use serde_json::{json, Value};

/// A pod in namespace `default` named `web` with one container `app` built from `container`.
pub fn pod_with(container: Value) -> Pod {
    pod(json!({ "containers": [merge(json!({"name": "app", "image": "busybox"}), container)] }))
}

/// A pod from a `spec` JSON, with fixed metadata.
pub fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web", "namespace": "default", "uid": "0f1e2d3c",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "say \"hi\"\n"}
        },
        "spec": spec
    }))
    .expect("test pod must deserialize")
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

pub fn image(config: Value) -> ImageConfig {
    serde_json::from_value(config).expect("test image config must deserialize")
}

pub fn node() -> NodeInfo {
    NodeInfo {
        name: "edge-1".into(),
        host_ips: vec!["192.168.1.10".into(), "fd00::10".into()],
        allocatable: Allocatable {
            cpu: "4".parse().unwrap(),
            memory: "8Gi".parse().unwrap(),
            ephemeral_storage: Quantity::from_units(100_000_000_000),
        },
        memory_capacity: 4_000_000_000,
        // The kubelet's default (Unconfined): these tests' specs carry no seccomp unless asked.
        seccomp: outpost::runtime::spec::seccomp::SeccompNode {
            default_runtime_default: false,
            profile_root: "/nonexistent/seccomp".into(),
            kernel: (6, 1),
        },
    }
}

pub fn config_map(name: &str, data: &[(&str, &str)]) -> (ObjectKey, ConfigMap) {
    let data: BTreeMap<String, String> =
        data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cm = serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "data": data}),
    )
    .unwrap();
    (ObjectKey::new("default", name), cm)
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> (ObjectKey, Secret) {
    let mut s: Secret =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}}))
            .unwrap();
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    (ObjectKey::new("default", name), s)
}

/// The inputs of one `container_spec` call, with defaults for everything.
pub struct Case {
    pub pod: Pod,
    pub image: ImageConfig,
    pub desired: DesiredState,
    pub volumes: BTreeMap<String, PathBuf>,
    pub files: PodFiles,
    pub pod_ips: Vec<String>,
    pub node: NodeInfo,
}

impl Case {
    pub fn new(pod: Pod) -> Self {
        Case {
            pod,
            image: image(json!({"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "sleep 1"]})),
            desired: DesiredState::default(),
            volumes: BTreeMap::new(),
            files: PodFiles::default(),
            pod_ips: vec!["10.88.0.5".into()],
            node: node(),
        }
    }

    pub fn image(mut self, config: Value) -> Self {
        self.image = image(config);
        self
    }

    /// Builds the spec of the first app container.
    pub fn build(&self) -> Result<ContainerSpec, SpecError> {
        let container = &self.pod.spec.as_ref().unwrap().containers[0];
        container_spec(&ContainerInput {
            pod: &self.pod,
            container,
            init: false,
            image: &self.image,
            desired: &self.desired,
            volumes: &self.volumes,
            files: &self.files,
            pod_ips: &self.pod_ips,
            node: &self.node,
            sub_paths: &CheckOnly,
        })
    }
}

pub fn args(spec: &ContainerSpec) -> Vec<String> {
    spec.spec.process().as_ref().unwrap().args().clone().unwrap()
}

pub fn env(spec: &ContainerSpec) -> Vec<String> {
    spec.spec.process().as_ref().unwrap().env().clone().unwrap()
}

/// The value of `name` in the process environment.
pub fn env_var(spec: &ContainerSpec, name: &str) -> Option<String> {
    env(spec).iter().find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// Opens each subPath as the agent does and hands back the path it was checked as, without
/// the bind (which needs root; `tests/volume_subpath.rs` tests that).
#[derive(Debug)]
pub struct CheckOnly;

impl outpost::runtime::spec::SubPathBinder for CheckOnly {
    fn bind(
        &self,
        request: &outpost::runtime::spec::SubPathRequest<'_>,
    ) -> Result<std::path::PathBuf, outpost::runtime::spec::SubPathProblem> {
        outpost::volume::subpath::open(request.volume_dir, request.sub).map(|o| o.resolved)
    }
}
