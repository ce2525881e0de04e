//! Names, IPs and enumerations: DNS labels and subdomains, port names, qualified names.

use k8s_openapi::api::core::v1::PodSpec;

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    pub(super) fn dns_config(&mut self, spec: &PodSpec, at: &FieldPath) {
        let Some(d) = &spec.dns_config else { return };
        let dat = at.key("dnsConfig");
        let nameservers = d.nameservers.as_deref().unwrap_or_default();
        if nameservers.len() > 3 {
            self.fail(
                dat.key("nameservers"),
                format!("must not have more than 3 nameservers, found {}", nameservers.len()),
            );
        }
        for (i, ns) in nameservers.iter().enumerate() {
            self.ip(dat.key("nameservers").index(i), ns);
        }
        let searches = d.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            self.fail(
                dat.key("searches"),
                format!("must not have more than 32 search paths, found {}", searches.len()),
            );
        }
        for (i, s) in searches.iter().enumerate() {
            // A trailing dot (fully qualified) is allowed.
            let name = s.strip_suffix('.').unwrap_or(s);
            self.dns_subdomain(dat.key("searches").index(i), name);
        }
    }

    pub(super) fn ip(&mut self, at: FieldPath, ip: &str) {
        if ip.parse::<std::net::IpAddr>().is_err() {
            self.fail(
                at,
                format!("{ip:?} must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            );
        }
    }

    pub(super) fn one_of(&mut self, at: FieldPath, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            let list =
                allowed.iter().filter(|a| !a.is_empty()).copied().collect::<Vec<_>>().join(", ");
            self.fail(at, format!("unsupported value {value:?}: use one of {list}"));
        }
    }

    pub(super) fn dns_label(&mut self, at: FieldPath, s: &str) {
        if !is_dns_label(s) {
            self.fail(at, format!("invalid name {s:?}: must be a lowercase RFC 1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit), e.g. \"my-app\""));
        }
    }

    pub(super) fn dns_subdomain(&mut self, at: FieldPath, s: &str) {
        if s.len() > 253 || !s.split('.').all(is_dns_label) {
            self.fail(at, format!("invalid name {s:?}: must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\""));
        }
    }

    /// IANA service name, as Kubernetes requires for port names.
    pub(super) fn port_name(&mut self, at: FieldPath, s: &str) {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.chars().any(|c| c.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if !ok {
            self.fail(at, format!("invalid port name {s:?}: at most 15 lowercase letters, digits and single '-', with at least one letter, e.g. \"http\""));
        }
    }
}

/// The API's qualified name (`IsQualifiedName`, label keys): an optional DNS subdomain prefix
/// and `/`, then a name part.
pub(crate) fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((p, n)) => p.len() <= 253 && p.split('.').all(is_dns_label) && is_name_part(n),
        None => is_name_part(s),
    }
}

/// `IsValidLabelValue`: empty, or a name part.
pub(crate) fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// At most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
