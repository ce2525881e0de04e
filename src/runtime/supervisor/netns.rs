//! `lo` up in the pod's new network namespace, from the supervisor's only thread.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

use super::error::{IoContext, Result, SupervisorError};

pub fn loopback_up(pid: i32) -> Result<()> {
    let own_path = "/proc/self/ns/net";
    let own = File::open(own_path).io("open", own_path)?;
    let target_path = format!("/proc/{pid}/ns/net");
    let target = File::open(&target_path).io("open", &target_path)?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|source| SupervisorError::Sys { what: "setns(pod netns)", source })?;
    let result = set_lo_up();
    // Must get back, or every later socket of the supervisor lands in the pod; there is no
    // sane way to continue if the kernel refuses to re-enter a namespace we were just in.
    if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNET) {
        log::error!("setns back to the host network namespace failed: {e}");
        std::process::abort();
    }
    result
}

fn set_lo_up() -> Result<()> {
    let sys = |what| move |source| SupervisorError::Sys { what, source };
    // SAFETY: socket() returns a new fd or -1; we own it from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys("socket")(nix::errno::Errno::last()));
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; the ioctls read/write only that struct.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(sys("SIOCGIFFLAGS lo")(nix::errno::Errno::last()));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(sys("SIOCSIFFLAGS lo")(nix::errno::Errno::last()));
        }
    }
    Ok(())
}
