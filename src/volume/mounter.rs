//! The one place volumes touch the mount table, behind a trait so tests run without root.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts and unmounts the tmpfs filesystems of memory-backed volumes and the binds of
/// `subPath`s.
pub trait Mounter {
    /// Mounts a tmpfs of at most `size_bytes` at `target` (an existing directory).
    fn mount_tmpfs(&self, target: &Path, size_bytes: u64) -> io::Result<()>;
    /// Bind-mounts what `source` refers to (not a path that could be swapped) at `target`,
    /// an existing file or directory of the same type.
    fn bind_fd(&self, source: BorrowedFd<'_>, target: &Path) -> io::Result<()>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// Mount points at or below `dir`, deepest first.
    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real mount table, through `mount(2)` and `/proc/self/mountinfo`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: u64) -> io::Result<()> {
        let options = format!("size={size_bytes}");
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(io::Error::from)
    }

    fn bind_fd(&self, source: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        let source = super::subpath::fd_path(source);
        mount(Some(source.as_path()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut found: Vec<PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)))
            .filter(|p| p.starts_with(dir))
            .collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found.dedup();
        Ok(found)
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount table in memory: records tmpfs mounts without mounting anything.
#[derive(Debug, Default)]
pub struct FakeMounter {
    mounted: Mutex<Vec<(PathBuf, u64)>>,
}

impl FakeMounter {
    /// The tmpfs mounts currently "mounted", with their sizes.
    pub fn mounted(&self) -> Vec<(PathBuf, u64)> {
        self.mounted.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: u64) -> io::Result<()> {
        if !target.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut m =
            self.mounted.lock().map_err(|_| io::Error::other("fake mount table poisoned"))?;
        m.push((target.to_path_buf(), size_bytes));
        Ok(())
    }

    /// Recorded with size 0; the target must exist, as for a real bind.
    fn bind_fd(&self, _source: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        std::fs::symlink_metadata(target)?;
        let mut m =
            self.mounted.lock().map_err(|_| io::Error::other("fake mount table poisoned"))?;
        m.push((target.to_path_buf(), 0));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let mut m =
            self.mounted.lock().map_err(|_| io::Error::other("fake mount table poisoned"))?;
        let before = m.len();
        m.retain(|(p, _)| p != target);
        if m.len() == before {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let m = self.mounted.lock().map_err(|_| io::Error::other("fake mount table poisoned"))?;
        let mut found: Vec<PathBuf> =
            m.iter().map(|(p, _)| p.clone()).filter(|p| p.starts_with(dir)).collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(found)
    }
}
