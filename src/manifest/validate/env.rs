//! Environment variables and `envFrom` sources.

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    pub(super) fn env(&mut self, e: &EnvVar, at: &FieldPath) {
        // Since 1.34 any printable ASCII except '=' is allowed in names.
        if e.name.is_empty()
            || e.name.contains('=')
            || !e.name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            self.fail(
                at.key("name"),
                format!(
                    "invalid environment variable name {:?}: use printable characters without '='",
                    e.name
                ),
            );
        }
        let Some(from) = &e.value_from else { return };
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            self.fail(at.key("valueFrom"), "set either value or valueFrom, not both");
        }
        let vat = at.key("valueFrom");
        let set = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.file_key_ref.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.fail(
                vat.clone(),
                "set exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
            );
        }
        if let Some(r) = &from.config_map_key_ref {
            self.reference(vat.key("configMapKeyRef").key("name"), &r.name, "ConfigMap");
            self.config_key(vat.key("configMapKeyRef").key("key"), &r.key);
        }
        if let Some(r) = &from.secret_key_ref {
            self.reference(vat.key("secretKeyRef").key("name"), &r.name, "Secret");
            self.config_key(vat.key("secretKeyRef").key("key"), &r.key);
        }
        if let Some(f) = &from.field_ref {
            const FIELDS: &[&str] = &[
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.hostIP",
                "status.hostIPs",
                "status.podIP",
                "status.podIPs",
            ];
            let p = f.field_path.as_str();
            let label_ref = (p.starts_with("metadata.labels['")
                || p.starts_with("metadata.annotations['"))
                && p.ends_with("']");
            if !FIELDS.contains(&p) && !label_ref {
                self.fail(vat.key("fieldRef").key("fieldPath"), format!("unsupported fieldPath {p:?}: use one of {}, metadata.labels['KEY'] or metadata.annotations['KEY']", FIELDS.join(", ")));
            }
        }
        if from.file_key_ref.is_some() {
            self.fail(
                vat.key("fileKeyRef"),
                "fileKeyRef is not supported yet: use configMapKeyRef or secretKeyRef",
            );
        }
    }

    pub(super) fn env_from(&mut self, e: &EnvFromSource, at: &FieldPath) {
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => {
                self.reference(at.key("configMapRef").key("name"), &r.name, "ConfigMap")
            }
            (None, Some(r)) => self.reference(at.key("secretRef").key("name"), &r.name, "Secret"),
            _ => self.fail(at.clone(), "set exactly one of configMapRef or secretRef"),
        }
    }
}
