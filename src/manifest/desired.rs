//! The desired state: every valid object of the manifest directory, merged across files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, EnvFromSource, EnvVar, Pod, Secret};

use super::{Document, ManifestError, Object};

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod as the engine receives it: validated, API defaults applied, `metadata.uid` set.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPod {
    pub pod: std::sync::Arc<Pod>,
    /// The file that defines it.
    pub source: PathBuf,
}

impl DesiredPod {
    pub fn key(&self) -> ObjectKey {
        let meta = &self.pod.metadata;
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// Stable for unchanged content; a changed manifest gets a new UID (the pod is replaced).
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// Everything the manifest directory asks for, at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    pub pods: BTreeMap<ObjectKey, DesiredPod>,
    pub config_maps: BTreeMap<ObjectKey, ConfigMap>,
    pub secrets: BTreeMap<ObjectKey, Secret>,
}

impl DesiredState {
    /// Merges the documents of every file. An object defined twice keeps its first definition:
    /// the one `previous` already runs, else the first by path and line; each later definition
    /// is reported, naming both files.
    pub fn build<'a>(
        files: impl IntoIterator<Item = &'a [Document]>,
        previous: &DesiredState,
    ) -> (DesiredState, Vec<ManifestError>) {
        let mut docs: Vec<&Document> = files.into_iter().flatten().collect();
        docs.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        // The incumbent of each pod goes first so it wins against a newcomer.
        docs.sort_by_key(|d| match &d.object {
            Object::Pod(_) => previous.pods.get(&d.object.key()).is_none_or(|p| p.source != d.path),
            _ => true,
        });
        let mut state = DesiredState::default();
        let mut first: BTreeMap<(&'static str, ObjectKey), &Document> = BTreeMap::new();
        let mut errors = Vec::new();
        for doc in docs {
            let key = doc.object.key();
            if let Some(winner) = first.get(&(doc.object.kind(), key.clone())) {
                errors.push(ManifestError {
                    path: doc.path.clone(),
                    line: doc.line,
                    column: 1,
                    field: "metadata.name".into(),
                    message: format!(
                        "{} {key} is already defined in {}:{}, which wins: rename or remove one of them",
                        doc.object.kind(),
                        winner.path.display(),
                        winner.line
                    ),
                });
                continue;
            }
            first.insert((doc.object.kind(), key.clone()), doc);
            match &doc.object {
                Object::Pod(p) => {
                    state.pods.insert(key, DesiredPod { pod: p.clone(), source: doc.path.clone() });
                }
                Object::ConfigMap(c) => {
                    state.config_maps.insert(key, (**c).clone());
                }
                Object::Secret(s) => {
                    state.secrets.insert(key, (**s).clone());
                }
            }
        }
        (state, errors)
    }
}

/// The ConfigMaps and Secrets a pod reads through env `valueFrom`, `envFrom`, and configMap,
/// secret and projected volumes; always in the pod's own namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<ObjectKey>,
    pub secrets: BTreeSet<ObjectKey>,
}

impl References {
    pub fn of(pod: &Pod, namespace: &str) -> Self {
        let mut refs = Self::default();
        let Some(spec) = &pod.spec else { return refs };
        let key = |name: &str| (!name.is_empty()).then(|| ObjectKey::new(namespace, name));
        let mut cm = |name: &str| refs.config_maps.extend(key(name));
        let mut env_sources: Vec<(&[EnvVar], &[EnvFromSource])> = Vec::new();
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            env_sources.push((
                c.env.as_deref().unwrap_or_default(),
                c.env_from.as_deref().unwrap_or_default(),
            ));
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            env_sources.push((
                c.env.as_deref().unwrap_or_default(),
                c.env_from.as_deref().unwrap_or_default(),
            ));
        }
        let mut secrets = Vec::new();
        for (env, env_from) in env_sources {
            for var in env {
                let Some(from) = &var.value_from else { continue };
                if let Some(r) = &from.config_map_key_ref {
                    cm(&r.name);
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.push(r.name.as_str());
                }
            }
            for from in env_from {
                if let Some(r) = &from.config_map_ref {
                    cm(&r.name);
                }
                if let Some(r) = &from.secret_ref {
                    secrets.push(r.name.as_str());
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(c) = &volume.config_map {
                cm(&c.name);
            }
            if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
                secrets.push(name);
            }
            let sources = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
            for source in sources.into_iter().flatten() {
                if let Some(c) = &source.config_map {
                    cm(&c.name);
                }
                if let Some(s) = &source.secret {
                    secrets.push(s.name.as_str());
                }
            }
        }
        refs.secrets.extend(secrets.into_iter().filter_map(key));
        refs
    }
}

impl DesiredState {
    /// The ConfigMaps and Secrets `pod` reads (its image pull secrets too), as they are now:
    /// what a revision ran with.
    pub fn config_of(&self, pod: &Pod) -> DesiredState {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut refs = References::of(pod, ns);
        let pull = pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten());
        refs.secrets.extend(pull.map(|r| ObjectKey::new(ns, r.name.clone())));
        DesiredState {
            pods: BTreeMap::new(),
            config_maps: (refs.config_maps.iter())
                .filter_map(|k| Some((k.clone(), self.config_maps.get(k)?.clone())))
                .collect(),
            secrets: (refs.secrets.iter())
                .filter_map(|k| Some((k.clone(), self.secrets.get(k)?.clone())))
                .collect(),
        }
    }
}
