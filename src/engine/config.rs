//! ConfigMap/Secret references, checked against the desired state with the kubelet's messages.

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};

use crate::manifest::{DesiredState, ObjectKey};

fn cm_has(cm: &ConfigMap, key: &str) -> bool {
    cm.data.as_ref().is_some_and(|d| d.contains_key(key))
        || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key))
}

fn secret_has(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key))
        || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// Env `valueFrom` / `envFrom`: `Err` is the `CreateContainerConfigError` message.
pub(crate) fn check_env(c: &Container, ns: &str, d: &DesiredState) -> Result<(), String> {
    let cm = |name: &str| d.config_maps.get(&ObjectKey::new(ns, name));
    let secret = |name: &str| d.secrets.get(&ObjectKey::new(ns, name));
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            let optional = r.optional.unwrap_or(false);
            match cm(&r.name) {
                None if !optional => return Err(format!("configmap {:?} not found", r.name)),
                Some(m) if !optional && !cm_has(m, &r.key) => {
                    return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name))
                }
                _ => {}
            }
        }
        if let Some(r) = &from.secret_key_ref {
            let optional = r.optional.unwrap_or(false);
            match secret(&r.name) {
                None if !optional => return Err(format!("secret {:?} not found", r.name)),
                Some(s) if !optional && !secret_has(s, &r.key) => {
                    return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name))
                }
                _ => {}
            }
        }
    }
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            if cm(&r.name).is_none() && !r.optional.unwrap_or(false) {
                return Err(format!("configmap {:?} not found", r.name));
            }
        }
        if let Some(r) = &from.secret_ref {
            if secret(&r.name).is_none() && !r.optional.unwrap_or(false) {
                return Err(format!("secret {:?} not found", r.name));
            }
        }
    }
    Ok(())
}

/// A volume's reference to a ConfigMap (`cm`) or a Secret.
struct Source<'a> {
    cm: bool,
    name: &'a str,
    optional: Option<bool>,
    items: Option<&'a Vec<KeyToPath>>,
}

impl Source<'_> {
    /// The kubelet's reason when this source cannot be set up.
    fn problem(&self, ns: &str, d: &DesiredState) -> Option<String> {
        let key = ObjectKey::new(ns, self.name);
        let has = |k: &str| match self.cm {
            true => d.config_maps.get(&key).map(|m| cm_has(m, k)),
            false => d.secrets.get(&key).map(|s| secret_has(s, k)),
        };
        let kind = if self.cm { "configmap" } else { "secret" };
        if self.optional.unwrap_or(false) {
            return None;
        }
        let exists = match self.cm {
            true => d.config_maps.contains_key(&key),
            false => d.secrets.contains_key(&key),
        };
        if !exists {
            return Some(format!("{kind} {:?} not found", self.name));
        }
        let missing = self.items.into_iter().flatten().find(|i| has(&i.key) == Some(false))?;
        Some(if self.cm {
            format!("configmap references non-existent config key: {}", missing.key)
        } else {
            format!("references non-existent secret key: {}", missing.key)
        })
    }
}

/// ConfigMap/Secret volumes (also projected): `Err` is the kubelet's `FailedMount` message.
/// Like the kubelet, a volume that cannot be set up holds the whole pod before its sandbox.
pub(crate) fn check_volumes(pod: &Pod, d: &DesiredState) -> Result<(), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let mut sources = vec![];
        if let Some(c) = &v.config_map {
            sources.push(Source {
                cm: true,
                name: &c.name,
                optional: c.optional,
                items: c.items.as_ref(),
            });
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or("");
            sources.push(Source { cm: false, name, optional: s.optional, items: s.items.as_ref() });
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                sources.push(Source {
                    cm: true,
                    name: &c.name,
                    optional: c.optional,
                    items: c.items.as_ref(),
                });
            }
            if let Some(s) = &p.secret {
                sources.push(Source {
                    cm: false,
                    name: &s.name,
                    optional: s.optional,
                    items: s.items.as_ref(),
                });
            }
        }
        if let Some(m) = sources.iter().find_map(|s| s.problem(ns, d)) {
            return Err(format!("MountVolume.SetUp failed for volume {:?} : {m}", v.name));
        }
    }
    Ok(())
}
