//! Downward API values (`fieldRef`, `resourceFieldRef`), shared by env vars and the
//! downwardAPI/projected volumes so both render exactly as the kubelet does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

use crate::quantity::{Quantity, QuantityError};

/// What the node offers pods: the defaults for limits a container does not set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu: Quantity,
    pub memory: Quantity,
    pub ephemeral_storage: Quantity,
}

/// Why a downward API value cannot be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    /// `fieldRef.apiVersion` other than `v1`.
    #[error("unsupported pod version: {0}")]
    Version(String),
    /// A field path the kubelet does not resolve.
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    /// A subscript on a field that has none (`metadata.name['x']`).
    #[error("fieldPath {0:?} does not support subscript")]
    Subscript(String),
    /// `resourceFieldRef.resource` other than limits/requests of cpu, memory, ephemeral-storage.
    #[error("unsupported container resource : {0}")]
    Resource(String),
    /// A resource quantity or divisor that does not parse.
    #[error("{0}")]
    Quantity(#[from] QuantityError),
    /// A divisor that is zero at the precision used (e.g. `1n` for cpu).
    #[error("divisor {0} of {1} is zero at the precision the kubelet uses")]
    ZeroDivisor(String, String),
}

/// The pod's own facts the kubelet knows at container start.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    /// The node name (the device's hostname) for `spec.nodeName`.
    pub node_name: &'a str,
    pub pod_ips: &'a [String],
    pub host_ips: &'a [String],
}

/// The value of a `fieldRef` for an env var (metadata, spec.nodeName,
/// spec.serviceAccountName, status.podIP(s), status.hostIP(s)).
pub fn env_field_value(
    facts: &PodFacts<'_>,
    api_version: Option<&str>,
    path: &str,
) -> Result<String, DownwardError> {
    check_version(api_version)?;
    let spec = facts.pod.spec.as_ref();
    match path {
        "spec.nodeName" | "spec.host" => Ok(facts.node_name.to_string()),
        "spec.serviceAccountName" => {
            Ok(spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default())
        }
        "status.hostIP" => Ok(facts.host_ips.first().cloned().unwrap_or_default()),
        "status.hostIPs" => Ok(facts.host_ips.join(",")),
        "status.podIP" => Ok(facts.pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(facts.pod_ips.join(",")),
        _ => metadata_value(facts.pod, path),
    }
}

fn check_version(api_version: Option<&str>) -> Result<(), DownwardError> {
    match api_version {
        None | Some("v1") | Some("") => Ok(()),
        Some(v) => Err(DownwardError::Version(v.to_string())),
    }
}

/// `fieldpath.ExtractFieldPathAsString`: the metadata fields a downwardAPI volume can show.
pub fn metadata_value(pod: &Pod, path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    if let Some((field, key)) = split_subscript(path) {
        return match field {
            "metadata.annotations" => {
                Ok(meta.annotations.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
            }
            "metadata.labels" => {
                Ok(meta.labels.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
            }
            _ => Err(DownwardError::Subscript(path.to_string())),
        };
    }
    match path {
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(DownwardError::FieldPath(path.to_string())),
    }
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (field, key) = s.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}

/// `fieldpath.FormatMap`: `key="value"` lines sorted by key, values quoted like Go's `%q`, no
/// trailing newline.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> =
        map.into_iter().flatten().map(|(k, v)| format!("{k}={}", go_quote(v))).collect();
    lines.join("\n")
}

/// Go's `strconv.Quote` for valid UTF-8: escapes `"` and `\`, the C escapes, other control
/// characters as `\xNN` / `\uNNNN`; printable characters are kept.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ExtractContainerResourceValue` after the kubelet defaults missing limits to the node's
/// allocatable: cpu as ceil(milli / divisor milli), memory and ephemeral storage as
/// ceil(bytes / divisor bytes); the divisor defaults to 1.
pub fn resource_field_value(
    selector: &ResourceFieldSelector,
    container: &Container,
    allocatable: &Allocatable,
) -> Result<String, DownwardError> {
    let divisor = match selector.divisor.as_ref().map(Quantity::parse).transpose()? {
        Some(d) if !d.is_zero() => d,
        _ => Quantity::from_units(1),
    };
    let resource = selector.resource.as_str();
    let (limits, name) = match resource.split_once('.') {
        Some(("limits", n)) => (true, n),
        Some(("requests", n)) => (false, n),
        _ => return Err(DownwardError::Resource(resource.to_string())),
    };
    let default = match name {
        "cpu" => allocatable.cpu,
        "memory" => allocatable.memory,
        "ephemeral-storage" => allocatable.ephemeral_storage,
        _ => return Err(DownwardError::Resource(resource.to_string())),
    };
    let value = super::resources::container_quantity(container, limits, name)?;
    let value = match value {
        Some(v) => v,
        None if limits => default,
        None => Quantity::ZERO,
    };
    let (num, den) = if name == "cpu" {
        (value.milli_value(), divisor.milli_value())
    } else {
        (value.value(), divisor.value())
    };
    if den == 0 {
        return Err(DownwardError::ZeroDivisor(divisor.to_string(), resource.to_string()));
    }
    Ok(ceil_div(num, den).to_string())
}

fn ceil_div(a: i64, b: i64) -> i64 {
    let (a, b) = (a as i128, b as i128);
    let q = a / b + i128::from(a % b != 0 && (a > 0) == (b > 0));
    q as i64
}
