//! Container environment: `envFrom`, `env` with `valueFrom` and `$(VAR)` expansion
//! (kubelet `makeEnvironmentVariables`), then merged over the image's `Env` like containerd.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::downward::{env_field_value, resource_field_value, PodFacts};
use super::expand::expand;
use super::{ContainerInput, SpecError, SpecWarning};
use crate::manifest::ObjectKey;

/// containerd's default `PATH`, used when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An ordered name → value list: a redefinition replaces the value in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    pub fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// `NAME=value` strings in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// The kubelet's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.`, `..` or `..`-prefixed.
pub fn is_env_var_name(name: &str) -> bool {
    let ok = |b: u8| b == b'-' || b == b'.' || b == b'_' || b.is_ascii_alphabetic();
    let bytes = name.as_bytes();
    match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            ok(*first)
                && rest.iter().all(|b| ok(*b) || b.is_ascii_digit())
                && !name.starts_with("..")
                && name != "."
        }
    }
}

/// Looks ConfigMaps and Secrets up in the desired state, in the pod's namespace.
struct Sources<'a> {
    input: &'a ContainerInput<'a>,
    namespace: String,
}

impl<'a> Sources<'a> {
    fn config_map(&self, name: &str) -> Option<&'a ConfigMap> {
        self.input.desired.config_maps.get(&ObjectKey::new(self.namespace.clone(), name))
    }

    fn secret(&self, name: &str) -> Option<&'a Secret> {
        self.input.desired.secrets.get(&ObjectKey::new(self.namespace.clone(), name))
    }
}

fn secret_value(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The variables the kubelet hands the runtime for this container, in declaration order
/// (the kubelet itself emits them in Go map order; a stable order is strictly better).
pub fn kubelet_env(
    input: &ContainerInput<'_>,
    warnings: &mut Vec<SpecWarning>,
) -> Result<EnvList, SpecError> {
    let container = input.container;
    let cname = || container.name.clone();
    let namespace = input.pod.metadata.namespace.clone().unwrap_or_default();
    let src = Sources { input, namespace: namespace.clone() };
    let mut env = EnvList::default();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, data): (&'static str, String, BTreeMap<String, String>) =
            if let Some(r) = from.config_map_ref.as_ref() {
                match src.config_map(&r.name) {
                    Some(cm) => ("configMap", r.name.clone(), cm.data.clone().unwrap_or_default()),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(SpecError::ConfigMapNotFound {
                            container: cname(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = from.secret_ref.as_ref() {
                match src.secret(&r.name) {
                    Some(s) => {
                        let data = s.data.iter().flatten();
                        let data = data.map(|(k, v)| (k.clone(), secret_value(&v.0))).collect();
                        ("secret", r.name.clone(), data)
                    }
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(SpecError::SecretNotFound {
                            container: cname(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                env.set(k, v);
            } else {
                invalid.push(k);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(SpecWarning::InvalidEnvFromKeys {
                kind,
                namespace: namespace.clone(),
                name,
                keys: invalid,
            });
        }
    }

    let facts = PodFacts {
        pod: input.pod,
        node_name: &input.node.name,
        pod_ips: input.pod_ips,
        host_ips: &input.node.host_ips,
    };
    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(literal, |n| env.get(n).map(str::to_string))
        } else if let Some(from) = var.value_from.as_ref() {
            let downward =
                |source| SpecError::Downward { container: cname(), var: var.name.clone(), source };
            if let Some(f) = from.field_ref.as_ref() {
                env_field_value(&facts, f.api_version.as_deref(), &f.field_path)
                    .map_err(downward)?
            } else if let Some(r) = from.resource_field_ref.as_ref() {
                resource_field_value(r, container, &input.node.allocatable).map_err(downward)?
            } else if let Some(r) = from.config_map_key_ref.as_ref() {
                let optional = r.optional == Some(true);
                let Some(cm) = src.config_map(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(SpecError::ConfigMapNotFound {
                        container: cname(),
                        name: r.name.clone(),
                    });
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(SpecError::ConfigMapKeyNotFound {
                            container: cname(),
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(r) = from.secret_key_ref.as_ref() {
                let optional = r.optional == Some(true);
                let Some(s) = src.secret(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(SpecError::SecretNotFound {
                        container: cname(),
                        name: r.name.clone(),
                    });
                };
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => secret_value(&v.0),
                    None if optional => continue,
                    None => {
                        return Err(SpecError::SecretKeyNotFound {
                            container: cname(),
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

/// containerd's `replaceOrAppendEnvValues`: each `K=V` of `overrides` replaces `K` in place or
/// is appended; a bare `K` unsets it.
pub fn merge_env(base: Vec<String>, overrides: &[String]) -> Vec<String> {
    let mut results: Vec<Option<String>> = base.into_iter().map(Some).collect();
    let mut cache: HashMap<String, usize> = HashMap::new();
    for (i, e) in results.iter().enumerate() {
        if let Some(e) = e {
            cache.insert(e.split('=').next().unwrap_or_default().to_string(), i);
        }
    }
    for value in overrides {
        match value.split_once('=') {
            None => {
                if let Some(&i) = cache.get(value.as_str()) {
                    results[i] = None;
                }
            }
            Some((k, _)) => match cache.get(k) {
                Some(&i) => results[i] = Some(value.clone()),
                None => {
                    cache.insert(k.to_string(), results.len());
                    results.push(Some(value.clone()));
                }
            },
        }
    }
    results.into_iter().flatten().collect()
}
