//! Registry credentials and `WWW-Authenticate` challenges (which credentials serve an image:
//! `keyring`).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

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
    fn basic_auth_and_debug_keep_the_password_out_of_sight() {
        let creds = Credentials::new("alice", "s3:cret");
        assert_eq!(creds.basic(), format!("Basic {}", STANDARD.encode("alice:s3:cret")));
        assert!(!format!("{creds:?}").contains("s3:cret"));
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("repository:a/b:pull,push"), "repository:a/b:pull%2Cpush");
        assert_eq!(query_escape("x y&z"), "x%20y%26z");
    }
}
