//! Security contexts: ids, seccomp, capabilities, sysctl names.

use k8s_openapi::api::core::v1::SeccompProfile;

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    /// A user or group id, as the API bounds them.
    pub(super) fn id(&mut self, at: FieldPath, id: Option<i64>) {
        if let Some(id) = id {
            if !(0..=i64::from(i32::MAX)).contains(&id) {
                self.fail(at, format!("{id}: must be between 0 and 2147483647, inclusive"));
            }
        }
    }

    pub(super) fn seccomp(&mut self, p: &SeccompProfile, at: &FieldPath) {
        self.one_of(at.key("type"), &p.type_, &["RuntimeDefault", "Unconfined", "Localhost"]);
        match (p.type_.as_str(), p.localhost_profile.as_deref()) {
            ("Localhost", None | Some("")) => self.fail(
                at.key("localhostProfile"),
                "must be set when seccomp type is Localhost: the profile's path, relative to the kubelet's seccomp directory",
            ),
            ("Localhost", Some(path)) => self.descending_path(at.key("localhostProfile"), path),
            (_, Some(_)) => self.fail(
                at.key("localhostProfile"),
                "can only be set when seccomp type is Localhost: remove it or set `type: Localhost`",
            ),
            (_, None) => {}
        }
    }

    /// The fields pod and container security contexts share. Those outpost cannot apply are
    /// refused, never silently ignored (the kubelet too rejects an AppArmor pod on a host
    /// without AppArmor).
    pub(super) fn shared_security(
        &mut self,
        at: &FieldPath,
        seccomp: Option<&SeccompProfile>,
        se_linux: bool,
        app_armor: Option<&str>,
        windows: bool,
    ) {
        if let Some(p) = seccomp {
            self.seccomp(p, &at.key("seccompProfile"));
        }
        if se_linux {
            self.fail(
                at.key("seLinuxOptions"),
                "outpost does not apply SELinux labels: remove seLinuxOptions",
            );
        }
        if let Some(t) = app_armor.filter(|t| *t != "Unconfined") {
            self.fail(
                at.key("appArmorProfile").key("type"),
                format!("AppArmor profile {t:?} cannot be enforced: outpost does not apply AppArmor profiles; remove appArmorProfile or use `type: Unconfined`"),
            );
        }
        if windows {
            self.fail(
                at.key("windowsOptions"),
                "outpost runs Linux pods only: remove windowsOptions",
            );
        }
    }

    pub(super) fn capability(&mut self, at: FieldPath, name: &str) {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare != "ALL" && !LINUX_CAPABILITIES.contains(&bare) {
            self.fail(at, format!("unknown capability {name:?}: use ALL or a Linux capability name with or without CAP_ ({})", LINUX_CAPABILITIES.join(", ")));
        }
    }
}

/// Linux's capability names without `CAP_` (also what `ALL` and `privileged` grant).
pub const LINUX_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The API's sysctl name: `^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`,
/// at most 253 characters.
pub(super) fn is_sysctl_name(s: &str) -> bool {
    let segment = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    };
    s.len() <= 253 && s.split(['.', '/']).all(segment)
}
