//! The five capability sets of a container process, and setting them with capset/prctl.

use libcontainer::capabilities::CapabilityExt;
use libcontainer::oci_spec::runtime::Capabilities;

use super::step::{check, Step};

/// The five capability sets as bit masks (bit n = capability n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CapSets {
    pub(super) bounding: u64,
    pub(super) effective: u64,
    pub(super) permitted: u64,
    pub(super) inheritable: u64,
    pub(super) ambient: u64,
}

pub(in crate::runtime::supervisor) fn mask(caps: &Option<Capabilities>) -> u64 {
    caps.iter().flatten().fold(0, |m, c| m | 1u64 << c.to_cap().index())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// libcontainer's order: effective = permitted (what setresuid cleared for a non-root user),
/// shrink the bounding set, then effective/permitted/inheritable, then ambient.
///
/// # Safety
/// Plain syscalls on the calling process.
pub(super) unsafe fn set_capabilities(caps: &CapSets) -> std::result::Result<(), Step> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    check(
        libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) as libc::c_int,
        Step::Capabilities,
    )?;
    for d in &mut data {
        d.effective = d.permitted;
    }
    check(
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int,
        Step::Capabilities,
    )?;
    for cap in 0..64 {
        if caps.bounding & (1u64 << cap) == 0 {
            // EINVAL: a capability this kernel does not have, nothing to drop.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && nix::errno::Errno::last() != nix::errno::Errno::EINVAL
            {
                return Err(Step::Capabilities);
            }
        }
    }
    check(capset(caps.effective, caps.permitted, caps.inheritable), Step::Capabilities)?;
    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for cap in 0..64 {
        if caps.ambient & (1u64 << cap) != 0 {
            // Like libcontainer (and runc): an ambient capability that cannot be raised is
            // skipped, the rest still apply.
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0);
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets (bit masks) of the calling thread.
/// Returns -1 with errno set on failure.
///
/// # Safety
/// One syscall on the calling process.
pub(in crate::runtime::supervisor) unsafe fn capset(
    effective: u64,
    permitted: u64,
    inheritable: u64,
) -> libc::c_int {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let split = |m: u64| [m as u32, (m >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData { effective: e[0], permitted: p[0], inheritable: i[0] },
        CapData { effective: e[1], permitted: p[1], inheritable: i[1] },
    ];
    libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int
}
