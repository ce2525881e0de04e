//! User namespaces for pods with `hostUsers: false`, without a process: [`create`] makes one
//! with the pod's id mapping (container ids 0..65535 → the pod's block of host ids,
//! `crate::userns`), together with the other namespaces the pod needs, owned by it (a network
//! namespace owned by the host's would leave container root without power over its own `lo`
//! and sysctls), and pins each. [`idmap`] mounts an idmapped view of a mount through that
//! namespace, so files the host's root owns (image layers, the agent's volume files) are the
//! container root's inside it; a bind mount of an idmapped mount keeps the mapping.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::network::netns;
use crate::userns::IDS_PER_POD;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The kernel refused a step of making the namespaces.
    #[error("{owner}: {what}: {source}")]
    Create { owner: String, what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Pin(#[from] netns::NetnsError),
    /// The filesystem cannot be idmapped: the pod cannot run in its own user namespace.
    #[error("idmapped mount of {path}: {what}: {source}{hint}")]
    Idmap { path: PathBuf, what: &'static str, source: std::io::Error, hint: &'static str },
}

/// A namespace [`create`] makes and pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Net,
    Uts,
    Ipc,
}

impl Kind {
    fn flag(self) -> libc::c_int {
        match self {
            Kind::User => libc::CLONE_NEWUSER,
            Kind::Net => libc::CLONE_NEWNET,
            Kind::Uts => libc::CLONE_NEWUTS,
            Kind::Ipc => libc::CLONE_NEWIPC,
        }
    }

    fn proc_name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Net => "net",
            Kind::Uts => "uts",
            Kind::Ipc => "ipc",
        }
    }
}

/// Whose the namespaces are.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// A new user namespace mapping ids 0..65535 to `first..first+65535` (uids and gids),
    /// which owns the others; pin it with [`Kind::User`].
    New { first: u32 },
    /// The pinned user namespace at this path.
    Pinned(&'a Path),
}

/// Makes new namespaces owned by `owner` and pins each at its path in `pins` (a bind mount on
/// an empty file, as network namespaces are pinned). A new network namespace has `lo` up.
///
/// A child holds the namespaces while this process writes the mapping and pins them, then
/// exits. It makes raw syscalls only (async-signal safe: a lock another thread held at the
/// fork cannot matter), so this is safe from the multi-threaded agent as from a supervisor.
pub fn create(owner: Owner<'_>, pins: &[(Kind, &Path)]) -> Result<(), UsernsError> {
    let named = match owner {
        Owner::New { first } => {
            format!("user namespace of host ids {first}-{}", first + (IDS_PER_POD - 1))
        }
        Owner::Pinned(path) => format!("namespaces owned by the user namespace {}", path.display()),
    };
    let err = |what, source| UsernsError::Create { owner: named.clone(), what, source };
    let flags = pins.iter().fold(0, |f, (k, _)| f | k.flag());
    let join = match owner {
        Owner::Pinned(path) => {
            Some(File::open(path).map_err(|e| err("open the user namespace", e))?)
        }
        Owner::New { .. } => None,
    };
    let (ready_r, ready_w) = pipe().map_err(|e| err("pipe", e))?;
    let (hold_r, hold_w) = pipe().map_err(|e| err("pipe", e))?;
    // A new user namespace is made by the clone itself, so the others are owned by it; a
    // pinned one is joined first by the child, which then unshares the others.
    let clone_flags = match owner {
        Owner::New { .. } => flags | libc::CLONE_NEWUSER,
        Owner::Pinned(_) => 0,
    };
    let fds = ChildFds {
        ready: ready_w.as_raw_fd(),
        hold: hold_r.as_raw_fd(),
        hold_w: hold_w.as_raw_fd(),
        join: join.as_ref().map(|f| (f.as_raw_fd(), flags)),
        net: flags & libc::CLONE_NEWNET != 0,
    };
    // SAFETY: a fork-like clone (no new stack); the child runs `child` only, see above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (clone_flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe { child(&fds) }
    }
    if pid < 0 {
        return Err(err("clone", std::io::Error::last_os_error()));
    }
    let pid = pid as libc::pid_t;
    drop((ready_w, hold_r));
    let mut status = [0u8; 1];
    let made = match std::fs::File::from(ready_r).read_exact(&mut status) {
        Err(e) => Err(err("wait for the namespaces", e)),
        Ok(()) if status[0] != 0 => Err(err(
            CHILD_STEPS.get(status[0] as usize).copied().unwrap_or("child"),
            std::io::Error::other("refused by the kernel"),
        )),
        Ok(()) => map_and_pin(pid, owner, pins).map_err(|e| match e {
            Step::Io(what, source) => err(what, source),
            Step::Pin(e) => UsernsError::Pin(e),
        }),
    };
    // The child waits for this end to close, then exits; reap it either way.
    drop(hold_w);
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    if made.is_err() {
        release(pins);
    }
    made
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just made, owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

enum Step {
    Io(&'static str, std::io::Error),
    Pin(netns::NetnsError),
}

fn map_and_pin(pid: libc::pid_t, owner: Owner<'_>, pins: &[(Kind, &Path)]) -> Result<(), Step> {
    if let Owner::New { first } = owner {
        let line = format!("0 {first} {IDS_PER_POD}\n");
        // setgroups stays "allow": the writer has CAP_SETGID in the parent namespace, and
        // supplementalGroups need it.
        for (file, what) in [("uid_map", "write uid_map"), ("gid_map", "write gid_map")] {
            std::fs::write(format!("/proc/{pid}/{file}"), &line).map_err(|e| Step::Io(what, e))?;
        }
    }
    for (kind, pin) in pins {
        let source = format!("/proc/{pid}/ns/{}", kind.proc_name());
        netns::pin(Path::new(&source), pin).map_err(Step::Pin)?;
    }
    Ok(())
}

/// What the child needs, as raw descriptors (it must not allocate).
struct ChildFds {
    ready: libc::c_int,
    hold: libc::c_int,
    hold_w: libc::c_int,
    /// The user namespace to join, and the namespaces to unshare after.
    join: Option<(libc::c_int, libc::c_int)>,
    net: bool,
}

/// What the child's status byte names.
const CHILD_STEPS: [&str; 4] = ["", "setns(user namespace)", "unshare(namespaces)", "bring lo up"];

/// The cloned child: joins and unshares as told, `lo` up in a new network namespace, reports
/// (0, or the index of the failed step in [`CHILD_STEPS`]), then waits for the parent to close
/// its end of the hold pipe.
///
/// # Safety
/// Only in the child of [`create`]'s clone: raw syscalls, then `_exit`.
unsafe fn child(fds: &ChildFds) -> ! {
    libc::close(fds.hold_w);
    let mut status = 0u8;
    if let Some((user, flags)) = fds.join {
        if libc::setns(user, libc::CLONE_NEWUSER) != 0 {
            status = 1;
        } else if flags != 0 && libc::unshare(flags) != 0 {
            status = 2;
        }
    }
    if status == 0 && fds.net && netns::loopback_up().is_err() {
        status = 3;
    }
    libc::write(fds.ready, (&status as *const u8).cast(), 1);
    let mut byte = 0u8;
    while libc::read(fds.hold, (&mut byte as *mut u8).cast(), 1) < 0 {}
    libc::_exit(0)
}

/// Unpins what [`create`] pinned; missing pins are fine.
pub fn release(pins: &[(Kind, &Path)]) {
    for (_, pin) in pins {
        if let Err(e) = netns::unpin(pin) {
            log::warn!("{e}");
        }
    }
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts an idmapped view of `source` (a mount such as a container's overlay rootfs or a
/// tmpfs volume, or a directory, as a bind would) at `target` (an existing directory), through
/// the user namespace `userns`: an inode owned by host id `n` shows as `first + n`, so the
/// pod's root owns what the host's root owns. `source` stays as it was, for the host's root to
/// write (through `target` it could not: host root has no id in the mapping). Filesystems
/// without idmap support (overlayfs before 5.19, tmpfs before 6.3) fail with `EINVAL`, which
/// the error explains.
pub fn idmap(source: &Path, target: &Path, userns: &File) -> Result<(), UsernsError> {
    let err = |what, source_err: std::io::Error| {
        let hint = if source_err.raw_os_error() == Some(libc::EINVAL) {
            " (this kernel cannot idmap that filesystem: pods with hostUsers: false need idmapped mounts of overlayfs and tmpfs, Linux 6.3 or later)"
        } else {
            ""
        };
        UsernsError::Idmap { path: source.to_path_buf(), what, source: source_err, hint }
    };
    let c_string = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| err("path", std::io::Error::from_raw_os_error(libc::EINVAL)))
    };
    let (c_source, c_target) = (c_string(source)?, c_string(target)?);
    let open_tree_flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: a valid C string; the returned descriptor is ours.
    let tree = unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_source.as_ptr(), open_tree_flags)
    };
    if tree < 0 {
        return Err(err("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: just returned by open_tree.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` lives across the call and its size is passed.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(err("mount_setattr(MOUNT_ATTR_IDMAP)", std::io::Error::last_os_error()));
    }
    // SAFETY: valid descriptor and C strings.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(err("move_mount", std::io::Error::last_os_error()));
    }
    Ok(())
}
