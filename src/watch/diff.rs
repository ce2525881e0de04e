//! What changed between two desired states, as the engine and the logs want to hear it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::ByteString;

use crate::manifest::{DesiredState, ObjectKey};

/// One difference between two desired states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod appeared.
    PodAdded { key: ObjectKey, uid: String, source: PathBuf },
    /// The pod's manifest was edited: its UID changed, so the pod must be replaced.
    PodReplaced { key: ObjectKey, old_uid: String, new_uid: String, source: PathBuf },
    /// A pod disappeared (its manifest, or its file, is gone).
    PodRemoved { key: ObjectKey, uid: String },
    /// A ConfigMap or Secret the (unchanged) pod references was added, changed or removed.
    /// `reference` reads like `ConfigMap default/app-config`.
    PodConfigChanged { key: ObjectKey, uid: String, reference: String },
}

impl Change {
    /// The pod this change is about.
    pub fn key(&self) -> &ObjectKey {
        match self {
            Change::PodAdded { key, .. }
            | Change::PodReplaced { key, .. }
            | Change::PodRemoved { key, .. }
            | Change::PodConfigChanged { key, .. } => key,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::PodAdded { key, uid, source } => {
                write!(f, "pod {key} added from {} (uid {uid})", source.display())
            }
            Change::PodReplaced { key, old_uid, new_uid, source } => write!(
                f,
                "pod {key} replaced: manifest {} changed (uid {old_uid} -> {new_uid})",
                source.display()
            ),
            Change::PodRemoved { key, uid } => write!(f, "pod {key} removed (uid {uid})"),
            Change::PodConfigChanged { key, reference, .. } => {
                write!(f, "pod {key}: referenced {reference} changed")
            }
        }
    }
}

/// The changes that turn `old` into `new`: removals first (in key order), then additions,
/// replacements and configuration changes (in key order).
///
/// A pod whose UID is unchanged but whose source file differs (moved to another file) is no
/// change: the engine keeps it running. A replaced pod gets no `PodConfigChanged`, since its
/// replacement reads the new configuration anyway.
pub fn diff(old: &DesiredState, new: &DesiredState) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, pod) in &old.pods {
        if !new.pods.contains_key(key) {
            changes.push(Change::PodRemoved { key: key.clone(), uid: pod.uid().to_string() });
        }
    }
    for (key, pod) in &new.pods {
        let Some(before) = old.pods.get(key) else {
            changes.push(Change::PodAdded {
                key: key.clone(),
                uid: pod.uid().to_string(),
                source: pod.source.clone(),
            });
            continue;
        };
        if before.uid() != pod.uid() {
            changes.push(Change::PodReplaced {
                key: key.clone(),
                old_uid: before.uid().to_string(),
                new_uid: pod.uid().to_string(),
                source: pod.source.clone(),
            });
            continue;
        }
        for reference in references(&pod.pod, &key.namespace) {
            if reference.differs(old, new) {
                changes.push(Change::PodConfigChanged {
                    key: key.clone(),
                    uid: pod.uid().to_string(),
                    reference: reference.to_string(),
                });
            }
        }
    }
    changes
}

/// What happened to a ConfigMap or Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectAction {
    Added,
    Changed,
    Removed,
}

/// A ConfigMap or Secret added, edited or removed. Any edit counts, metadata included: the API
/// serves the objects as the directory defines them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChange {
    /// `ConfigMap` or `Secret`.
    pub kind: &'static str,
    pub key: ObjectKey,
    pub action: ObjectAction,
}

impl fmt::Display for ObjectChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            ObjectAction::Added => "added",
            ObjectAction::Changed => "changed",
            ObjectAction::Removed => "removed",
        };
        write!(f, "{} {} {action}", self.kind, self.key)
    }
}

/// The ConfigMaps and Secrets that differ between `old` and `new`, ConfigMaps first, each in
/// key order.
pub fn object_changes(old: &DesiredState, new: &DesiredState) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    compare("ConfigMap", &old.config_maps, &new.config_maps, &mut out);
    compare("Secret", &old.secrets, &new.secrets, &mut out);
    out
}

fn compare<T: PartialEq>(
    kind: &'static str,
    old: &BTreeMap<ObjectKey, T>,
    new: &BTreeMap<ObjectKey, T>,
    out: &mut Vec<ObjectChange>,
) {
    let keys: BTreeSet<&ObjectKey> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let action = match (old.get(key), new.get(key)) {
            (None, Some(_)) => ObjectAction::Added,
            (Some(_), None) => ObjectAction::Removed,
            (Some(a), Some(b)) if a != b => ObjectAction::Changed,
            _ => continue,
        };
        out.push(ObjectChange { kind, key: key.clone(), action });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ConfigMap,
    Secret,
}

/// A ConfigMap or Secret a pod reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    kind: Kind,
    key: ObjectKey,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        };
        write!(f, "{kind} {}", self.key)
    }
}

impl Reference {
    /// Only the payload counts: a relabelled ConfigMap does not restart anything.
    fn differs(&self, old: &DesiredState, new: &DesiredState) -> bool {
        match self.kind {
            Kind::ConfigMap => {
                config_map_payload(old.config_maps.get(&self.key))
                    != config_map_payload(new.config_maps.get(&self.key))
            }
            Kind::Secret => {
                secret_payload(old.secrets.get(&self.key))
                    != secret_payload(new.secrets.get(&self.key))
            }
        }
    }
}

type StringMap = BTreeMap<String, String>;
type BytesMap = BTreeMap<String, ByteString>;

/// An absent map and an empty one mean the same to a container.
fn non_empty<T>(map: &Option<BTreeMap<String, T>>) -> Option<&BTreeMap<String, T>> {
    map.as_ref().filter(|m| !m.is_empty())
}

fn config_map_payload(c: Option<&ConfigMap>) -> Option<(Option<&StringMap>, Option<&BytesMap>)> {
    c.map(|c| (non_empty(&c.data), non_empty(&c.binary_data)))
}

/// data, stringData, type.
type SecretPayload<'a> = (Option<&'a BytesMap>, Option<&'a StringMap>, Option<&'a str>);

fn secret_payload(s: Option<&Secret>) -> Option<SecretPayload<'_>> {
    s.map(|s| (non_empty(&s.data), non_empty(&s.string_data), s.type_.as_deref()))
}

/// The ConfigMaps and Secrets a pod reads (see [`crate::manifest::References`]).
fn references(pod: &Pod, namespace: &str) -> BTreeSet<Reference> {
    let r = crate::manifest::References::of(pod, namespace);
    let cms = r.config_maps.into_iter().map(|key| Reference { kind: Kind::ConfigMap, key });
    cms.chain(r.secrets.into_iter().map(|key| Reference { kind: Kind::Secret, key })).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::parse_str;

    /// Builds a state from `(file name, text)` pairs, as if each were a file of `/m`.
    fn state(files: &[(&str, &str)]) -> DesiredState {
        let docs: Vec<_> = files
            .iter()
            .map(|(name, text)| {
                let path = Path::new("/m").join(name);
                parse_str(&path, text).unwrap_or_else(|e| panic!("{name}: {e:?}"))
            })
            .collect();
        let (state, errors) =
            DesiredState::build(docs.iter().map(Vec::as_slice), &Default::default());
        assert_eq!(errors, vec![]);
        state
    }

    fn pod(name: &str, image: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: {image}\n"
        )
    }

    fn pod_with(name: &str, extra_container: &str, volumes: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: busybox\n{extra_container}{volumes}"
        )
    }

    fn config_map(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
        )
    }

    fn secret(name: &str, value: &str) -> String {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{k: '{value}'}}\n")
    }

    fn uid(s: &DesiredState, name: &str) -> String {
        s.pods[&ObjectKey::new("default", name)].uid().to_string()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn identical_states_have_no_changes() {
        let a = state(&[("web.yaml", &pod("web", "busybox"))]);
        assert_eq!(diff(&a, &a.clone()), vec![]);
        assert_eq!(diff(&DesiredState::default(), &DesiredState::default()), vec![]);
    }

    #[test]
    fn added_replaced_removed() {
        let old = state(&[("a.yaml", &pod("a", "busybox")), ("b.yaml", &pod("b", "busybox"))]);
        let new = state(&[("b.yaml", &pod("b", "busybox:2")), ("c.yaml", &pod("c", "busybox"))]);
        assert_ne!(uid(&old, "b"), uid(&new, "b"));
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::PodRemoved { key: key("a"), uid: uid(&old, "a") },
                Change::PodReplaced {
                    key: key("b"),
                    old_uid: uid(&old, "b"),
                    new_uid: uid(&new, "b"),
                    source: "/m/b.yaml".into(),
                },
                Change::PodAdded { key: key("c"), uid: uid(&new, "c"), source: "/m/c.yaml".into() },
            ]
        );
    }

    #[test]
    fn a_pod_moved_to_another_file_is_no_change() {
        let old = state(&[("a.yaml", &pod("web", "busybox"))]);
        let new = state(&[("b.yaml", &pod("web", "busybox"))]);
        assert_eq!(diff(&old, &new), vec![]);
    }

    #[test]
    fn config_changes_reach_exactly_the_referencing_pods() {
        let env_from = "    envFrom:\n    - configMapRef: {name: cfg}\n";
        let value_from =
            "    env:\n    - name: X\n      valueFrom: {secretKeyRef: {name: creds, key: k}}\n";
        let cm_volume = "  volumes:\n  - name: v\n    configMap: {name: cfg}\n";
        let projected = "  volumes:\n  - name: v\n    projected:\n      sources:\n      - secret: {name: creds}\n      - configMap: {name: other}\n";
        let pods = [
            ("a.yaml", pod_with("a", env_from, "")),
            ("b.yaml", pod_with("b", "", cm_volume)),
            ("c.yaml", pod_with("c", value_from, "")),
            ("d.yaml", pod_with("d", "", projected)),
            ("e.yaml", pod("e", "busybox")),
        ];
        let with = |cfg: Option<&str>, creds: Option<&str>| {
            let mut files: Vec<(&str, String)> = pods.to_vec();
            if let Some(v) = cfg {
                files.push(("cfg.yaml", config_map("cfg", v)));
            }
            if let Some(v) = creds {
                files.push(("creds.yaml", secret("creds", v)));
            }
            let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
            state(&files)
        };
        let base = with(Some("1"), Some("s1"));
        let changed = |s: &DesiredState, names: &[&str], reference: &str| -> Vec<Change> {
            names
                .iter()
                .map(|n| Change::PodConfigChanged {
                    key: key(n),
                    uid: uid(s, n),
                    reference: reference.into(),
                })
                .collect()
        };

        let cm_edit = with(Some("2"), Some("s1"));
        assert_eq!(diff(&base, &cm_edit), changed(&base, &["a", "b"], "ConfigMap default/cfg"));
        let cm_gone = with(None, Some("s1"));
        assert_eq!(diff(&base, &cm_gone), changed(&base, &["a", "b"], "ConfigMap default/cfg"));
        assert_eq!(diff(&cm_gone, &base), changed(&base, &["a", "b"], "ConfigMap default/cfg"));
        let secret_edit = with(Some("1"), Some("s2"));
        assert_eq!(diff(&base, &secret_edit), changed(&base, &["c", "d"], "Secret default/creds"));
    }

    #[test]
    fn config_metadata_alone_is_no_change() {
        let labelled =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {a: b}}\ndata: {k: '1'}\n";
        let p = pod_with("a", "    envFrom:\n    - configMapRef: {name: cfg}\n", "");
        let old = state(&[("a.yaml", &p), ("cfg.yaml", &config_map("cfg", "1"))]);
        let new = state(&[("a.yaml", &p), ("cfg.yaml", labelled)]);
        assert_eq!(diff(&old, &new), vec![]);
    }

    #[test]
    fn a_replaced_pod_gets_no_config_change() {
        let p = |image: &str| {
            pod_with(
                "a",
                &format!("    envFrom:\n    - configMapRef: {{name: cfg}}\n    args: [v{image}]\n"),
                "",
            )
        };
        let old = state(&[("a.yaml", &p("1")), ("cfg.yaml", &config_map("cfg", "1"))]);
        let new = state(&[("a.yaml", &p("2")), ("cfg.yaml", &config_map("cfg", "2"))]);
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(matches!(changes[0], Change::PodReplaced { .. }), "{changes:?}");
    }

    #[test]
    fn config_maps_and_secrets_alone_are_object_changes() {
        let empty = DesiredState::default();
        let one = state(&[("cfg.yaml", &config_map("cfg", "1"))]);
        assert_eq!(diff(&empty, &one), vec![]);
        let added =
            ObjectChange { kind: "ConfigMap", key: key("cfg"), action: ObjectAction::Added };
        assert_eq!(object_changes(&empty, &one), vec![added.clone()]);
        assert_eq!(added.to_string(), "ConfigMap default/cfg added");
        let relabelled = state(&[(
            "cfg.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {a: b}}\ndata: {k: '1'}\n",
        )]);
        let changed = ObjectChange { action: ObjectAction::Changed, ..added.clone() };
        assert_eq!(object_changes(&one, &relabelled), vec![changed]);
        let both = state(&[("cfg.yaml", &config_map("cfg", "1")), ("s.yaml", &secret("s", "x"))]);
        assert_eq!(
            object_changes(&both, &empty),
            vec![
                ObjectChange { action: ObjectAction::Removed, ..added },
                ObjectChange { kind: "Secret", key: key("s"), action: ObjectAction::Removed },
            ]
        );
        assert_eq!(object_changes(&both, &both.clone()), vec![]);
    }

    #[test]
    fn display_is_one_human_line() {
        let k = key("web");
        let added = Change::PodAdded {
            key: k.clone(),
            uid: "U".into(),
            source: "/etc/edge.d/web.yaml".into(),
        };
        assert_eq!(added.to_string(), "pod default/web added from /etc/edge.d/web.yaml (uid U)");
        let replaced = Change::PodReplaced {
            key: k.clone(),
            old_uid: "A".into(),
            new_uid: "B".into(),
            source: "/etc/edge.d/web.yaml".into(),
        };
        assert_eq!(
            replaced.to_string(),
            "pod default/web replaced: manifest /etc/edge.d/web.yaml changed (uid A -> B)"
        );
        let removed = Change::PodRemoved { key: k.clone(), uid: "U".into() };
        assert_eq!(removed.to_string(), "pod default/web removed (uid U)");
        let config = Change::PodConfigChanged {
            key: k,
            uid: "U".into(),
            reference: "ConfigMap default/app-config".into(),
        };
        assert_eq!(
            config.to_string(),
            "pod default/web: referenced ConfigMap default/app-config changed"
        );
    }
}
