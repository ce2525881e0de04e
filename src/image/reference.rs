//! Docker-style image references, normalized the way Docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`.

use super::error::{ImageError, Result};

/// A parsed reference. `repository` is fully qualified (`docker.io/library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// What a user may name an image by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `name[:tag]`, normalized to `repository:tag` (tag defaults to `latest`).
    Tag(String),
    /// `name@sha256:...` or a bare `sha256:...` manifest digest.
    Digest(String),
}

impl Reference {
    /// Parses and normalizes; a missing tag and digest means `:latest`.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason| ImageError::InvalidReference { reference: input.to_string(), reason };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(bad)?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, path.to_string())
            }
            _ => ("docker.io", name.to_string()),
        };
        if domain.chars().any(|c| c.is_ascii_uppercase()) && domain != "localhost" {
            // Registries are case-insensitive but Docker rejects uppercase; so do we.
            return Err(bad("registry must be lowercase"));
        }
        let domain = if domain == "index.docker.io" { "docker.io" } else { domain };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        for component in path.split('/') {
            validate_component(component).map_err(bad)?;
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { repository: format!("{domain}/{path}"), tag, digest })
    }

    /// `repository:tag`, the key of the reference index (None for digest-only references).
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repository))
    }

    /// How the store looks this reference up: a digest wins over a tag, as in Docker.
    pub fn lookup(&self) -> Lookup {
        match (&self.digest, self.tagged()) {
            (Some(d), _) => Lookup::Digest(d.clone()),
            (None, Some(t)) => Lookup::Tag(t),
            (None, None) => Lookup::Tag(format!("{}:latest", self.repository)),
        }
    }
}

/// Parses what a user typed: a reference, or a bare `sha256:<hex>` digest.
pub fn parse_lookup(input: &str) -> Result<Lookup> {
    if input.starts_with("sha256:") {
        validate_digest(input).map_err(|reason| ImageError::InvalidReference {
            reference: input.to_string(),
            reason,
        })?;
        return Ok(Lookup::Digest(input.to_string()));
    }
    Ok(Reference::parse(input)?.lookup())
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn validate_digest(d: &str) -> std::result::Result<(), &'static str> {
    let hex = d.strip_prefix("sha256:").ok_or("digest must start with sha256:")?;
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err("digest must be sha256: and 64 lowercase hex digits")
    }
}

fn validate_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let ok_first = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok_rest = tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok_first && ok_rest && tag.len() <= 128 {
        Ok(())
    } else {
        Err("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    }
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn validate_component(c: &str) -> std::result::Result<(), &'static str> {
    const MSG: &str =
        "name components must be lowercase letters and digits separated by . _ __ or -";
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(MSG);
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return Err(MSG);
        }
    }
    Ok(())
}

/// Splits a normalized `repository:tag` for display (`docker.io/library/busybox`, `latest`),
/// shortening Docker Hub names the way `docker images` does.
pub fn display_parts(tagged: &str) -> (String, String) {
    let last_slash = tagged.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match tagged[last_slash..].rfind(':') {
        Some(i) => (&tagged[..last_slash + i], &tagged[last_slash + i + 1..]),
        None => (tagged, "<none>"),
    };
    let short = repo
        .strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .unwrap_or(repo);
    (short.to_string(), tag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let r = Reference::parse(s).unwrap();
        match r.lookup() {
            Lookup::Tag(t) => t,
            Lookup::Digest(d) => format!("{}@{d}", r.repository),
        }
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("index.docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app:v2"), "docker.io/user/app:v2");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("localhost/app:1"), "localhost/app:1");
        assert_eq!(norm("ghcr.io/a/b/c:x.y-z"), "ghcr.io/a/b/c:x.y-z");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(norm(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "Busybox", "busybox:", "a//b", "busybox@sha256:12", "-a", "a:-x", "a b"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_shortens_hub_names() {
        assert_eq!(
            display_parts("docker.io/library/busybox:latest"),
            ("busybox".to_string(), "latest".to_string())
        );
        assert_eq!(
            display_parts("localhost:5000/app:1"),
            ("localhost:5000/app".to_string(), "1".to_string())
        );
    }
}
