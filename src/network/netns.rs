//! Pinned network namespaces: a bind mount of the sandbox's `/proc/<pid>/ns/net` that keeps
//! the namespace alive until DEL has run, as containerd pins `/var/run/netns/cni-*`.
//!
//! Without it, a sandbox whose pause process died takes its netns along, and the bridge
//! plugin (1.1) then skips removing its ipMasq rules on DEL; and a `/proc/<pid>` path kept
//! across an agent restart could name another process's namespace once the pid is reused.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, FsType};

/// `NSFS_MAGIC` from linux/magic.h: what statfs reports for a namespace file.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The pin file could not be created or the namespace not bind-mounted onto it.
    #[error("pinning network namespace {source_path} at {pin}: {error}")]
    Pin { source_path: PathBuf, pin: PathBuf, error: std::io::Error },
    /// The pin could not be unmounted or removed.
    #[error("unpinning network namespace {pin}: {error}")]
    Unpin { pin: PathBuf, error: std::io::Error },
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
