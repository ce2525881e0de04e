//! SIGCHLD → a byte on a self-pipe, so the poll loop wakes up to reap.
//!
//! Not signalfd: that needs SIGCHLD blocked, and libcontainer does not reset the signal mask
//! in containers, so every workload would inherit a blocked SIGCHLD.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use super::error::{Result, SupervisorError};

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    // SAFETY: only async-signal-safe calls (write) and errno save/restore.
    unsafe {
        let errno = *libc::__errno_location();
        let byte = 1u8;
        libc::write(WAKE_FD.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Installs the handler; returns the read end (non-blocking) to poll.
pub fn install() -> Result<OwnedFd> {
    let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
    let (read, write) = nix::unistd::pipe2(flags)
        .map_err(|source| SupervisorError::Sys { what: "pipe2", source })?;
    WAKE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
    // The write end lives as long as the process.
    std::mem::forget(write);
    // SAFETY: a zeroed sigaction with a valid handler and empty mask is a valid argument.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(SupervisorError::Sys {
            what: "sigaction(SIGCHLD)",
            source: nix::errno::Errno::last(),
        });
    }
    Ok(read)
}

/// Empties the pipe after a wake-up.
pub fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}
