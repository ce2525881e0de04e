//! Bytes → documents → typed, validated, defaulted objects.

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::locate::{self, FieldPath, Positions};
use super::{defaults, depth, uid, validate, ManifestError, ObjectKey};

/// Larger files are refused: manifests are small, and the limit bounds parser memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A Kubernetes object outpost understands.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Pod(std::sync::Arc<Pod>),
    ConfigMap(std::sync::Arc<ConfigMap>),
    Secret(std::sync::Arc<Secret>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Pod(_) => "Pod",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = match self {
            Object::Pod(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        };
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// One object and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub path: PathBuf,
    /// Line of the document's first key (1-based).
    pub line: usize,
    pub object: Object,
}

/// Reads and parses one manifest file. A file is all or nothing: if any of its documents is
/// invalid, every error is returned and none of its objects.
pub fn parse_file(path: &Path) -> Result<Vec<Document>, Vec<ManifestError>> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().map_err(|e| vec![ManifestError::file(path, format!("cannot read: {e}"))])?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(vec![ManifestError::file(
            path,
            format!(
                "file is larger than {} KiB: split it into several manifests",
                MAX_FILE_BYTES / 1024
            ),
        )]);
    }
    parse_bytes(path, &bytes)
}

/// Parses manifest bytes as if read from `path`.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<Document>, Vec<ManifestError>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(path, text),
        Err(e) => {
            let (line, column) = line_col(&bytes[..e.valid_up_to()]);
            Err(vec![ManifestError {
                path: path.to_path_buf(),
                line,
                column,
                field: String::new(),
                message: format!(
                    "not valid UTF-8 (byte 0x{:02x}): save the file as UTF-8",
                    bytes[e.valid_up_to()]
                ),
            }])
        }
    }
}

/// Parses manifest text (YAML or JSON, `---`-separated documents) as if read from `path`.
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    // Before any parser: their cost grows with depth × size.
    if let Err((limit, offset)) = depth::check(text) {
        let (line, column) = line_col(&text.as_bytes()[..offset]);
        let message = match limit {
            depth::Limit::Depth => TOO_DEEP.to_string(),
            depth::Limit::Nodes => format!(
                "more than {} values (mappings, lists, keys and scalars) in one file: split it \
                 into several files (a pod with 100 containers, 30 env vars each, has about \
                 22000)",
                depth::MAX_NODES
            ),
            depth::Limit::Documents => format!(
                "more than {} documents in one file: split it into several files",
                depth::MAX_DOCUMENTS
            ),
        };
        return Err(vec![ManifestError {
            path: path.to_path_buf(),
            line,
            column,
            field: String::new(),
            message,
        }]);
    }
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(v) => values.push(v),
            // After a syntax error the rest of the stream cannot be trusted.
            Err(e) => return Err(vec![yaml_error(path, &e)]),
        }
    }
    // A v1 List's items are documents of their own (`kubectl get -o yaml` writes Lists).
    let mut units: Vec<(usize, FieldPath, serde_yaml::Value)> = Vec::new();
    let mut list_findings: Vec<(usize, Finding)> = Vec::new();
    for (i, value) in values.iter_mut().enumerate() {
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        match list_items(value) {
            Some(Ok(items)) => {
                let at = FieldPath::root().key("items");
                units.extend(items.into_iter().enumerate().map(|(j, v)| (i, at.index(j), v)));
            }
            Some(Err(finding)) => list_findings.push((i, finding)),
            None => units.push((i, FieldPath::root(), std::mem::take(value))),
        }
    }
    // Decode and validate first: only the paths of findings need locating.
    let mut decoded = Vec::new();
    let mut hidden = 0;
    let mut shown = 0;
    for (i, finding) in list_findings {
        decoded.push((i, FieldPath::root(), None, vec![finding]));
        shown += 1;
    }
    for (i, at, value) in units {
        let (object, mut findings) = decode(value);
        let object = object.and_then(|object| {
            findings.extend(validate::object(&object));
            findings.is_empty().then_some(object)
        });
        // Locating costs per finding: a file of 8000 clashing containers has 8000.
        let keep = findings.len().min(MAX_ERRORS.saturating_sub(shown));
        hidden += findings.len() - keep;
        findings.truncate(keep);
        shown += keep;
        let findings: Vec<Finding> =
            findings.into_iter().map(|(field, message)| (at.join(&field), message)).collect();
        decoded.push((i, at, object, findings));
    }
    // The file's order (a List's own error was put first).
    decoded.sort_by_key(|(i, ..)| *i);
    let mut wanted = vec![Vec::new(); values.len()];
    for (i, at, _, findings) in &decoded {
        wanted[*i].push(at.clone());
        wanted[*i].extend(findings.iter().map(|(f, _)| f.clone()));
    }
    let positions = locate::index(text, &wanted);
    let fallback = Positions::default();
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, at, object, findings) in decoded {
        let pos = positions.get(i).unwrap_or(&fallback);
        if let Some(mut object) = object {
            defaults::apply(&mut object);
            if let Object::Pod(pod) = &mut object {
                uid::assign(std::sync::Arc::make_mut(pod));
            }
            let line = pos.of(&at).0;
            docs.push(Document { path: path.to_path_buf(), line, object });
        }
        errors.extend(findings.into_iter().map(|(field, message)| {
            let (line, column) = pos.of(&field);
            ManifestError {
                path: path.to_path_buf(),
                line,
                column,
                field: field.to_string(),
                message,
            }
        }));
    }
    if hidden > 0 {
        errors.push(ManifestError::file(
            path,
            format!("{hidden} more errors not shown: fix the first {MAX_ERRORS} and check again"),
        ));
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

type Finding = (FieldPath, String);

/// Errors reported per file; the rest are counted.
const MAX_ERRORS: usize = 100;

/// Said for nesting past the pre-scan's limit, and past serde_yaml's once aliases are expanded.
const TOO_DEEP: &str = "nesting is too deep (more than 100 levels of mappings and lists, aliases \
     expanded): a manifest never needs more than a few dozen levels";

/// The typed object when it could be decoded, and every finding (unknown fields do not stop
/// decoding, so they are reported together with the validation errors).
fn decode(value: serde_yaml::Value) -> (Option<Object>, Vec<Finding>) {
    match decode_kind(value) {
        Ok((object, unknown)) => (Some(object), unknown),
        Err(findings) => (None, findings),
    }
}

fn decode_kind(mut value: serde_yaml::Value) -> Result<(Object, Vec<Finding>), Vec<Finding>> {
    octal_modes(&mut value);
    let root = FieldPath::root();
    let Some(map) = value.as_mapping() else {
        return Err(vec![(
            root,
            format!(
                "a manifest document must be a mapping with apiVersion and kind, found {}",
                value_kind(&value)
            ),
        )]);
    };
    let field = |name: &str| map.get(name).map(|v| v.as_str().ok_or(v));
    let api_version = match field("apiVersion") {
        Some(Ok(v)) => v.to_string(),
        Some(Err(v)) => {
            return Err(vec![(
                root.key("apiVersion"),
                format!("must be a string, found {}", value_kind(v)),
            )])
        }
        None => {
            return Err(vec![(root.key("apiVersion"), "required: add `apiVersion: v1`".into())])
        }
    };
    let kind = match field("kind") {
        Some(Ok(v)) => v.to_string(),
        Some(Err(v)) => {
            return Err(vec![(
                root.key("kind"),
                format!("must be a string, found {}", value_kind(v)),
            )])
        }
        None => {
            return Err(vec![(
                root.key("kind"),
                "required: add `kind: Pod`, `ConfigMap` or `Secret`".into(),
            )])
        }
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => typed(value).map(|(o, u)| (Object::Pod(std::sync::Arc::new(o)), u)),
        ("v1", "ConfigMap") => {
            typed(value).map(|(o, u)| (Object::ConfigMap(std::sync::Arc::new(o)), u))
        }
        ("v1", "Secret") => typed(value)
            .map(|(o, u)| (Object::Secret(std::sync::Arc::new(o)), u))
            .map_err(redact_secret_values),
        (_, "Pod" | "ConfigMap" | "Secret") => Err(vec![(
            root.key("apiVersion"),
            format!("unknown apiVersion {api_version:?} for kind {kind}: use `apiVersion: v1`"),
        )]),
        _ => Err(vec![(
            root.key("kind"),
            format!(
                "unsupported kind {kind:?} (apiVersion {api_version:?}): outpost reads v1 Pod, \
                 ConfigMap and Secret; for a {kind}, put its pod template in a Pod manifest"
            ),
        )]),
    }
}

/// The items of a `v1` `List`; `None` for any other document. Only `apiVersion`, `kind`,
/// `metadata` and `items` may be set on the List itself.
fn list_items(value: &mut serde_yaml::Value) -> Option<Result<Vec<serde_yaml::Value>, Finding>> {
    let map = value.as_mapping_mut()?;
    let is = |k: &str, v: &str| map.get(k).and_then(|x| x.as_str()) == Some(v);
    if !(is("kind", "List") && is("apiVersion", "v1")) {
        return None;
    }
    let root = FieldPath::root();
    for key in map.keys() {
        match key.as_str() {
            Some("apiVersion" | "kind" | "metadata" | "items") => {}
            other => {
                let name = other.map_or_else(|| format!("{key:?}"), String::from);
                return Some(Err((
                    root.key(&name),
                    format!("unknown field {name:?} in a List: remove it"),
                )));
            }
        }
    }
    match map.remove("items") {
        None | Some(serde_yaml::Value::Null) => Some(Ok(Vec::new())),
        Some(serde_yaml::Value::Sequence(items)) => Some(Ok(items)),
        Some(other) => Some(Err((
            root.key("items"),
            format!("must be a list of Pods, ConfigMaps and Secrets, found {}", value_kind(&other)),
        ))),
    }
}

/// File modes are written `0644` in every Kubernetes example. kubectl's YAML 1.1 reads that as
/// octal; YAML 1.2 (serde_yaml) as a string. Read it the way users mean it, for mode fields only.
fn octal_modes(value: &mut serde_yaml::Value) {
    use serde_yaml::Value as V;
    match value {
        V::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let is_mode = matches!(k.as_str(), Some("mode" | "defaultMode"));
                match v {
                    V::String(s) if is_mode => {
                        let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix('0'));
                        if let Some(n) = digits.and_then(|d| i64::from_str_radix(d, 8).ok()) {
                            *v = V::Number(n.into());
                        }
                    }
                    _ => octal_modes(v),
                }
            }
        }
        V::Sequence(items) => items.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

/// Strict decoding: k8s-openapi silently skips unknown fields, so they are collected through
/// serde_ignored and reported, like `kubectl --validate=strict`.
/// Returns the value and its unknown fields.
fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<(T, Vec<Finding>), Vec<Finding>> {
    let mut unknown = Vec::new();
    let mut on_ignored = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
    let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let result = serde_path_to_error::deserialize::<_, T>(de);
    let mut findings: Vec<Finding> = unknown
        .into_iter()
        .map(|p| {
            let name = p.last_key().unwrap_or_default().to_string();
            (
                p,
                format!(
                    "unknown field {name:?}: check its spelling and indentation \
                     (outpost rejects fields the Kubernetes API does not define)"
                ),
            )
        })
        .collect();
    match result {
        Ok(t) => Ok((t, findings)),
        Err(e) => {
            let mut path = FieldPath::root();
            for seg in e.path().iter() {
                path = match seg {
                    serde_path_to_error::Segment::Seq { index } => path.index(*index),
                    serde_path_to_error::Segment::Map { key } => path.key(key),
                    serde_path_to_error::Segment::Enum { variant } => path.key(variant),
                    serde_path_to_error::Segment::Unknown => path,
                };
            }
            findings.push((path, type_error_message(&e.into_inner().to_string())));
            Err(findings)
        }
    }
}

/// A pod outpost itself wrote as JSON (the store's records, the API's answers), decoded through
/// the manifests' decoder: k8s-openapi's Pod decoder is the largest generic code in the binary
/// (~0.25 MB per deserializer it is built for), so the binary holds it once. Fields the API does
/// not define are ignored, as `serde_json::from_str` ignores them; an error names the field.
pub fn pod_from_json(text: &str) -> Result<Pod, String> {
    let value: serde_yaml::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    typed::<Pod>(value).map(|(pod, _unknown)| pod).map_err(|findings| {
        let (path, message) = findings.into_iter().last().unwrap_or_default();
        format!("{path}: {message}")
    })
}

/// serde's messages quote the offending value; under a Secret's data that value is a secret,
/// and errors are logged.
fn redact_secret_values(mut findings: Vec<Finding>) -> Vec<Finding> {
    for (path, message) in &mut findings {
        if matches!(path.first_key(), Some("data" | "stringData"))
            && !message.starts_with("unknown field")
        {
            *message = if path.first_key() == Some("data") {
                "invalid value (not shown: it is secret): `data` values must be base64 strings; use `stringData` for plain text".into()
            } else {
                "invalid value (not shown: it is secret): `stringData` values must be strings (quote them)".into()
            };
        }
    }
    findings
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> FieldPath {
    use serde_ignored::Path as P;
    match p {
        P::Root => FieldPath::root(),
        P::Seq { parent, index } => ignored_path(parent).index(*index),
        P::Map { parent, key } => ignored_path(parent).key(key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// serde's messages name Rust types; say it in YAML terms.
fn type_error_message(raw: &str) -> String {
    let msg = raw
        .replace("expected i32", "expected an integer")
        .replace("expected i64", "expected an integer")
        .replace("expected a string", "expected a string (quote it)")
        .replace("expected a sequence", "expected a list (`- item` entries)")
        .replace("expected a map", "expected a mapping (`key: value` entries)")
        .replace("expected a boolean", "expected true or false");
    format!("wrong type: {msg}")
}

fn value_kind(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value as V;
    match v {
        V::Null => "nothing",
        V::Bool(_) => "a boolean",
        V::Number(_) => "a number",
        V::String(_) => "a string",
        V::Sequence(_) => "a list",
        V::Mapping(_) => "a mapping",
        V::Tagged(_) => "a tagged value",
    }
}

fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ManifestError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let raw = e.to_string();
    // serde_yaml appends " at line X column Y"; the prefix already says where.
    let raw = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw,
    };
    let message = if raw.contains("recursion limit exceeded") {
        TOO_DEEP.to_string()
    } else if raw.contains("repetition limit exceeded") {
        "YAML aliases expand too much (an alias bomb?): write the values out instead".to_string()
    } else {
        format!("invalid YAML: {raw}")
    };
    ManifestError { path: path.to_path_buf(), line, column, field: String::new(), message }
}

fn line_col(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = prefix.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&prefix[line_start..]).chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored pod decodes exactly as `serde_json::from_str` decodes it: every example
    /// manifest, defaulted, and a pod with a status (timestamps, states, int-or-string ports).
    #[test]
    fn pod_from_json_decodes_as_serde_json_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("static-manifests");
        let mut pods = Vec::new();
        for entry in std::fs::read_dir(dir).expect("static-manifests") {
            let docs = parse_file(&entry.expect("entry").path()).expect("valid example");
            for doc in docs {
                if let Object::Pod(pod) = doc.object {
                    pods.push((*pod).clone());
                }
            }
        }
        assert!(pods.len() >= 5, "the examples hold pods");
        pods.push(
            serde_yaml::from_str(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: s, creationTimestamp: '2026-01-02T03:04:05Z', labels: {a: b}}\n\
                 spec:\n  containers:\n  - name: c\n    image: busybox\n    env: [{name: E, value: \"tab\\t\\u007f\\u0085 é\"}]\n\
                 \x20   readinessProbe: {httpGet: {port: http, path: /}}\n    livenessProbe: {tcpSocket: {port: 8080}}\n\
                 \x20   resources: {limits: {memory: 64Mi, cpu: 250m}}\n\
                 status:\n  phase: Running\n  podIP: 10.88.0.2\n  startTime: '2026-01-02T03:04:06Z'\n\
                 \x20 conditions: [{type: Ready, status: 'True', lastTransitionTime: '2026-01-02T03:04:07Z'}]\n\
                 \x20 containerStatuses:\n  - {name: c, ready: true, restartCount: 2, image: busybox, imageID: '', started: true,\n\
                 \x20    state: {running: {startedAt: '2026-01-02T03:04:08Z'}},\n\
                 \x20    lastState: {terminated: {exitCode: 137, reason: OOMKilled, startedAt: '2026-01-02T03:04:01Z', finishedAt: '2026-01-02T03:04:02Z'}}}\n",
            )
            .expect("pod with status"),
        );
        for pod in pods {
            let json = serde_json::to_string(&pod).expect("serialize");
            let direct: Pod = serde_json::from_str(&json).expect("serde_json decodes it");
            assert_eq!(pod_from_json(&json).as_ref(), Ok(&direct), "{json}");
            assert_eq!(direct, pod);
        }
    }

    #[test]
    fn a_v1_list_is_its_items_with_their_lines_and_errors_inside_it() {
        let path = Path::new("https://fleet/site.yaml");
        let text = "apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n\
                    - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cfg}\n\
                    - apiVersion: v1\n  kind: Pod\n  metadata: {name: web}\n  spec:\n    containers:\n    - {name: c, image: busybox}\n\
                    ---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
        let docs = parse_str(path, text).expect("valid");
        let found: Vec<(String, usize)> =
            docs.iter().map(|d| (d.object.key().name, d.line)).collect();
        assert_eq!(found, [("cfg".into(), 5), ("web".into(), 8), ("s".into(), 15)]);
        // JSON, as `kubectl get -o json` writes it, and an empty List.
        let json = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}]}"#;
        assert_eq!(parse_str(path, json).expect("json").len(), 1);
        assert!(parse_str(path, "apiVersion: v1\nkind: List\nitems: []\n").unwrap().is_empty());

        let bad = text.replace("image: busybox", "image: ''");
        let errors = parse_str(path, &bad).expect_err("no image");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!((e.line, e.field.as_str()), (13, "items[1].spec.containers[0].image"), "{e}");
        assert!(e.to_string().starts_with("https://fleet/site.yaml:13:"), "{e}");

        let odd = parse_str(path, "apiVersion: v1\nkind: List\nitems: {a: 1}\n").unwrap_err();
        assert_eq!((odd[0].line, odd[0].field.as_str()), (3, "items"), "{odd:?}");
        let extra =
            parse_str(path, "apiVersion: v1\nkind: List\nspec: {}\nitems: []\n").unwrap_err();
        assert!(extra[0].message.contains("unknown field \"spec\""), "{extra:?}");
    }

    #[test]
    fn pod_from_json_ignores_unknown_fields_and_names_a_bad_one() {
        let pod = pod_from_json(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","x":1},"y":[]}"#,
        );
        assert_eq!(pod.expect("decodes").metadata.name.as_deref(), Some("a"));
        let bad = r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","ports":[{"containerPort":"x"}]}]}}"#;
        let err = pod_from_json(bad).expect_err("a string port");
        assert!(err.starts_with("spec.containers[0].ports[0].containerPort: wrong type"), "{err}");
        assert!(pod_from_json("{").is_err());
    }
}
