//! `subPath` mounts without the check-then-use race (CVE-2021-25741 class).
//!
//! A container can write into its volume while a sibling container starts, so any path inside
//! a volume may turn into a symlink between a check and a mount. Like the kubelet since its
//! fix, the subPath is opened component by component from the volume's root, never following
//! a symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW` on kernels
//! without it), and the descriptor that was checked is bind-mounted (through
//! `/proc/self/fd/N`) onto a path under the pod's data directory that no container can write.
//! The runtime then mounts that path: whatever happens in the volume afterwards, it names the
//! directory or file that was checked.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::Mounter;
use crate::runtime::spec::{SubPathBinder, SubPathProblem, SubPathRequest};

/// A subPath opened under its volume: the descriptor (`O_PATH`) and what it was checked as.
#[derive(Debug)]
pub struct OpenedSubPath {
    pub fd: OwnedFd,
    /// The path it had when it was opened (for logs and for tests; never mount it).
    pub resolved: PathBuf,
    pub is_dir: bool,
}

/// Opens `sub` below `volume`: symlinks inside the volume are resolved first (the kubelet
/// allows those), then every component of the result is opened from the parent's descriptor
/// without following any symlink. Missing directories are created with the volume's mode, each
/// with `mkdirat` on the checked parent. A symlink swapped in at any moment makes this fail; it
/// never leads outside the volume.
pub fn open(volume: &Path, sub: &Path) -> Result<OpenedSubPath, SubPathProblem> {
    if sub.is_absolute() || sub.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(SubPathProblem::Backsteps(sub.display().to_string()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| SubPathProblem::Io { path, source }
    };
    let root = volume.canonicalize().map_err(io(volume))?;
    let mode = std::fs::metadata(&root).map_err(io(&root))?.permissions().mode() & 0o7777;
    let rel = inside_relative(&root, sub)?;

    let mut fd = open_root(&root)?;
    let mut so_far = root.clone();
    let mut is_dir = true;
    for c in rel.components() {
        so_far.push(c);
        let name = c.as_os_str();
        let next = match open_component(fd.as_fd(), name) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    Some(fd.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(mode),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io(&so_far)(e.into())),
                }
                let made = open_component(fd.as_fd(), name).map_err(|e| io(&so_far)(e.into()))?;
                // The umask must not narrow the volume's permissions (the kubelet chmods too);
                // chmod through a real descriptor of what was just checked, never by path.
                let dir = reopen(made.as_fd(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| io(&so_far)(e.into()))?;
                nix::sys::stat::fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| io(&so_far)(e.into()))?;
                made
            }
            Err(Errno::ELOOP | Errno::EXDEV) => {
                return Err(SubPathProblem::Escapes {
                    sub_path: sub.to_path_buf(),
                    resolved: so_far,
                })
            }
            Err(e) => return Err(io(&so_far)(e.into())),
            Ok(next) => next,
        };
        let file = std::fs::File::from(next);
        // std's metadata, not nix's fstat: on 32-bit glibc (armv7) that one fails with
        // EOVERFLOW for files of 2 GiB or more.
        let meta = file.metadata().map_err(io(&so_far))?;
        if meta.file_type().is_symlink() {
            return Err(SubPathProblem::Escapes { sub_path: sub.to_path_buf(), resolved: so_far });
        }
        is_dir = meta.is_dir();
        fd = file.into();
    }
    Ok(OpenedSubPath { fd, resolved: so_far, is_dir })
}

/// `sub` with the symlinks of its existing part resolved, relative to `root`; an error when
/// it resolves outside. Only a hint for [`open`], which checks every component again.
fn inside_relative(root: &Path, sub: &Path) -> Result<PathBuf, SubPathProblem> {
    let mut existing = root.join(sub);
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) if parent.starts_with(root) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let resolved = existing
        .canonicalize()
        .map_err(|source| SubPathProblem::Io { path: existing.clone(), source })?;
    let Ok(rel) = resolved.strip_prefix(root) else {
        return Err(SubPathProblem::Escapes { sub_path: sub.to_path_buf(), resolved });
    };
    let mut rel = rel.to_path_buf();
    rel.extend(rest.iter().rev());
    Ok(rel)
}

fn open_root(root: &Path) -> Result<OwnedFd, SubPathProblem> {
    let raw = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SubPathProblem::Io { path: root.to_path_buf(), source: e.into() })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// One path component below `dir`, never through a symlink (an `O_PATH` descriptor of the
/// symlink itself when the last component is one, which the caller refuses).
fn open_component(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    let raw = match nix::fcntl::openat2(dir.as_raw_fd(), name, how) {
        // Kernels before 5.6: one component from a checked parent with O_NOFOLLOW is as safe.
        Err(Errno::ENOSYS) => {
            nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?
        }
        other => other?,
    };
    // SAFETY: `openat2`/`openat` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A real descriptor of what an `O_PATH` descriptor names (through the fd's magic link, which
/// cannot be redirected: it is the open file itself).
fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> Result<OwnedFd, Errno> {
    let path = fd_path(fd);
    let raw = nix::fcntl::open(path.as_path(), flags | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `/proc/self/fd/N`: the path through which a mount or open reaches exactly this descriptor.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Binds each subPath under `dir` (the pod's `volume-subpaths`, which no container can write)
/// at `<volume>/<container>/<index>`, the kubelet's layout, and hands that path to the spec.
pub struct BindSubPaths<'a> {
    pub dir: PathBuf,
    pub mounter: &'a dyn Mounter,
}

impl std::fmt::Debug for BindSubPaths<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindSubPaths").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SubPathBinder for BindSubPaths<'_> {
    fn bind(&self, req: &SubPathRequest<'_>) -> Result<PathBuf, SubPathProblem> {
        let opened = open(req.volume_dir, req.sub)?;
        let target = self.dir.join(req.volume).join(req.container).join(req.index.to_string());
        let io = |source: std::io::Error| SubPathProblem::Io { path: target.clone(), source };
        // A restarted container gets a fresh bind: the subPath may have changed since.
        for m in self.mounter.mounts_under(&target).map_err(io)? {
            self.mounter.unmount(&m).map_err(io)?;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() == opened.is_dir && !m.file_type().is_symlink() => {}
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target).map_err(io)?,
            Ok(_) => std::fs::remove_file(&target).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if std::fs::symlink_metadata(&target).is_err() {
            if opened.is_dir {
                std::fs::create_dir(&target).map_err(io)?;
            } else {
                // Only a mount point: the mounted file keeps its own mode.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io)?;
            }
        }
        self.mounter.bind_fd(opened.fd.as_fd(), &target).map_err(io)?;
        log::debug!(
            "subPath {:?} of volume {} for container {} bound at {}",
            req.sub,
            req.volume,
            req.container,
            target.display()
        );
        Ok(target)
    }
}
