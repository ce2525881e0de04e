//! Pod sysctls, the kubelet's `sysctl` package: the safe set (with the kernel versions that
//! namespace them), `--allowed-unsafe-sysctls` patterns, and the admission handler that
//! rejects a pod asking for anything else (`SysctlForbidden`). Only sysctls the kernel
//! namespaces per pod (IPC or network) can ever be allowed.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;

use super::Rejection;

/// A kernel version as `major.minor`.
pub type Kernel = (u32, u32);

/// `safe_sysctls.go`: name and the kernel that namespaced it (None: every supported kernel).
pub const SAFE_SYSCTLS: [(&str, Option<Kernel>); 12] = [
    ("kernel.shm_rmid_forced", None),
    ("net.ipv4.ip_local_port_range", None),
    ("net.ipv4.tcp_syncookies", None),
    ("net.ipv4.ping_group_range", None),
    ("net.ipv4.ip_unprivileged_port_start", None),
    ("net.ipv4.ip_local_reserved_ports", Some((3, 16))),
    ("net.ipv4.tcp_keepalive_time", Some((4, 5))),
    ("net.ipv4.tcp_fin_timeout", Some((4, 6))),
    ("net.ipv4.tcp_keepalive_intvl", Some((4, 5))),
    ("net.ipv4.tcp_keepalive_probes", Some((4, 5))),
    ("net.ipv4.tcp_rmem", Some((4, 15))),
    ("net.ipv4.tcp_wmem", Some((4, 15))),
];

/// The namespace that isolates a sysctl, the kubelet's `NamespacedBy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
        })
    }
}

pub fn namespaced_by(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" {
        return Some(Namespace::Ipc);
    }
    [
        ("kernel.shm", Namespace::Ipc),
        ("kernel.msg", Namespace::Ipc),
        ("fs.mqueue.", Namespace::Ipc),
        ("net.", Namespace::Net),
    ]
    .into_iter()
    .find(|(p, _)| name.starts_with(p))
    .map(|(_, ns)| ns)
}

/// `ConvertSysctlVariableToDotsSeparator`: a name written with `/` separators (which allows
/// dots inside a segment, e.g. an interface `eth0.100`) in the dotted form.
pub fn to_dots(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// A bad `--allowed-unsafe-sysctls` entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SysctlFlagError {
    #[error("sysctl {0:?} must have at most 253 characters and be a sysctl name (segments of [a-z0-9], '-' and '_' separated by '.' or '/'), optionally ending in '*'")]
    Syntax(String),
    #[error("sysctl {0:?} is not known to be namespaced: only kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* (ipc) and net.* (network) can be allowed")]
    NotNamespaced(String),
}

/// `IsValidSysctlPattern`: dot- or slash-separated segments `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`,
/// optionally ending in `*`.
fn valid_pattern(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let body = s.strip_suffix('*').unwrap_or(s);
    if body.is_empty() {
        return true;
    }
    // A trailing separator is allowed only before the '*'.
    let body = match body.strip_suffix(['.', '/']) {
        Some(b) if s.ends_with('*') => b,
        Some(_) => return false,
        None => body,
    };
    body.split(['.', '/']).all(|seg| {
        let b = seg.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-' || *c == b'_')
    })
}

/// `--allowed-unsafe-sysctls`: names and `prefix*` patterns, each known to be namespaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsafeSysctls(pub Vec<String>);

impl std::str::FromStr for UnsafeSysctls {
    type Err = SysctlFlagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut v = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !valid_pattern(p) {
                return Err(SysctlFlagError::Syntax(p.into()));
            }
            let dots = to_dots(p);
            if namespaced_by(dots.strip_suffix('*').unwrap_or(&dots)).is_none() {
                return Err(SysctlFlagError::NotNamespaced(p.into()));
            }
            v.push(dots);
        }
        Ok(UnsafeSysctls(v))
    }
}

/// The kubelet's `patternAllowlist` over the safe set and the allowed unsafe patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlAllowlist {
    sysctls: BTreeMap<String, Namespace>,
    prefixes: Vec<(String, Namespace)>,
}

impl Default for SysctlAllowlist {
    /// The whole safe set (a kernel that namespaces all of it).
    fn default() -> Self {
        Self::new(Some((u32::MAX, 0)), &UnsafeSysctls::default())
    }
}

impl SysctlAllowlist {
    /// The safe sysctls `kernel` namespaces (None: unknown, only the unconditional ones, as
    /// the kubelet does), plus the allowed unsafe ones.
    pub fn new(kernel: Option<Kernel>, unsafe_sysctls: &UnsafeSysctls) -> Self {
        let mut w = SysctlAllowlist { sysctls: BTreeMap::new(), prefixes: Vec::new() };
        for (name, min) in SAFE_SYSCTLS {
            if min.is_none_or(|min| kernel.is_some_and(|k| k >= min)) {
                w.add(name);
            } else {
                log::warn!("kernel too old for a namespaced {name}: not in the safe sysctls");
            }
        }
        for p in &unsafe_sysctls.0 {
            w.add(p);
        }
        w
    }

    fn add(&mut self, pattern: &str) {
        // Checked when parsed (UnsafeSysctls) or known (SAFE_SYSCTLS).
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                if let Some(ns) = namespaced_by(prefix) {
                    self.prefixes.push((prefix.to_string(), ns));
                }
            }
            None => {
                if let Some(ns) = namespaced_by(pattern) {
                    self.sysctls.insert(pattern.to_string(), ns);
                }
            }
        }
    }

    /// `validateSysctl`: the error is the kubelet's, without `forbidden sysctl: `.
    fn validate(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let name = to_dots(name);
        let ns = self.sysctls.get(&name).copied().or_else(|| {
            self.prefixes.iter().find(|(p, _)| name.starts_with(p.as_str())).map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{name:?} not allowlisted")),
            Some(ns @ Namespace::Ipc) if host_ipc => {
                Err(format!("{name:?} not allowed with host {ns} enabled"))
            }
            Some(ns @ Namespace::Net) if host_net => {
                Err(format!("{name:?} not allowed with host {ns} enabled"))
            }
            Some(_) => Ok(()),
        }
    }

    /// The admission handler: the first sysctl of the pod that is not allowed rejects it.
    pub fn admit(&self, spec: &PodSpec) -> Result<(), Rejection> {
        let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_deref());
        let (host_net, host_ipc) =
            (spec.host_network.unwrap_or(false), spec.host_ipc.unwrap_or(false));
        for s in sysctls.unwrap_or_default() {
            self.validate(&s.name, host_net, host_ipc).map_err(|e| Rejection {
                reason: "SysctlForbidden".into(),
                message: format!("forbidden sysctl: {e}"),
            })?;
        }
        Ok(())
    }
}

/// `major.minor` of a kernel release such as `6.18.0-1-amd64`.
pub fn parse_kernel(release: &str) -> Option<Kernel> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("test spec")
    }

    fn sysctls(names: &[&str], extra: &str) -> PodSpec {
        let list: Vec<String> =
            names.iter().map(|n| format!("{{name: {n:?}, value: '1'}}")).collect();
        spec(&format!(
            "containers: [{{name: a}}]\nsecurityContext: {{sysctls: [{}]}}\n{extra}",
            list.join(", ")
        ))
    }

    fn unsafe_list(s: &str) -> UnsafeSysctls {
        s.parse().unwrap()
    }

    fn rejected(message: &str) -> Result<(), Rejection> {
        Err(Rejection { reason: "SysctlForbidden".into(), message: message.into() })
    }

    #[test]
    fn safe_sysctls_are_allowed_and_others_forbidden() {
        let w = SysctlAllowlist::new(Some((6, 1)), &UnsafeSysctls::default());
        assert_eq!(w.admit(&spec("containers: [{name: a}]")), Ok(()));
        let safe = sysctls(
            &["kernel.shm_rmid_forced", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_rmem"],
            "",
        );
        assert_eq!(w.admit(&safe), Ok(()));
        // Slash form is the same sysctl.
        assert_eq!(w.admit(&sysctls(&["net/ipv4/ping_group_range"], "")), Ok(()));
        assert_eq!(
            w.admit(&sysctls(&["kernel.shm_rmid_forced", "kernel.msgmax"], "")),
            rejected("forbidden sysctl: \"kernel.msgmax\" not allowlisted")
        );
        assert_eq!(
            w.admit(&sysctls(&["vm.swappiness"], "")),
            rejected("forbidden sysctl: \"vm.swappiness\" not allowlisted")
        );
    }

    #[test]
    fn kernel_version_conditions_of_the_safe_set() {
        let old = SysctlAllowlist::new(Some((4, 4)), &UnsafeSysctls::default());
        assert_eq!(old.admit(&sysctls(&["net.ipv4.ip_local_reserved_ports"], "")), Ok(()));
        assert_eq!(
            old.admit(&sysctls(&["net.ipv4.tcp_keepalive_time"], "")),
            rejected("forbidden sysctl: \"net.ipv4.tcp_keepalive_time\" not allowlisted")
        );
        let v45 = SysctlAllowlist::new(Some((4, 5)), &UnsafeSysctls::default());
        assert_eq!(v45.admit(&sysctls(&["net.ipv4.tcp_keepalive_time"], "")), Ok(()));
        assert!(v45.admit(&sysctls(&["net.ipv4.tcp_fin_timeout"], "")).is_err());
        assert!(v45.admit(&sysctls(&["net.ipv4.tcp_wmem"], "")).is_err());
        let unknown = SysctlAllowlist::new(None, &UnsafeSysctls::default());
        assert!(unknown.admit(&sysctls(&["net.ipv4.ip_local_reserved_ports"], "")).is_err());
        assert_eq!(unknown.admit(&sysctls(&["net.ipv4.tcp_syncookies"], "")), Ok(()));
        assert_eq!(parse_kernel("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel("4.15+"), Some((4, 15)));
        assert_eq!(parse_kernel("unknown"), None);
        assert_eq!(parse_kernel("4.15.0+"), Some((4, 15)));
    }

    #[test]
    fn unsafe_patterns_allow_names_and_prefixes() {
        let w = SysctlAllowlist::new(Some((6, 1)), &unsafe_list("kernel.msg*, net.core.somaxconn"));
        assert_eq!(w.admit(&sysctls(&["kernel.msgmax", "kernel.msgmnb"], "")), Ok(()));
        assert_eq!(w.admit(&sysctls(&["net.core.somaxconn"], "")), Ok(()));
        assert_eq!(
            w.admit(&sysctls(&["net.core.rmem_max"], "")),
            rejected("forbidden sysctl: \"net.core.rmem_max\" not allowlisted")
        );
        assert!(w.admit(&sysctls(&["kernel.shmmax"], "")).is_err());
    }

    /// Sharing the host's namespace forbids that namespace's sysctls, safe or allowed.
    #[test]
    fn host_network_and_host_ipc_forbid_their_sysctls() {
        let w = SysctlAllowlist::new(Some((6, 1)), &unsafe_list("kernel.msg*,net.core.*"));
        let host_net = |names: &[&str]| w.admit(&sysctls(names, "hostNetwork: true"));
        assert_eq!(
            host_net(&["net.ipv4.ping_group_range"]),
            rejected(
                "forbidden sysctl: \"net.ipv4.ping_group_range\" not allowed with host net enabled"
            )
        );
        assert_eq!(
            host_net(&["net.core.somaxconn"]),
            rejected("forbidden sysctl: \"net.core.somaxconn\" not allowed with host net enabled")
        );
        assert_eq!(host_net(&["kernel.shm_rmid_forced"]), Ok(()));
        let host_ipc = |names: &[&str]| w.admit(&sysctls(names, "hostIPC: true"));
        assert_eq!(
            host_ipc(&["kernel.shm_rmid_forced"]),
            rejected(
                "forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host ipc enabled"
            )
        );
        assert_eq!(
            host_ipc(&["kernel.msgmax"]),
            rejected("forbidden sysctl: \"kernel.msgmax\" not allowed with host ipc enabled")
        );
        assert_eq!(host_ipc(&["net.ipv4.tcp_syncookies"]), Ok(()));
    }

    #[test]
    fn the_flag_takes_only_namespaced_sysctls() {
        assert_eq!(unsafe_list(""), UnsafeSysctls(vec![]));
        assert_eq!(
            unsafe_list(
                "kernel.msg*,kernel.sem,fs.mqueue.*,net.*,net/ipv4/conf/eth0.100/forwarding"
            ),
            UnsafeSysctls(vec![
                "kernel.msg*".into(),
                "kernel.sem".into(),
                "fs.mqueue.*".into(),
                "net.*".into(),
                "net.ipv4.conf.eth0/100.forwarding".into()
            ])
        );
        for bad in ["vm.swappiness", "kernel.*", "kernel.hostname", "*", "fs.*", "kernel.semmni"] {
            assert_eq!(
                bad.parse::<UnsafeSysctls>(),
                Err(SysctlFlagError::NotNamespaced(bad.into())),
                "{bad}"
            );
        }
        for bad in ["Net.core.somaxconn", "net..core", "net.core.", "net.*.x", "net.core-"] {
            assert_eq!(
                bad.parse::<UnsafeSysctls>(),
                Err(SysctlFlagError::Syntax(bad.into())),
                "{bad}"
            );
        }
    }
}
