//! `fsGroup` volume ownership, as the kubelet's `SetVolumeOwnership`: the group becomes the
//! fsGroup, files gain group read (and write unless read-only), directories gain group
//! search and setgid so new files inherit the group. Symlinks are re-owned, never followed.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::unistd::{fchownat, Gid};

const RW: u32 = 0o660;
const RO: u32 = 0o440;
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Applies ownership to `dir` and, when `recursive`, everything below it.
pub fn apply(dir: &Path, gid: u32, read_only: bool, recursive: bool) -> io::Result<()> {
    one(dir, gid, read_only)?;
    if recursive {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                apply(&path, gid, read_only, true)?;
            } else {
                one(&path, gid, read_only)?;
            }
        }
    }
    Ok(())
}

fn one(path: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    fchownat(None, path, None, Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO } else { RW };
    if meta.is_dir() {
        mask |= SETGID | EXEC;
    }
    let mode = meta.mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask))?;
    }
    Ok(())
}
