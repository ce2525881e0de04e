//! The kubelet's credential keyring (`pkg/credentialprovider`): entries of docker config files
//! keyed by `[https://]host[:port][/path]`, matched against the image being pulled. The port must
//! be the same, the host the same label for label (a label may be a glob: `*.example.com`), and
//! the key's path a prefix of the repository's; the most specific key comes first. Docker Hub's
//! entry (`https://index.docker.io/v1/`) serves images that name no registry or `docker.io`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use super::auth::Credentials;

/// Where Docker files Docker Hub's credentials.
const DOCKER_HUB: &str = "index.docker.io";

/// Credentials by key, in the kubelet's normal form (`host[:port][/path]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyring {
    /// Several files may name one key: each one's credentials are kept, in the order added.
    entries: BTreeMap<String, Vec<Credentials>>,
}

/// Why a docker config could not be read. Never holds a credential.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// `serde_json`'s message names a line and column, not the content.
    #[error("not a docker config (expected {{\"auths\": {{\"registry\": {{\"auth\": \"base64(user:password)\"}}}}}}): {0}")]
    Json(String),
    /// The entry is named (the key is a registry, not a secret); its content is not.
    #[error("entry {key:?}: no usable credentials (expected \"auth\": base64 of user:password, or \"username\" and \"password\")")]
    Entry { key: String },
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Keyring {
    /// Adds every entry of a docker `config.json`, `.dockerconfigjson` or `.dockercfg`; returns
    /// how many. One bad entry refuses the whole config, as a file is all or nothing.
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<usize, KeyringError> {
        let config: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| KeyringError::Json(e.to_string()))?;
        let Some(object) = config.as_object() else {
            return Err(KeyringError::Json("the top level is not an object".into()));
        };
        // `config.json` and `.dockerconfigjson` keep the entries under `auths`; the older
        // `.dockercfg` at the top level, beside nothing else (`credsStore` and such are not
        // entries).
        let entries: Vec<(&String, &serde_json::Value)> = match object.get("auths") {
            Some(serde_json::Value::Object(auths)) => auths.iter().collect(),
            Some(_) => return Err(KeyringError::Json("\"auths\" is not an object".into())),
            None => object.iter().filter(|(_, v)| v.is_object()).collect(),
        };
        let entries: Vec<(&String, Option<AuthEntry>)> =
            entries.into_iter().map(|(k, v)| (k, AuthEntry::deserialize(v).ok())).collect();
        let mut decoded = Vec::new();
        for (key, entry) in &entries {
            let creds = entry.as_ref().and_then(decode);
            let creds = creds.ok_or_else(|| KeyringError::Entry { key: (*key).clone() })?;
            decoded.push((*key, creds));
        }
        // Sorted, so that two entries of one file normalising to one key keep a stable order.
        decoded.sort_by(|a, b| a.0.cmp(b.0));
        for (key, creds) in &decoded {
            self.add(key, creds.clone());
        }
        Ok(decoded.len())
    }

    /// The node's credentials: every docker config file of `files` that exists, in order.
    /// A file that cannot be read or used is skipped with a warning naming it, never its
    /// content.
    pub fn from_files(files: &[PathBuf]) -> Keyring {
        let mut ring = Keyring::default();
        for path in files {
            match std::fs::read(path) {
                Ok(data) => {
                    if let Err(e) = ring.add_docker_config(&data) {
                        log::warn!("{}: registry credentials not used: {e}", path.display());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("{}: cannot read registry credentials: {e}", path.display()),
            }
        }
        ring
    }

    pub fn add(&mut self, key: &str, creds: Credentials) {
        self.entries.entry(normalize(key)).or_default().push(creds);
    }

    /// Every credential that may serve `registry/repository`, the most specific key first
    /// (keys in reverse order, as the kubelet sorts them: `quay.io/coreos` before `quay.io`).
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<Credentials> {
        let image = format!("{registry}/{repository}");
        let mut found: Vec<Credentials> = self
            .entries
            .iter()
            .rev()
            .filter(|(key, _)| matches(key, &image))
            .flat_map(|(_, creds)| creds.iter().cloned())
            .collect();
        if found.is_empty() && is_docker_hub(registry) {
            found = self.entries.get(DOCKER_HUB).cloned().unwrap_or_default();
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `https://host:port/v1/` → `host:port`; `host/path/` → `host/path/`: the scheme goes, and a
/// `/v1/` or `/v2/` path means the whole host, as in docker's `ResolveAuthConfig`.
fn normalize(key: &str) -> String {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (host, path) = match key.find('/') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let path = match path {
        p if p.starts_with("/v1/") || p.starts_with("/v2/") => &p[3..],
        p => p,
    };
    match path {
        "" | "/" => host.to_string(),
        p => format!("{host}{p}"),
    }
}

/// The kubelet's `URLsMatch`: same port, same number of host labels each matching its glob,
/// and the key's path a prefix of the image's.
fn matches(key: &str, image: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let ((key_host, key_path), (image_host, image_path)) = (split(key), split(image));
    let port = |h: &str| h.rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string()));
    let (key_host, key_port) = port(&key_host).unwrap_or((key_host, String::new()));
    let (image_host, image_port) = port(&image_host).unwrap_or((image_host, String::new()));
    if key_port != image_port {
        return false;
    }
    let (key_labels, image_labels): (Vec<&str>, Vec<&str>) =
        (key_host.split('.').collect(), image_host.split('.').collect());
    key_labels.len() == image_labels.len()
        && key_labels.iter().zip(&image_labels).all(|(g, l)| glob(g.as_bytes(), l.as_bytes()))
        && image_path.starts_with(&key_path)
}

/// `*` (any run) and `?` (one byte) within a host label, as Go's `filepath.Match` there.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Images that name no registry, or Docker Hub by one of its names.
fn is_docker_hub(registry: &str) -> bool {
    matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

fn decode(entry: &AuthEntry) -> Option<Credentials> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = STANDARD.decode(auth.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        return Some(Credentials::new(user, pass));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> Keyring {
        let mut k = Keyring::default();
        for key in keys {
            k.add(key, Credentials::new(*key, "pw"));
        }
        k
    }

    fn users(k: &Keyring, registry: &str, repository: &str) -> Vec<String> {
        k.lookup(registry, repository).into_iter().map(|c| c.username).collect()
    }

    /// The kubelet's keyring tests: paths are prefixes, the most specific key first.
    #[test]
    fn the_most_specific_key_comes_first() {
        let k = ring(&["quay.io", "quay.io/coreos", "quay.io/coreos/etcd", "gcr.io"]);
        assert_eq!(
            users(&k, "quay.io", "coreos/etcd"),
            ["quay.io/coreos/etcd", "quay.io/coreos", "quay.io"]
        );
        assert_eq!(users(&k, "quay.io", "other/app"), ["quay.io"]);
        assert!(users(&k, "docker.io", "library/busybox").is_empty());
    }

    #[test]
    fn ports_must_match_and_schemes_and_api_versions_are_dropped() {
        let k = ring(&["https://reg.example:5000/v2/", "http://plain.example/"]);
        assert_eq!(users(&k, "reg.example:5000", "app"), ["https://reg.example:5000/v2/"]);
        assert!(users(&k, "reg.example", "app").is_empty(), "no port is another registry");
        assert!(users(&k, "reg.example:5001", "app").is_empty());
        assert_eq!(users(&k, "plain.example", "team/app"), ["http://plain.example/"]);
    }

    #[test]
    fn host_labels_may_be_globs_of_the_same_count() {
        let k = ring(&["*.example.com", "reg?.internal"]);
        assert_eq!(users(&k, "eu.example.com", "app"), ["*.example.com"]);
        assert!(users(&k, "example.com", "app").is_empty(), "the label count differs");
        assert!(users(&k, "a.eu.example.com", "app").is_empty());
        assert_eq!(users(&k, "reg1.internal", "app"), ["reg?.internal"]);
        assert!(users(&k, "reg12.internal", "app").is_empty());
    }

    #[test]
    fn docker_hubs_entry_serves_images_without_a_registry() {
        let k = ring(&["https://index.docker.io/v1/"]);
        assert_eq!(users(&k, "docker.io", "library/busybox"), ["https://index.docker.io/v1/"]);
        assert!(users(&k, "ghcr.io", "library/busybox").is_empty());
    }

    #[test]
    fn docker_configs_of_both_formats_are_read_and_bad_ones_refused() {
        let auth = STANDARD.encode("alice:s3:cret");
        let mut k = Keyring::default();
        let json = format!(r#"{{"auths":{{"reg.example":{{"auth":"{auth}"}}}}}}"#);
        assert_eq!(k.add_docker_config(json.as_bytes()), Ok(1));
        let legacy = r#"{"old.example":{"username":"bob","password":"pw"}}"#;
        assert_eq!(k.add_docker_config(legacy.as_bytes()), Ok(1));
        assert_eq!(k.lookup("reg.example", "a"), [Credentials::new("alice", "s3:cret")]);
        assert_eq!(k.lookup("old.example", "a"), [Credentials::new("bob", "pw")]);
        let bad = r#"{"auths":{"x.example":{"auth":"!!"}}}"#;
        assert_eq!(
            k.add_docker_config(bad.as_bytes()),
            Err(KeyringError::Entry { key: "x.example".into() })
        );
        let other = r#"{"credsStore":"desktop","auths":{}}"#;
        assert_eq!(k.add_docker_config(other.as_bytes()), Ok(0));
        let e = k.add_docker_config(b"[1]").unwrap_err();
        assert!(matches!(e, KeyringError::Json(_)), "{e}");
        assert!(!format!("{k:?}").contains("s3:cret"), "Debug never shows a password");
    }

    /// The node's files: a missing one is skipped, an unusable one too (with a warning), and
    /// a Docker Hub entry serves `docker.io` images.
    #[test]
    fn node_files_are_read_in_order_and_bad_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (dir.path().join("config.json"), dir.path().join("auth.json"));
        let auth = STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &good,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                    "reg.example:5000":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        std::fs::write(&bad, r#"{"auths":{"broken.example":{"auth":"!!"}}}"#).unwrap();
        let k = Keyring::from_files(&[dir.path().join("missing.json"), bad, good]);
        assert_eq!(
            k.lookup("docker.io", "library/busybox"),
            [Credentials::new("alice", "s3:cret")]
        );
        assert_eq!(k.lookup("reg.example:5000", "app"), [Credentials::new("bob", "pw")]);
        assert!(k.lookup("reg.example", "app").is_empty());
        assert!(k.lookup("broken.example", "app").is_empty());
    }
}
