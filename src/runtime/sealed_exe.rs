//! The agent and every supervisor run from a copy of the `outpost` binary that cannot be
//! written, never from the host's file (runc's CVE-2019-5736 defence).
//!
//! Container inits and exec'd processes are forked from a supervisor, so until their `execve`
//! their `/proc/PID/exe` is the supervisor's executable. A container that may trace them
//! (`CAP_SYS_PTRACE`) could open that link, keep the descriptor, and write through it once no
//! process runs the file any more (ETXTBSY is gone): the next `outpost` started on the host
//! would be the attacker's. So `outpost run` and `outpost supervise` first re-exec themselves
//! from:
//!
//! 1. the binary seen through a private read-only overlayfs mount, attached nowhere (as runc
//!    1.2 does): no copy, the page cache is shared, and an overlay without an upper layer has no
//!    way to become writable;
//! 2. else (no overlayfs, no `fsopen`, the file was replaced under us) a sealed memfd copy.
//!
//! Later `outpost supervise` processes are exec'd from `/proc/self/exe`, the sealed copy.

use std::convert::Infallible;
use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

/// The executable that runs this process, as a path other processes can exec.
pub const SELF_EXE: &str = "/proc/self/exe";

/// Set on the re-exec so a copy that is still not sealed does not loop.
const REEXEC_MARK: &str = "OUTPOST_SEALED_REEXEC";

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 2;
const MOUNT_ATTR_NODEV: libc::c_uint = 4;

/// What this process runs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExeKind {
    /// A file seen through a read-only overlayfs.
    Overlay,
    /// A memfd sealed against writes.
    SealedMemfd,
    /// A writable file: the host's binary.
    HostFile,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{what}: {source}")]
    Sys { what: String, source: Errno },
    #[error("no overlayfs view ({overlay}) and no memfd copy ({memfd})")]
    Neither { overlay: Box<SealError>, memfd: Box<SealError> },
    #[error("copying {path} into a memfd: {source}")]
    Copy { path: PathBuf, source: std::io::Error },
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> SealError {
    let what = what.into();
    move |source| SealError::Sys { what, source }
}

/// What `/proc/self/exe` is.
pub fn current() -> Result<ExeKind, SealError> {
    kind_of(Path::new(SELF_EXE))
}

/// What the executable file at `path` is (a `/proc/PID/exe` link or a file).
pub fn kind_of(path: &Path) -> Result<ExeKind, SealError> {
    let file = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys(format!("opening {}", path.display())))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let file = unsafe { OwnedFd::from_raw_fd(file) };
    let seals = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::F_GET_SEALS);
    if seals.is_ok_and(|s| s & libc::F_SEAL_WRITE != 0) {
        return Ok(ExeKind::SealedMemfd);
    }
    let fs = nix::sys::statfs::fstatfs(file.as_fd()).map_err(sys("fstatfs"))?;
    let read_only = fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if fs.filesystem_type().0 as i64 == OVERLAYFS_SUPER_MAGIC && read_only {
        Ok(ExeKind::Overlay)
    } else {
        Ok(ExeKind::HostFile)
    }
}

/// Re-execs this process from a sealed copy unless it runs from one already. Returns what it
/// runs from when no re-exec was needed; call first thing in `main`, before any thread.
///
/// Fails only when neither way works (then the process goes on from the host's file).
pub fn ensure() -> Result<ExeKind, SealError> {
    let retried = std::env::var_os(REEXEC_MARK).is_some();
    if retried {
        // Single-threaded still: nothing reads the environment concurrently.
        std::env::remove_var(REEXEC_MARK);
    }
    let kind = current()?;
    if kind != ExeKind::HostFile || retried {
        // Exec'd as `/proc/self/exe` (or, on older kernels, by descriptor) the process would
        // be called `exe` (or `3`) in ps and pgrep.
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"outpost".as_ptr(), 0, 0, 0) };
        return Ok(kind);
    }
    let exe = match overlay_exe() {
        Ok(fd) => fd,
        Err(overlay) => memfd_exe().map_err(|memfd| SealError::Neither {
            overlay: Box::new(overlay),
            memfd: Box::new(memfd),
        })?,
    };
    reexec(&exe).map(|never| match never {})
}

/// The running binary opened through a fresh read-only overlayfs mount attached nowhere.
fn overlay_exe() -> Result<OwnedFd, SealError> {
    let target = std::fs::read_link(SELF_EXE).map_err(|e| {
        sys("reading /proc/self/exe")(Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    })?;
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(SealError::Sys {
            what: format!("{} has no directory", target.display()),
            source: Errno::EINVAL,
        });
    };
    // Overlayfs needs two lower layers to mount without an upper one. The second is an empty
    // directory, removed once mounted (the mount keeps it).
    let empty = empty_dir(dir)?;
    let result = (|| {
        let lower = format!("{}:{}", escape_lower(dir), escape_lower(&empty));
        let ctx = fsopen()?;
        fsconfig_string(&ctx, c"lowerdir", &lower)?;
        // Only to keep dmesg quiet when the layers are on different filesystems.
        let _ = fsconfig_string(&ctx, c"xino", "off");
        fsconfig_create(&ctx)?;
        let mnt = fsmount(&ctx)?;
        let name =
            CString::new(name.as_bytes()).map_err(|_| sys("executable name")(Errno::EINVAL))?;
        let fd = nix::fcntl::openat(
            Some(mnt.as_raw_fd()),
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(format!("opening {} in the overlay", target.display())))?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    let _ = std::fs::remove_dir(&empty);
    result
}

/// A fresh empty directory outside `bin_dir` (overlayfs refuses layers inside each other):
/// in the temporary directory, else in `/run`.
fn empty_dir(bin_dir: &Path) -> Result<PathBuf, SealError> {
    let mut last =
        SealError::Sys { what: "no place for an empty directory".into(), source: Errno::ENOENT };
    for base in [std::env::temp_dir(), PathBuf::from("/run"), PathBuf::from("/dev/shm")] {
        if base.starts_with(bin_dir) {
            continue;
        }
        let template = base.join("outpost-exe-XXXXXX");
        match nix::unistd::mkdtemp(&template) {
            Ok(dir) => return Ok(dir),
            Err(e) => last = sys(format!("mkdtemp {}", template.display()))(e),
        }
    }
    Err(last)
}

/// `:` separates layers and `\` escapes in overlayfs' `lowerdir`.
fn escape_lower(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "\\\\").replace(':', "\\:")
}

fn fsopen() -> Result<OwnedFd, SealError> {
    // SAFETY: a NUL-terminated name and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    owned(fd, "fsopen overlay")
}

fn fsconfig_string(ctx: &OwnedFd, key: &CStr, value: &str) -> Result<(), SealError> {
    let what = || format!("fsconfig overlay {}={value}", key.to_string_lossy());
    let value = CString::new(value).map_err(|_| sys(what())(Errno::EINVAL))?;
    // SAFETY: valid descriptor and NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    Errno::result(rc).map(drop).map_err(sys(what()))
}

fn fsconfig_create(ctx: &OwnedFd) -> Result<(), SealError> {
    // SAFETY: valid descriptor; this command takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    Errno::result(rc).map(drop).map_err(sys("fsconfig overlay create"))
}

fn fsmount(ctx: &OwnedFd) -> Result<OwnedFd, SealError> {
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: valid descriptor and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    owned(fd, "fsmount overlay")
}

fn owned(rc: libc::c_long, what: &str) -> Result<OwnedFd, SealError> {
    let fd = Errno::result(rc).map_err(sys(what))?;
    let fd = i32::try_from(fd).map_err(|_| sys(what)(Errno::EBADF))?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of the running binary in a memfd, sealed against any change.
fn memfd_exe() -> Result<OwnedFd, SealError> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let fd =
        memfd_create(c"outpost", MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING)
            .map_err(sys("memfd_create"))?;
    let mut copy = File::from(fd);
    let copy_error = |source| SealError::Copy { path: PathBuf::from(SELF_EXE), source };
    let mut source = File::open(SELF_EXE).map_err(copy_error)?;
    std::io::copy(&mut source, &mut copy).map_err(copy_error)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    nix::fcntl::fcntl(
        copy.as_raw_fd(),
        nix::fcntl::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_truncate(seals)),
    )
    .map_err(sys("sealing the memfd"))?;
    Ok(copy.into())
}

/// Execs `exe` with this process's arguments and environment (plus the re-exec mark).
fn reexec(exe: &OwnedFd) -> Result<Infallible, SealError> {
    let args: Vec<CString> = std::env::args_os().map(cstring).collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect();
    env.push(cstring(OsString::from(format!("{REEXEC_MARK}=1"))));
    nix::unistd::execveat(Some(exe.as_raw_fd()), c"", &args, &env, AtFlags::AT_EMPTY_PATH)
        .map_err(sys("re-executing from the sealed copy"))
}

/// Arguments and environment strings never hold a NUL (the kernel passed them as C strings).
fn cstring(s: OsString) -> CString {
    CString::new(s.into_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_dirs_are_escaped() {
        assert_eq!(escape_lower(Path::new("/a:b\\c")), "/a\\:b\\\\c");
    }

    #[test]
    fn a_plain_file_is_a_host_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, b"x").unwrap();
        // Unless the test's temporary directory is itself on a read-only overlay.
        assert_eq!(kind_of(&file).unwrap(), ExeKind::HostFile);
    }

    #[test]
    fn a_sealed_memfd_is_recognised() {
        let fd = memfd_exe().unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        assert_eq!(kind_of(&path).unwrap(), ExeKind::SealedMemfd);
        // Sealed: no write goes through, whatever the opener's privileges.
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let e = std::io::Write::write(&mut f, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }
}
