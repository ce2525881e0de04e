//! Pod volumes and the files they write (items, paths, modes).

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    /// Returns the names of the declared volumes.
    pub(super) fn volumes(&mut self, volumes: &[Volume], at: &FieldPath) -> HashSet<String> {
        let mut names = HashSet::new();
        for (i, v) in volumes.iter().enumerate() {
            let vat = at.index(i);
            if v.name.is_empty() {
                self.fail(
                    vat.key("name"),
                    "required: name the volume so volumeMounts can refer to it",
                );
            } else {
                self.dns_label(vat.key("name"), &v.name);
                if !names.insert(v.name.clone()) {
                    self.fail(
                        vat.key("name"),
                        format!("duplicate volume name {:?}: volume names must be unique", v.name),
                    );
                }
            }
            // Counting the serialized keys catches every source type, present and future.
            let json = serde_json::to_value(v).unwrap_or_default();
            let sources: Vec<&String> = json
                .as_object()
                .map(|m| m.keys().filter(|k| *k != "name").collect())
                .unwrap_or_default();
            if sources.len() > 1 {
                let list = sources.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                self.fail(
                    vat.clone(),
                    format!("more than one volume type ({list}): pick exactly one"),
                );
            }
            for s in &sources {
                if !SUPPORTED_VOLUMES.contains(&s.as_str()) {
                    self.fail(
                        vat.key(s),
                        format!(
                            "volume type {s:?} is not available on outpost: use one of {}",
                            SUPPORTED_VOLUMES.join(", ")
                        ),
                    );
                }
            }
            if let Some(hp) = &v.host_path {
                let hat = vat.key("hostPath");
                if !hp.path.starts_with('/') {
                    self.fail(
                        hat.key("path"),
                        format!("must be an absolute path, got {:?}", hp.path),
                    );
                }
                if let Some(t) = hp.type_.as_deref() {
                    self.one_of(hat.key("type"), t, HOST_PATH_TYPES);
                }
            }
            if let Some(cm) = &v.config_map {
                let cat = vat.key("configMap");
                self.reference(cat.key("name"), &cm.name, "ConfigMap");
                self.items(cm.items.as_deref(), &cat.key("items"));
                self.mode(cm.default_mode, cat.key("defaultMode"));
            }
            if let Some(s) = &v.secret {
                let sat = vat.key("secret");
                self.reference(
                    sat.key("secretName"),
                    s.secret_name.as_deref().unwrap_or_default(),
                    "Secret",
                );
                self.items(s.items.as_deref(), &sat.key("items"));
                self.mode(s.default_mode, sat.key("defaultMode"));
            }
            if let Some(d) = &v.downward_api {
                let dat = vat.key("downwardAPI");
                for (j, f) in d.items.iter().flatten().enumerate() {
                    let fat = dat.key("items").index(j);
                    self.relative_path(fat.key("path"), &f.path);
                    self.mode(f.mode, fat.key("mode"));
                    if f.field_ref.is_some() == f.resource_field_ref.is_some() {
                        self.fail(fat, "set exactly one of fieldRef or resourceFieldRef");
                    }
                }
            }
            if let Some(p) = &v.projected {
                let mut paths = HashMap::new();
                for (j, src) in p.sources.iter().flatten().enumerate() {
                    let sat = vat.key("projected").key("sources").index(j);
                    let mut item_paths = Vec::new();
                    if let Some(cm) = &src.config_map {
                        self.reference(sat.key("configMap").key("name"), &cm.name, "ConfigMap");
                        self.items(cm.items.as_deref(), &sat.key("configMap").key("items"));
                        for (k, item) in cm.items.iter().flatten().enumerate() {
                            item_paths
                                .push((sat.key("configMap").key("items").index(k), &item.path));
                        }
                    }
                    if let Some(s) = &src.secret {
                        self.reference(sat.key("secret").key("name"), &s.name, "Secret");
                        self.items(s.items.as_deref(), &sat.key("secret").key("items"));
                        for (k, item) in s.items.iter().flatten().enumerate() {
                            item_paths.push((sat.key("secret").key("items").index(k), &item.path));
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for (k, f) in d.items.iter().flatten().enumerate() {
                            let fat = sat.key("downwardAPI").key("items").index(k);
                            self.relative_path(fat.key("path"), &f.path);
                            self.mode(f.mode, fat.key("mode"));
                            item_paths.push((fat, &f.path));
                        }
                    }
                    for (iat, path) in item_paths {
                        let normal = path.trim_start_matches("./").trim_end_matches('/');
                        if let Some(first) = paths.insert(normal.to_string(), iat.clone()) {
                            self.fail(iat.key("path"), format!("conflicting duplicate paths: {path:?} is also written by {first}; give each item its own path"));
                        }
                    }
                    if src.service_account_token.is_some()
                        || src.cluster_trust_bundle.is_some()
                        || src.pod_certificate.is_some()
                    {
                        self.fail(sat, "only configMap, secret and downwardAPI projections are available without a cluster");
                    }
                }
            }
        }
        names
    }

    pub(super) fn items(&mut self, items: Option<&[KeyToPath]>, at: &FieldPath) {
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            let iat = at.index(i);
            self.config_key(iat.key("key"), &item.key);
            self.relative_path(iat.key("path"), &item.path);
            self.mode(item.mode, iat.key("mode"));
        }
    }

    /// A file a volume writes (items of configMap, secret, downwardAPI, projected).
    pub(super) fn relative_path(&mut self, at: FieldPath, path: &str) {
        if path.is_empty() {
            self.fail(at, "required: a relative file path, e.g. `config.yaml`");
        } else if !path.starts_with('/')
            && !path.split('/').any(|p| p == "..")
            && path.starts_with("..")
        {
            // `..data` and such are the kubelet's own (atomic writer).
            self.fail(at, format!("{path:?} must not start with '..': rename the file"));
        } else {
            self.descending_path(at, path);
        }
    }

    /// A path that stays below the directory it is relative to.
    pub(super) fn descending_path(&mut self, at: FieldPath, path: &str) {
        if path.starts_with('/') {
            self.fail(at, format!("{path:?} must be a relative path: remove the leading '/'"));
        } else if path.split('/').any(|p| p == "..") {
            self.fail(
                at,
                format!("{path:?} must not contain '..': name a path below the directory"),
            );
        }
    }

    pub(super) fn mode(&mut self, mode: Option<i32>, at: FieldPath) {
        if let Some(m) = mode {
            if !(0..=0o777).contains(&m) {
                self.fail(at, format!("{m} is not a file mode: use a value between 0 and 0777 (octal) / 511 (decimal)"));
            }
        }
    }
}

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// The volume sources outpost can provide on a device without a cluster.
const SUPPORTED_VOLUMES: &[&str] =
    &["emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected"];
