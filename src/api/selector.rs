//! `labelSelector` and `fieldSelector`, with the API server's syntax for the common cases:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k` for labels; `f=v`, `f==v`,
//! `f!=v` for fields, on the fields the API server supports for that resource.

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a selector was refused: the message of the API server's 400 answer.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SelectorError {
    /// The selector does not parse.
    #[error("unable to parse requirement: {0:?}")]
    Syntax(String),
    /// The resource cannot be filtered by that field.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let bad = || SelectorError::Syntax(part.to_string());
            let req = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_string(), Op::DoesNotExist)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotIn(vec![v.trim().to_string()]))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k.trim().to_string(), Op::In(vec![v.trim().to_string()]))
            } else if let Some((k, set)) = split_set(part, " notin ") {
                (k, Op::NotIn(set.ok_or_else(bad)?))
            } else if let Some((k, set)) = split_set(part, " in ") {
                (k, Op::In(set.ok_or_else(bad)?))
            } else {
                (part.to_string(), Op::Exists)
            };
            if req.0.is_empty() || req.0.contains(char::is_whitespace) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key));
            match op {
                Op::In(set) => value.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// `key in (a, b)` → (key, [a, b]); `None` set when the parentheses are missing.
fn split_set(part: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (k, rest) = part.split_once(op)?;
    let rest = rest.trim();
    let set = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect());
    Some((k.trim().to_string(), set))
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The fields a resource can be selected by, as JSON paths into the object.
#[derive(Clone, Copy, Debug)]
pub enum Fields {
    Pod,
    Event,
    /// ConfigMaps and Secrets: the generic metadata fields (plus `type` for secrets).
    Object,
}

impl Fields {
    fn path(self, field: &str) -> Option<&'static [&'static str]> {
        let generic: Option<&'static [&'static str]> = match field {
            "metadata.name" => Some(&["metadata", "name"]),
            "metadata.namespace" => Some(&["metadata", "namespace"]),
            _ => None,
        };
        generic.or(match (self, field) {
            (Fields::Pod, "spec.nodeName") => Some(&["spec", "nodeName"]),
            (Fields::Pod, "spec.restartPolicy") => Some(&["spec", "restartPolicy"]),
            (Fields::Pod, "spec.schedulerName") => Some(&["spec", "schedulerName"]),
            (Fields::Pod, "spec.serviceAccountName") => Some(&["spec", "serviceAccountName"]),
            (Fields::Pod, "spec.hostNetwork") => Some(&["spec", "hostNetwork"]),
            (Fields::Pod, "status.phase") => Some(&["status", "phase"]),
            (Fields::Pod, "status.podIP") => Some(&["status", "podIP"]),
            (Fields::Pod, "status.nominatedNodeName") => Some(&["status", "nominatedNodeName"]),
            (Fields::Event, "involvedObject.kind") => Some(&["involvedObject", "kind"]),
            (Fields::Event, "involvedObject.namespace") => Some(&["involvedObject", "namespace"]),
            (Fields::Event, "involvedObject.name") => Some(&["involvedObject", "name"]),
            (Fields::Event, "involvedObject.uid") => Some(&["involvedObject", "uid"]),
            (Fields::Event, "involvedObject.apiVersion") => Some(&["involvedObject", "apiVersion"]),
            (Fields::Event, "involvedObject.resourceVersion") => {
                Some(&["involvedObject", "resourceVersion"])
            }
            (Fields::Event, "involvedObject.fieldPath") => Some(&["involvedObject", "fieldPath"]),
            (Fields::Event, "reason") => Some(&["reason"]),
            (Fields::Event, "reportingComponent") => Some(&["reportingComponent"]),
            (Fields::Event, "source") => Some(&["source", "component"]),
            (Fields::Event, "type") => Some(&["type"]),
            (Fields::Object, "type") => Some(&["type"]),
            _ => None,
        })
    }
}

/// A parsed field selector for one kind of resource; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(&'static [&'static str], bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str, fields: Fields) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError::Syntax(part.to_string()));
            };
            let field = field.trim();
            let path =
                fields.path(field).ok_or_else(|| SelectorError::UnsupportedField(field.into()))?;
            reqs.push((path, equal, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    /// Also requires `metadata.name` to be `name` (a watch path that names one object).
    pub fn and_name(mut self, name: &str) -> Self {
        self.0.push((&["metadata", "name"], true, name.to_string()));
        self
    }

    /// Matches the object's JSON; a missing field is the empty string (`false` for booleans).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, want)| {
            let v = path.iter().fold(object, |v, key| &v[*key]);
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null if path.last() == Some(&"hostNetwork") => "false".into(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_forms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (db, web),!canary"));
        assert!(!m("tier notin (front,back)"));
        assert!(m("env notin (prod)"));
        assert!(!m("env"));
        assert!(!m("app=db"));
        assert!(LabelSelector::parse("app").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
        assert_eq!(
            LabelSelector::parse("app in web"),
            Err(SelectorError::Syntax("app in web".into()))
        );
    }

    #[test]
    fn field_selector_on_events_and_pods() {
        let ev = json!({"involvedObject": {"name": "web", "namespace": "default", "uid": "u1"},
                        "type": "Warning", "source": {"component": "kubelet"}});
        let m = |s: &str| FieldSelector::parse(s, Fields::Event).unwrap().matches(&ev);
        assert!(m(
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u1"
        ));
        assert!(!m("involvedObject.uid=u2"));
        assert!(m("type!=Normal,source=kubelet"));
        let pod = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}, "spec": {}});
        let p = |s: &str| FieldSelector::parse(s, Fields::Pod).unwrap().matches(&pod);
        assert!(p("status.phase=Running,metadata.name==a"));
        assert!(p("status.phase!=Failed,spec.nodeName=,spec.hostNetwork=false"));
        assert!(!p("status.phase=Pending"));
        assert_eq!(
            FieldSelector::parse("spec.containers=x", Fields::Pod).err(),
            Some(SelectorError::UnsupportedField("spec.containers".into()))
        );
    }
}
