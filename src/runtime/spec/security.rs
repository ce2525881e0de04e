//! Capabilities, privileged mode, masked and read-only paths, no_new_privs: containerd's CRI
//! defaults and its handling of the Kubernetes security context.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Container;
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxDeviceCgroup};

use super::SpecWarning;

/// containerd's default capability set (`defaultUnixCaps`).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux defines (what `ALL` and `privileged` grant): the names validation
/// accepts.
pub const ALL_CAPS: [&str; 41] = crate::manifest::LINUX_CAPABILITIES;

/// The kubelet's default masked paths (`securitycontext.defaultMaskedPaths`).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The kubelet's default read-only paths.
pub const READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The security-relevant settings of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    pub privileged: bool,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    /// Bounding = effective = permitted; inheritable and ambient stay empty.
    pub capabilities: HashSet<Capability>,
    /// `procMount: Unmasked` or privileged: no masked / read-only paths.
    pub unmasked: bool,
}

fn normalize(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_string).unwrap_or(upper)
}

fn parse_cap(name: &str) -> Option<Capability> {
    name.parse().ok()
}

/// Computes [`Security`] for a container: the default set, then `add: [ALL]`, `drop: [ALL]`,
/// then individual adds, then individual drops (containerd's order, so `drop: [ALL]` +
/// `add: [NET_ADMIN]` leaves NET_ADMIN). Names are accepted with or without `CAP_`, in any case;
/// unknown names are reported and ignored.
pub fn security(container: &Container, warnings: &mut Vec<SpecWarning>) -> Security {
    let sc = container.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let all: HashSet<Capability> = ALL_CAPS.iter().filter_map(|c| parse_cap(c)).collect();
    let mut caps: HashSet<Capability> = DEFAULT_CAPS.iter().filter_map(|c| parse_cap(c)).collect();
    if privileged {
        caps = all.clone();
    } else if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        let add: Vec<String> = c.add.iter().flatten().map(|s| normalize(s)).collect();
        let drop: Vec<String> = c.drop.iter().flatten().map(|s| normalize(s)).collect();
        if add.iter().any(|c| c == "ALL") {
            caps = all.clone();
        }
        if drop.iter().any(|c| c == "ALL") {
            caps.clear();
        }
        for (names, adding) in [(&add, true), (&drop, false)] {
            for name in names.iter().filter(|c| *c != "ALL") {
                match parse_cap(name) {
                    Some(cap) if adding => {
                        caps.insert(cap);
                    }
                    Some(cap) => {
                        caps.remove(&cap);
                    }
                    None => warnings.push(SpecWarning::UnknownCapability {
                        container: container.name.clone(),
                        capability: name.clone(),
                    }),
                }
            }
        }
    }
    // The kubelet asks for no_new_privs only when allowPrivilegeEscalation is explicitly false.
    let no_new_privileges = sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
    let unmasked = privileged || sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    Security {
        privileged,
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        no_new_privileges,
        capabilities: caps,
        unmasked,
    }
}

impl Security {
    pub fn linux_capabilities(&self) -> LinuxCapabilities {
        let mut c = LinuxCapabilities::default();
        c.set_bounding(Some(self.capabilities.clone()));
        c.set_effective(Some(self.capabilities.clone()));
        c.set_permitted(Some(self.capabilities.clone()));
        c.set_inheritable(Some(HashSet::new()));
        c.set_ambient(Some(HashSet::new()));
        c
    }

    /// The device cgroup: deny all (the runtime allows its standard devices), or allow all
    /// when privileged.
    pub fn device_cgroup(&self) -> Vec<LinuxDeviceCgroup> {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(self.privileged);
        rule.set_access(Some("rwm".to_string()));
        vec![rule]
    }

    pub fn masked_paths(&self) -> Vec<String> {
        if self.unmasked {
            return Vec::new();
        }
        MASKED_PATHS.iter().map(|p| p.to_string()).collect()
    }

    pub fn readonly_paths(&self) -> Vec<String> {
        if self.unmasked {
            return Vec::new();
        }
        READONLY_PATHS.iter().map(|p| p.to_string()).collect()
    }
}
