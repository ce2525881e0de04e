//! Registry credentials (docker `config.json`) and `WWW-Authenticate` challenges.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

/// A user name and password for one registry. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }

    /// The `Authorization` header value for basic authentication.
    pub fn basic(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.username, self.password)))
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
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

/// The names a registry's credentials may be filed under. Docker files Docker Hub's under
/// `https://index.docker.io/v1/`.
fn aliases(registry: &str) -> Vec<&str> {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
        }
        other => vec![other],
    }
}

/// `https://host:port/v1/` → `host:port`.
fn key_host(key: &str) -> &str {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Credentials for `registry` (`host[:port]` as in the image reference) from the first
/// file that has them. Unreadable or malformed files are skipped with a warning that names
/// the file, never its content.
pub fn lookup(files: &[PathBuf], registry: &str) -> Option<Credentials> {
    let names = aliases(registry);
    files.iter().find_map(|path| {
        let config = read_config(path)?;
        config.auths.iter().find(|(k, _)| names.contains(&key_host(k))).and_then(|(key, entry)| {
            let found = decode(entry);
            if found.is_none() {
                log::warn!("{}: entry {key:?} has no usable auth", path.display());
            }
            found
        })
    })
}

fn read_config(path: &Path) -> Option<DockerConfig> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("{}: cannot read registry credentials: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice(&data) {
        Ok(c) => Some(c),
        Err(e) => {
            // serde_json's message names a line and column, not the content.
            log::warn!("{}: not a docker config.json: {e}", path.display());
            None
        }
    }
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

/// One `WWW-Authenticate` challenge: its scheme (lowercase) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull,push"`.
/// Quoted values may hold commas and backslash escapes.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            break;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters and `:/` stay).
pub fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        assert_eq!(c.params.len(), 3);
        let basic = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(basic.scheme, "basic");
        assert_eq!(basic.params["realm"], "basic-realm");
        let escaped = parse_challenge(r#"Bearer realm="a\"b", error=invalid_token"#).unwrap();
        assert_eq!(escaped.params["realm"], "a\"b");
        assert_eq!(escaped.params["error"], "invalid_token");
    }

    #[test]
    fn finds_credentials_by_host_and_docker_hub_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &file,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                    "reg.example:5000":{{"username":"bob","password":"pw"}},
                    "broken.example":{{"auth":"!!"}}}}}}"#
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), file];
        assert_eq!(lookup(&files, "docker.io"), Some(Credentials::new("alice", "s3:cret")));
        assert_eq!(lookup(&files, "reg.example:5000"), Some(Credentials::new("bob", "pw")));
        assert_eq!(lookup(&files, "reg.example"), None);
        assert_eq!(lookup(&files, "broken.example"), None);
        let creds = Credentials::new("alice", "s3:cret");
        assert_eq!(creds.basic(), format!("Basic {auth}"));
        assert!(!format!("{creds:?}").contains("s3:cret"));
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("repository:a/b:pull,push"), "repository:a/b:pull%2Cpush");
        assert_eq!(query_escape("x y&z"), "x%20y%26z");
    }
}
