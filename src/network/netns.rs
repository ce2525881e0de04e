//! Pinned network namespaces: a bind mount of a namespace that keeps it alive until DEL has
//! run, as containerd pins `/var/run/netns/cni-*`.
//!
//! Like containerd and CRI-O, the agent creates a pod's namespace itself ([`create`]), so the
//! CNI ADD runs while the sandbox is still being made, whose containers then join it.
//!
//! Without it, a sandbox whose last process died takes its netns along, and the bridge
//! plugin (1.1) then skips removing its ipMasq rules on DEL; and a `/proc/<pid>` path kept
//! across an agent restart could name another process's namespace once the pid is reused.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, FsType};

/// Network namespaces made at once.
const CREATORS: usize = 4;

/// `NSFS_MAGIC` from linux/magic.h: what statfs reports for a namespace file.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The pin file could not be created or the namespace not bind-mounted onto it.
    #[error("pinning namespace {source_path} at {pin}: {error}")]
    Pin { source_path: PathBuf, pin: PathBuf, error: std::io::Error },
    /// No new namespace could be made, or its `lo` not brought up.
    #[error("creating network namespace {pin}: {what}: {error}")]
    Create { pin: PathBuf, what: &'static str, error: std::io::Error },
    /// The pin could not be unmounted or removed.
    #[error("unpinning namespace {pin}: {error}")]
    Unpin { pin: PathBuf, error: std::io::Error },
}

/// A new network namespace with `lo` up, pinned at `pin`. `unshare` moves only the calling
/// thread, so a short-lived thread of its own makes it: no agent thread leaves the host's
/// namespace. Async because `unshare(CLONE_NEWNET)` can wait on the kernel's namespace lock
/// for a long time while other namespaces are being destroyed.
///
/// At most [`CREATORS`] at once: a burst of pods would otherwise start a thread each (110
/// threads for 110 pod files dropped at once), each touching a stack and a malloc arena, all
/// waiting on the same kernel lock anyway.
pub async fn create(pin: &Path) -> Result<(), NetnsError> {
    static SLOTS: smol::lock::Semaphore = smol::lock::Semaphore::new(CREATORS);
    let _slot = SLOTS.acquire().await;
    let (tx, rx) = smol::channel::bounded(1);
    let target = pin.to_path_buf();
    let err = |what, error| NetnsError::Create { pin: pin.to_path_buf(), what, error };
    std::thread::Builder::new()
        .name("netns-create".into())
        // Two syscalls and an ioctl: the default 2 MiB would only be address space, but the
        // smaller one keeps the guard pages and the thread's setup cheap.
        .stack_size(64 * 1024)
        .spawn(move || {
            let made = match unshare(CloneFlags::CLONE_NEWNET) {
                Err(e) => Err(("unshare", e.into())),
                Ok(()) => loopback_up().map_err(|e| ("bring lo up", e.into())),
            }
            .map(|()| self::pin(Path::new("/proc/thread-self/ns/net"), &target));
            let _ = tx.send_blocking(made);
        })
        .map_err(|e| err("spawn thread", e))?;
    match rx.recv().await {
        Ok(Ok(pinned)) => pinned,
        Ok(Err((what, e))) => Err(err(what, e)),
        Err(_) => Err(err("thread", std::io::Error::other("the netns-create thread died"))),
    }
}

/// Sets `lo` up in the calling thread's network namespace (an ioctl, not `ip link`).
pub fn loopback_up() -> nix::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; the ioctls read/write only that struct.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(nix::errno::Errno::last());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}

/// Bind-mounts the namespace at `source` onto `pin` (created, as an empty file).
pub fn pin(source: &Path, pin: &Path) -> Result<(), NetnsError> {
    let err = |error: std::io::Error| NetnsError::Pin {
        source_path: source.to_path_buf(),
        pin: pin.to_path_buf(),
        error,
    };
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::File::create(pin).map_err(err)?;
    if let Err(e) = mount(Some(source), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(pin);
        return Err(err(e.into()));
    }
    Ok(())
}

/// Whether `pin` is a live namespace (after a reboot it is an empty file).
pub fn is_pinned(pin: &Path) -> bool {
    statfs(pin).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and removes `pin`; a missing pin is not an error.
pub fn unpin(pin: &Path) -> Result<(), NetnsError> {
    let err = |error: std::io::Error| NetnsError::Unpin { pin: pin.to_path_buf(), error };
    if is_pinned(pin) {
        umount2(pin, MntFlags::MNT_DETACH).map_err(|e| err(e.into()))?;
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
        _ => Ok(()),
    }
}
