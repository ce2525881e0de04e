//! ConfigMaps and Secrets as loaded from the manifest directory, read-only.
//!
//! Secret values are redacted unless `--api-show-secrets`: every `data` key is kept with an
//! empty value (still valid base64, so clients decode the object) and the annotation
//! [`REDACTED`] says so. `kubectl.kubernetes.io/last-applied-configuration` is dropped too, as
//! it can hold the values in clear.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;

use crate::manifest::DesiredState;

/// Set on every Secret served with its values removed.
pub const REDACTED: &str = "outpost.dev/redacted";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub fn config_maps<'a>(
    desired: &'a DesiredState,
    ns: Option<&'a str>,
) -> impl Iterator<Item = &'a ConfigMap> + 'a {
    desired
        .config_maps
        .iter()
        .filter(move |(k, _)| ns.is_none_or(|n| k.namespace == n))
        .map(|(_, v)| v)
}

pub fn secrets<'a>(
    desired: &'a DesiredState,
    ns: Option<&'a str>,
    show: bool,
) -> impl Iterator<Item = Secret> + 'a {
    desired
        .secrets
        .iter()
        .filter(move |(k, _)| ns.is_none_or(|n| k.namespace == n))
        .map(move |(_, s)| if show { s.clone() } else { redact(s) })
}

pub fn redact(s: &Secret) -> Secret {
    let mut s = s.clone();
    if let Some(data) = s.data.as_mut() {
        for v in data.values_mut() {
            *v = ByteString(Vec::new());
        }
    }
    s.string_data = None;
    let annotations = s.metadata.annotations.get_or_insert_with(Default::default);
    annotations.remove(LAST_APPLIED);
    annotations.insert(REDACTED.into(), "true".into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn redaction_keeps_keys_and_drops_values_everywhere() {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                annotations: Some(
                    [(
                        LAST_APPLIED.to_string(),
                        "{\"stringData\":{\"password\":\"hunter2\"}}".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        };
        let json = serde_json::to_string(&redact(&s)).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("aHVudGVyMg"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["data"], serde_json::json!({"password": ""}));
        assert_eq!(v["metadata"]["annotations"], serde_json::json!({REDACTED: "true"}));
    }
}
