//! The host's OCI platform, for picking one manifest out of a multi-arch index.

use oci_spec::image::{Descriptor, Platform};

/// OCI `architecture` and `variant` of the machine outpost was built for.
pub fn host() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        // 32-bit ARM boards running outpost are ARMv7 (armhf); ARMv6 is not targeted.
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "riscv64" => ("riscv64", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        other => (other, None),
    }
}

/// "linux/amd64", "linux/arm/v7".
pub fn host_name() -> String {
    match host() {
        (arch, Some(v)) => format!("linux/{arch}/{v}"),
        (arch, None) => format!("linux/{arch}"),
    }
}

pub fn describe(p: &Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// Whether an image for `p` runs here. arm64 images say "v8" or nothing; arm ones need the
/// same variant (a v6 image would run on v7, but we only accept the exact match or none).
pub fn matches(p: &Platform) -> bool {
    let (arch, variant) = host();
    if p.os().to_string() != "linux" || p.architecture().to_string() != arch {
        return false;
    }
    match (variant, p.variant().as_deref()) {
        (_, None) => true,
        (None, Some(v)) => arch == "arm64" && v == "v8",
        (Some(want), Some(v)) => want == v,
    }
}

/// Picks the host's entry among index entries; an entry without a platform counts as a
/// match only when it is the only one (single-image layouts often omit the platform).
pub fn select(entries: &[Descriptor]) -> Option<&Descriptor> {
    if let Some(d) = entries.iter().find(|d| d.platform().as_ref().is_some_and(matches)) {
        return Some(d);
    }
    match entries {
        [only] if only.platform().is_none() => Some(only),
        _ => None,
    }
}
