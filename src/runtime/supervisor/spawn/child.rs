//! The forked side of a spawn: the first child joins the container and clones the process,
//! which enters the rest and execs. Only syscalls on data the parent prepared.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::capabilities::set_capabilities;
use super::step::{check, Step};
use super::{ExecTemplate, Isolation};

/// What the forked child needs, prepared by the parent so the child only makes syscalls.
pub(super) struct Child<'a> {
    pub(super) template: &'a ExecTemplate,
    pub(super) stdio: [Option<RawFd>; 3],
    pub(super) namespaces: &'a [(OwnedFd, libc::c_int)],
    /// The container's pid namespace, for the process only (`None`: it shares the host's).
    pub(super) pid_ns: Option<RawFd>,
    pub(super) candidates: &'a [CString],
    pub(super) argv: &'a [*const libc::c_char],
    pub(super) envp: &'a [*const libc::c_char],
    pub(super) report: RawFd,
    /// Descriptors (>= 3, ascending) the child needs until execve; it closes all others.
    pub(super) keep: &'a [RawFd],
    pub(super) isolation: Isolation,
    /// Stdin is a terminal, to become the process's controlling terminal.
    pub(super) tty: bool,
}

impl Child<'_> {
    /// Reports the failed step and errno to the supervisor and exits.
    fn fail(&self, step: Step) -> ! {
        let errno = nix::errno::Errno::last_raw().to_le_bytes();
        let message = [step as u8, errno[0], errno[1], errno[2], errno[3]];
        // SAFETY: a write to our socket and _exit: async-signal-safe, no Rust runtime needed.
        unsafe {
            libc::write(self.report, message.as_ptr().cast(), message.len());
            libc::_exit(127)
        }
    }

    /// The first child: joins the container's cgroups and namespaces, clones the process
    /// into them as the supervisor's child, and exits.
    pub(super) fn join(&self) -> ! {
        if let Err(step) = self.enter_namespaces() {
            self.fail(step);
        }
        // SAFETY: this child is single-threaded (forked from the single-threaded supervisor).
        match unsafe { clone_parent() } {
            0 => {
                let step = match self.enter() {
                    Ok(()) => Step::Exec,
                    Err(step) => step,
                };
                self.fail(step);
            }
            pid if pid < 0 => self.fail(Step::Forked),
            // SAFETY: _exit is async-signal-safe.
            _ => unsafe { libc::_exit(0) },
        }
    }

    /// Tells the supervisor this process's pid (in the credentials of a one-byte message).
    fn announce(&self) {
        let hello = 0u8;
        // SAFETY: a write to our socket: async-signal-safe.
        unsafe { libc::write(self.report, (&hello as *const u8).cast(), 1) };
    }

    /// Everything done on host paths and every namespace but the pid one, which only this
    /// process's children enter.
    fn enter_namespaces(&self) -> std::result::Result<(), Step> {
        let t = self.template;
        // SAFETY (whole block): plain syscalls on this freshly forked, single-threaded process,
        // with pointers into memory the parent prepared and that lives until execve.
        unsafe {
            // Until execve no one but root on the host may open our /proc entries (its fds
            // are the supervisor's), as runc; the process inherits it.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        crate::runtime::supervisor::executor::reset_signals();
        // SAFETY: as above.
        unsafe {
            for (target, fd) in self.stdio.iter().enumerate() {
                if let Some(fd) = *fd {
                    check(libc::dup2(fd, target as RawFd), Step::Stdio)?;
                }
            }
            // Nothing of the supervisor's (logs, sockets, pipes, its pid namespace) goes into
            // the container: close all but stdio and what the steps below need.
            close_all_but(self.keep);
            // Host paths: before the mount namespace changes.
            if let Some(adj) = &t.oom_score_adj {
                write_file(c"/proc/self/oom_score_adj", adj.as_bytes(), Step::OomScoreAdj)?;
            }
            for procs in &t.cgroup_procs {
                write_file(procs, b"0", Step::Cgroup)?;
            }
            for (fd, flag) in self.namespaces {
                check(libc::setns(fd.as_raw_fd(), *flag), Step::Namespace)?;
                libc::close(fd.as_raw_fd());
            }
            if let Some(fd) = self.pid_ns {
                check(libc::setns(fd, libc::CLONE_NEWPID), Step::Namespace)?;
                libc::close(fd);
            }
        }
        Ok(())
    }

    /// The process, in the container's namespaces from birth. Returns only on failure (Ok
    /// means: every execve candidate failed).
    fn enter(&self) -> std::result::Result<(), Step> {
        let t = self.template;
        self.announce();
        // SAFETY (whole block): as in `enter_namespaces`.
        unsafe {
            if self.isolation == Isolation::OwnPidNamespace {
                check(libc::unshare(libc::CLONE_NEWPID), Step::PidNamespace)?;
                // The init of the new namespace, the supervisor's child too, goes on below;
                // this process exits.
                match clone_parent() {
                    0 => self.announce(),
                    pid if pid < 0 => return Err(Step::PidNamespace),
                    _ => libc::_exit(0),
                }
            }
            // Out of the supervisor's session and process group, like libcontainer's exec.
            check(libc::setsid(), Step::Session)?;
            if self.tty {
                check(libc::ioctl(0, libc::TIOCSCTTY, 0), Step::Session)?;
            }
            for (resource, limit) in &t.rlimits {
                check(libc::setrlimit(*resource, limit), Step::Rlimit)?;
            }
            if t.no_new_privs {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), Step::NoNewPrivs)?;
            }
            if let Some(profile) = &t.apparmor {
                if libcontainer::apparmor::apply_profile(profile).is_err() {
                    return Err(Step::AppArmor);
                }
            }
            if let Some(umask) = t.umask {
                libc::umask(umask);
            }
            // Before the user changes (root may enter what the user may not), retried after
            // (root squashing on network filesystems), like libcontainer.
            let chdir_later = libc::chdir(t.cwd.as_ptr()) != 0;
            if chdir_later && nix::errno::Errno::last() != nix::errno::Errno::EPERM {
                return Err(Step::Chdir);
            }
            // runc's order: without no_new_privs loading a filter needs CAP_SYS_ADMIN, so
            // before the capabilities go; with it, as late as possible.
            if let (Some(filter), false) = (&t.seccomp, t.no_new_privs) {
                check(filter.load(), Step::Seccomp)?;
            }
            check(libc::setgroups(t.groups.len(), t.groups.as_ptr()), Step::Groups)?;
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), Step::Ids)?;
            check(libc::setresgid(t.gid, t.gid, t.gid), Step::Ids)?;
            check(libc::setresuid(t.uid, t.uid, t.uid), Step::Ids)?;
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0), Step::Ids)?;
            // A uid change resets dumpable to fs.suid_dumpable, which may be 1.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            if let Some(caps) = &t.caps {
                set_capabilities(caps)?;
            }
            if chdir_later {
                check(libc::chdir(t.cwd.as_ptr()), Step::Chdir)?;
            }
            if let (Some(filter), true) = (&t.seccomp, t.no_new_privs) {
                check(filter.load(), Step::Seccomp)?;
            }
            let mut result = Ok(());
            for path in self.candidates {
                libc::execve(path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                // Like execvp: keep looking after ENOENT, remember EACCES.
                let errno = nix::errno::Errno::last();
                if errno == nix::errno::Errno::EACCES {
                    result = Err(Step::Exec);
                } else if errno != nix::errno::Errno::ENOENT && errno != nix::errno::Errno::ENOTDIR
                {
                    return Err(Step::Exec);
                }
            }
            if result.is_err() {
                nix::errno::Errno::set_raw(libc::EACCES);
            } else {
                nix::errno::Errno::set_raw(libc::ENOENT);
            }
            Err(Step::Exec)
        }
    }
}

/// A fork whose child is the caller's parent's child (`CLONE_PARENT`): 0 in the child, its pid
/// (in the caller's pid namespace) in the caller, or -1.
///
/// # Safety
/// As `fork` in a single-threaded process. No stack is given, so the child runs on a copy of
/// the caller's; the other arguments are zero, whatever order the architecture takes them in.
unsafe fn clone_parent() -> libc::c_long {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize)
}

/// Closes every descriptor from 3 up except `keep` (ascending, each >= 3).
///
/// # Safety
/// Plain syscalls; the caller must own every descriptor it closes (a forked child).
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut low = 3u32;
    for &fd in keep {
        let fd = fd as u32;
        if fd > low {
            libc::syscall(libc::SYS_close_range, low, fd - 1, 0u32);
        }
        low = low.max(fd + 1);
    }
    libc::syscall(libc::SYS_close_range, low, u32::MAX, 0u32);
}

/// open + write + close; errno tells why on failure.
///
/// # Safety
/// Plain syscalls; `path` must be a valid C string.
unsafe fn write_file(
    path: &std::ffi::CStr,
    data: &[u8],
    step: Step,
) -> std::result::Result<(), Step> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    check(fd, step)?;
    let fd = OwnedFd::from_raw_fd(fd);
    let written = libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len());
    check(written as libc::c_int, step)
}
