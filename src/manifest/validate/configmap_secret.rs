//! ConfigMap and Secret objects, and the names and keys that refer to them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    pub(super) fn config_map(&mut self, cm: &ConfigMap, at: &FieldPath) {
        self.metadata(&cm.metadata, at);
        for k in cm.data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("data").key(k), k);
        }
        for k in cm.binary_data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("binaryData").key(k), k);
            if cm.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                self.fail(
                    at.key("binaryData").key(k),
                    format!(
                        "key {k:?} is also in data: a key can be in data or binaryData, not both"
                    ),
                );
            }
        }
    }

    pub(super) fn secret(&mut self, s: &Secret, at: &FieldPath) {
        self.metadata(&s.metadata, at);
        for k in s.data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("data").key(k), k);
        }
        for k in s.string_data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("stringData").key(k), k);
        }
        self.registry_credentials(s, at);
    }

    /// The API server's rule for image pull secrets: a `kubernetes.io/dockerconfigjson` Secret
    /// holds `.dockerconfigjson`, a `kubernetes.io/dockercfg` one `.dockercfg`, each a JSON
    /// object. The message never shows the content.
    fn registry_credentials(&mut self, s: &Secret, at: &FieldPath) {
        let Some(key) = registry_credentials_key(s) else { return };
        let data = s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice());
        let string_data = s.string_data.as_ref().and_then(|d| d.get(key)).map(String::as_bytes);
        let (field, bytes) = match (string_data, data) {
            (Some(b), _) => ("stringData", b),
            (None, Some(b)) => ("data", b),
            (None, None) => {
                let ty = s.type_.as_deref().unwrap_or_default();
                let example = "{\"auths\": {\"registry.example.com\": {\"auth\": \"base64(user:password)\"}}}";
                return self.fail(
                    at.key("data"),
                    format!("required: a Secret of type {ty} holds its credentials under key {key:?} (e.g. stringData: {{{key}: '{example}'}})"),
                );
            }
        };
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) if v.is_object() => {}
            Ok(_) => self.fail(at.key(field).key(key), "invalid value (not shown: it is secret): expected a JSON object like {\"auths\": {...}}".to_string()),
            Err(e) => self.fail(at.key(field).key(key), format!("invalid value (not shown: it is secret): not JSON: {e}")),
        }
    }

    /// The name of a referenced ConfigMap or Secret.
    pub(super) fn reference(&mut self, at: FieldPath, name: &str, kind: &str) {
        if name.is_empty() {
            self.fail(at, format!("required: the name of the {kind} to use"));
        } else {
            self.dns_subdomain(at, name);
        }
    }

    pub(super) fn config_key(&mut self, at: FieldPath, key: &str) {
        let ok = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && !key.starts_with("..")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !ok {
            self.fail(at, format!("invalid key {key:?}: use letters, digits, '-', '_' and '.'"));
        }
    }
}

/// Where a Secret of an image pull type keeps its docker config (`.dockerconfigjson` for
/// `kubernetes.io/dockerconfigjson`, `.dockercfg` for `kubernetes.io/dockercfg`); `None` for
/// every other type.
pub fn registry_credentials_key(s: &Secret) -> Option<&'static str> {
    match s.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => Some(".dockerconfigjson"),
        Some("kubernetes.io/dockercfg") => Some(".dockercfg"),
        _ => None,
    }
}
