//! Starts a process inside a running container without libcontainer: fork, join the
//! container's cgroups and namespaces, take on its oom_score_adj, rlimits, no_new_privs,
//! AppArmor profile, umask, cwd, user and groups, capabilities, seccomp filter and
//! environment, execve.
//!
//! This is what runc's and libcontainer's exec do (the process spec is the container's with the
//! arguments replaced, as containerd's CRI builds it), minus what makes libcontainer's tenant
//! builder cost ~6 ms of CPU: loading the state, re-reading and validating the bundle's spec,
//! a notify socket and two intermediate processes. Everything is computed once per container
//! start ([`ExecTemplate::new`]); a spawn is one fork and a few dozen syscalls.
//!
//! Two forks, as runc's nsexec: a first child, outside the container's pid namespace, joins
//! the container's cgroups and other namespaces and then clones the process, which is born in
//! the container's pid namespace already inside its mount and network namespaces. So a
//! container allowed to trace its processes never finds one of them in the host's namespaces.
//! The clone has `CLONE_PARENT`: the process is the supervisor's own child, which learns its
//! exit code; the first child exits at once. The supervisor is single-threaded, so forking is
//! safe.
//!
//! A probe or hook ([`Isolation::OwnPidNamespace`]) runs as the init of a pid namespace of its
//! own, nested in the container's: when it exits or is killed, the kernel kills every process
//! it left behind, daemons that called `setsid` or double-forked included, and nothing else
//! (the container's processes and other execs are outside that namespace). Without it, each
//! `sh -c 'daemon &'` probe leaked a process re-parented to the container's init. A subreaper
//! would lose the orphans the moment the probe exits (they then go to the container's init), and
//! a cgroup per exec costs a mkdir and rmdir per hierarchy and complicates the container's own
//! cgroup removal. Only a process already in the container's pid namespace may nest one in it,
//! so the process unshares it and clones the namespace's init, again with `CLONE_PARENT`, and
//! exits. Each process announces itself over a socket with `SO_PASSCRED`: the credentials carry
//! its pid as the supervisor sees it, whatever pid namespace it is in. A probe sees itself as
//! pid 1; `/proc` is still the container's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use libcontainer::capabilities::CapabilityExt;
use libcontainer::oci_spec::runtime::{Capabilities, LinuxNamespaceType, Spec};

use super::cgroups;
use super::error::{Result, SupervisorError};
use crate::runtime::spec::seccomp::Filter;

/// Whether an exec's leftovers die with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Shares the container's pid namespace: what it starts in the background outlives it, as
    /// with `kubectl exec` (`outpost exec`).
    None,
    /// Init of a pid namespace of its own: everything it started dies with it (probes, hooks).
    OwnPidNamespace,
}

/// `$PATH` when the container's environment has none (runc's and Go's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The five capability sets as bit masks (bit n = capability n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CapSets {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// How to enter one container: everything its processes share, computed from its final spec.
#[derive(Debug)]
pub struct ExecTemplate {
    container: String,
    /// The container's init (in the supervisor's pid namespace), an unreaped child of the
    /// supervisor while the container runs, so the pid cannot be reused.
    init_pid: i32,
    /// Namespaces joined by the child, in order (user first, mount last).
    namespaces: Vec<(&'static str, libc::c_int)>,
    /// Enter the container's pid namespace (not with hostPID).
    pid_namespace: bool,
    /// `cgroup.procs` of every hierarchy the init is a member of the container's cgroup in.
    cgroup_procs: Vec<CString>,
    env: Vec<CString>,
    /// Directories of the container's `$PATH`.
    path: Vec<String>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    /// `None`: the spec names no capabilities, the process keeps the supervisor's.
    caps: Option<CapSets>,
    no_new_privs: bool,
    rlimits: Vec<(u32, libc::rlimit)>,
    oom_score_adj: Option<CString>,
    umask: Option<libc::mode_t>,
    apparmor: Option<String>,
    /// The container's seccomp filter, compiled when the container started.
    seccomp: Option<Filter>,
}

/// Where a spawn failed in the child: reported to the parent as one byte plus errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    /// The first child could not clone the process (or it died before a word).
    Forked = 0,
    Session,
    PidNamespace,
    Stdio,
    OomScoreAdj,
    Cgroup,
    Namespace,
    Rlimit,
    NoNewPrivs,
    AppArmor,
    Chdir,
    Groups,
    Ids,
    Capabilities,
    Seccomp,
    Exec,
}

impl Step {
    const ALL: [Step; 16] = [
        Step::Forked,
        Step::Session,
        Step::PidNamespace,
        Step::Stdio,
        Step::OomScoreAdj,
        Step::Cgroup,
        Step::Namespace,
        Step::Rlimit,
        Step::NoNewPrivs,
        Step::AppArmor,
        Step::Chdir,
        Step::Groups,
        Step::Ids,
        Step::Capabilities,
        Step::Seccomp,
        Step::Exec,
    ];

    fn what(self) -> &'static str {
        match self {
            Step::Forked => "fork in the container's namespaces",
            Step::Session => "start a session",
            Step::PidNamespace => "create its pid namespace",
            Step::Stdio => "set up stdio",
            Step::OomScoreAdj => "set oom_score_adj",
            Step::Cgroup => "join the container's cgroup",
            Step::Namespace => "join the container's namespaces",
            Step::Rlimit => "set rlimits",
            Step::NoNewPrivs => "set no_new_privs",
            Step::AppArmor => "apply the AppArmor profile",
            Step::Chdir => "change to the working directory",
            Step::Groups => "set supplementary groups",
            Step::Ids => "set uid and gid",
            Step::Capabilities => "set capabilities",
            Step::Seccomp => "load the seccomp filter",
            Step::Exec => "execve",
        }
    }
}

fn mask(caps: &Option<Capabilities>) -> u64 {
    caps.iter().flatten().fold(0, |m, c| m | 1u64 << c.to_cap().index())
}

/// rlim_t has 32 bits on 32-bit glibc (armv7): a larger limit means unlimited there, as it
/// does to a 32-bit kernel (whose own rlimits are that wide).
fn rlim(limit: u64) -> libc::rlim_t {
    libc::rlim_t::try_from(limit).unwrap_or(libc::RLIM_INFINITY)
}

/// `NUL`-free C string; a NUL cannot reach execve anyway, so the value is cut there.
fn c_string(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

impl ExecTemplate {
    /// From the container's final spec and its running init, with the spec's seccomp profile
    /// compiled. The error says why processes cannot be started in this container.
    pub fn new(
        container: &str,
        spec: &Spec,
        init_pid: i32,
        cgroup: &Path,
        seccomp: Option<Filter>,
    ) -> std::result::Result<Self, &'static str> {
        use LinuxNamespaceType as T;
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        let types: Vec<T> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
            .map(|ns| ns.typ())
            .collect();
        if types.contains(&T::Time) {
            return Err("time namespaces are not supported");
        }
        // User first (it grants the rights for the rest), mount last (paths below are host
        // paths until then), pid by the parent.
        let order = [
            (T::User, "user", libc::CLONE_NEWUSER),
            (T::Ipc, "ipc", libc::CLONE_NEWIPC),
            (T::Uts, "uts", libc::CLONE_NEWUTS),
            (T::Network, "net", libc::CLONE_NEWNET),
            (T::Cgroup, "cgroup", libc::CLONE_NEWCGROUP),
            (T::Mount, "mnt", libc::CLONE_NEWNS),
        ];
        let namespaces =
            order.iter().filter(|(t, ..)| types.contains(t)).map(|&(_, n, f)| (n, f)).collect();
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .map(|d| if d.is_empty() { ".".to_string() } else { d.to_string() })
            .collect();
        let user = process.user();
        let caps = process.capabilities().as_ref().map(|c| CapSets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        });
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.typ() as u32,
                    libc::rlimit { rlim_cur: rlim(r.soft()), rlim_max: rlim(r.hard()) },
                )
            })
            .collect();
        Ok(Self {
            container: container.to_string(),
            init_pid,
            namespaces,
            pid_namespace: types.contains(&T::Pid),
            cgroup_procs: cgroups::procs_files_of(cgroup, init_pid)
                .iter()
                .map(|p| c_string(&p.to_string_lossy()))
                .collect(),
            env: env.iter().map(|e| c_string(e)).collect(),
            path,
            cwd: c_string(&process.cwd().to_string_lossy()),
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            caps,
            no_new_privs: process.no_new_privileges() == Some(true),
            rlimits,
            oom_score_adj: process.oom_score_adj().map(|a| c_string(&a.to_string())),
            umask: user.umask(),
            apparmor: process.apparmor_profile().clone().filter(|p| !p.is_empty()),
            seccomp,
        })
    }

    /// Starts `argv` in the container with the given stdio (stdin `None`: the supervisor's
    /// /dev/null); returns its pid once it has executed the command, or why it could not.
    pub fn spawn(
        &self,
        argv: &[String],
        stdin: Option<RawFd>,
        stdout: RawFd,
        stderr: RawFd,
        isolation: Isolation,
    ) -> Result<i32> {
        let container = &self.container;
        if argv.is_empty() {
            return Err(SupervisorError::EmptyCommand { container: container.clone() });
        }
        let sys = |what| move |source| SupervisorError::Sys { what, source };
        let ns_file = |name: &str| {
            let path = format!("/proc/{}/ns/{name}", self.init_pid);
            std::fs::File::open(&path).map(OwnedFd::from).map_err(|e| SupervisorError::Io {
                what: "open",
                path: path.into(),
                source: e,
            })
        };
        let namespaces: Vec<(OwnedFd, libc::c_int)> = self
            .namespaces
            .iter()
            .map(|&(name, flag)| Ok((ns_file(name)?, flag)))
            .collect::<Result<_>>()?;
        let pid_ns = if self.pid_namespace { Some(ns_file("pid")?) } else { None };
        let args: Vec<CString> = argv.iter().map(|a| c_string(a)).collect();
        let candidates: Vec<CString> = if argv[0].contains('/') {
            vec![args[0].clone()]
        } else {
            self.path.iter().map(|d| c_string(&format!("{d}/{}", argv[0]))).collect()
        };
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        // A socket, not a pipe: with SO_PASSCRED each message carries the sender's pid as the
        // supervisor sees it, whatever pid namespace the sender is in.
        use nix::sys::socket::{
            setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType,
        };
        let (err_read, err_write) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(sys("socketpair"))?;
        setsockopt(&err_read, sockopt::PassCred, &true).map_err(sys("setsockopt SO_PASSCRED"))?;
        // The only descriptors the children keep past stdio, ascending.
        let mut keep: Vec<RawFd> = namespaces.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        keep.extend(pid_ns.as_ref().map(AsRawFd::as_raw_fd));
        keep.push(err_write.as_raw_fd());
        keep.sort_unstable();
        let child = Child {
            template: self,
            stdio: [stdin, Some(stdout), Some(stderr)],
            namespaces: &namespaces,
            pid_ns: pid_ns.as_ref().map(AsRawFd::as_raw_fd),
            candidates: &candidates,
            argv: &arg_ptrs,
            envp: &env_ptrs,
            report: err_write.as_raw_fd(),
            keep: &keep,
            isolation,
        };

        // SAFETY: the supervisor is single-threaded, so the child may run any code; it only
        // makes syscalls on data prepared above and ends in _exit (its child in execve).
        let joiner = unsafe { libc::fork() };
        if joiner == 0 {
            child.join();
        }
        if joiner < 0 {
            return Err(sys("fork")(nix::errno::Errno::last()));
        }
        drop(err_write);
        // The socket closes once the first child has exited and the process has executed
        // (close-on-exec) or exited: a few syscalls away. Each process announces itself; a
        // failure is reported after.
        let (announced, report) = read_reports(&err_read);
        // SAFETY: our own children, which have exited or are exiting; reaped here, not by the
        // loop: the first child, and with a pid namespace of its own the process that made it.
        unsafe { libc::waitpid(joiner, std::ptr::null_mut(), 0) };
        let (transient, process) = match announced.split_last() {
            Some((process, transient)) => (transient, Some(*process)),
            None => (&announced[..], None),
        };
        for pid in transient {
            // SAFETY: as above; it exits right after its clone.
            unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
        }
        let report = match (report, process) {
            (None, Some(process)) => return Ok(process),
            (Some(report), _) => report,
            // Gone without a word (killed before it could announce itself).
            (None, None) => [Step::Forked as u8, 0, 0, 0, 0],
        };
        if let Some(pid) = process {
            // SAFETY: our own child, which is exiting; reaped here so the loop never sees it.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        let step = Step::ALL.iter().copied().find(|s| *s as u8 == report[0]);
        let errno = nix::errno::Errno::from_raw(i32::from_le_bytes([
            report[1], report[2], report[3], report[4],
        ]));
        Err(match step {
            Some(Step::Exec) if errno == nix::errno::Errno::ENOENT && !argv[0].contains('/') => {
                SupervisorError::NotFound { container: container.clone(), command: argv[0].clone() }
            }
            step => SupervisorError::ExecSetup {
                container: container.clone(),
                step: step.map_or("set up", Step::what),
                source: errno,
            },
        })
    }
}

/// Reads the spawned processes' messages until the socket closes: the pids of those that
/// announced themselves (from the credentials of their one-byte announcements), in order, and
/// the 5-byte failure report, if any.
fn read_reports(socket: &OwnedFd) -> (Vec<i32>, Option<[u8; 5]>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    let (mut announced, mut report) = (Vec::new(), None);
    loop {
        let mut buf = [0u8; 8];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let (len, pid) =
            match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
                Ok(msg) => {
                    let pid = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                        _ => None,
                    });
                    (msg.bytes, pid)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
        match len {
            0 => break,
            1 => announced.extend(pid.filter(|p| *p > 0)),
            5 => report = Some([buf[0], buf[1], buf[2], buf[3], buf[4]]),
            _ => {}
        }
    }
    (announced, report)
}

/// What the forked child needs, prepared by the parent so the child only makes syscalls.
struct Child<'a> {
    template: &'a ExecTemplate,
    stdio: [Option<RawFd>; 3],
    namespaces: &'a [(OwnedFd, libc::c_int)],
    /// The container's pid namespace, for the process only (`None`: it shares the host's).
    pid_ns: Option<RawFd>,
    candidates: &'a [CString],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    report: RawFd,
    /// Descriptors (>= 3, ascending) the child needs until execve; it closes all others.
    keep: &'a [RawFd],
    isolation: Isolation,
}

/// -1 → the step failed with errno.
fn check(r: libc::c_int, step: Step) -> std::result::Result<(), Step> {
    if r < 0 {
        Err(step)
    } else {
        Ok(())
    }
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
    fn join(&self) -> ! {
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
        super::executor::reset_signals();
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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// libcontainer's order: effective = permitted (what setresuid cleared for a non-root user),
/// shrink the bounding set, then effective/permitted/inheritable, then ambient.
///
/// # Safety
/// Plain syscalls on the calling process.
unsafe fn set_capabilities(caps: &CapSets) -> std::result::Result<(), Step> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    check(
        libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) as libc::c_int,
        Step::Capabilities,
    )?;
    for d in &mut data {
        d.effective = d.permitted;
    }
    check(
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int,
        Step::Capabilities,
    )?;
    for cap in 0..64 {
        if caps.bounding & (1u64 << cap) == 0 {
            // EINVAL: a capability this kernel does not have, nothing to drop.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && nix::errno::Errno::last() != nix::errno::Errno::EINVAL
            {
                return Err(Step::Capabilities);
            }
        }
    }
    let split = |m: u64| [m as u32, (m >> 32) as u32];
    let (e, p, i) = (split(caps.effective), split(caps.permitted), split(caps.inheritable));
    let data = [
        CapData { effective: e[0], permitted: p[0], inheritable: i[0] },
        CapData { effective: e[1], permitted: p[1], inheritable: i[1] },
    ];
    check(
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int,
        Step::Capabilities,
    )?;
    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for cap in 0..64 {
        if caps.ambient & (1u64 << cap) != 0 {
            // Like libcontainer (and runc): an ambient capability that cannot be raised is
            // skipped, the rest still apply.
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{Capability, LinuxCapabilities, Process};

    #[test]
    fn capability_masks_use_kernel_numbers() {
        let set = |caps: &[Capability]| Some(caps.iter().copied().collect::<Capabilities>());
        // CAP_CHOWN 0, CAP_KILL 5, CAP_NET_BIND_SERVICE 10, CAP_SYS_ADMIN 21, CAP_BPF 39.
        let caps = set(&[
            Capability::Chown,
            Capability::Kill,
            Capability::NetBindService,
            Capability::Bpf,
        ]);
        assert_eq!(mask(&caps), 1 | 1 << 5 | 1 << 10 | 1 << 39);
        assert_eq!(mask(&set(&[Capability::SysAdmin])), 1 << 21);
        assert_eq!(mask(&None), 0);
    }

    #[test]
    fn rlimits_fit_the_targets_rlim_t() {
        assert_eq!(rlim(1024), 1024);
        assert_eq!(rlim(u64::MAX), libc::RLIM_INFINITY);
        // Too wide for a 32-bit rlim_t: unlimited there, kept where rlim_t has 64 bits.
        let big = 1u64 << 33;
        let want =
            if size_of::<libc::rlim_t>() == 8 { big as libc::rlim_t } else { libc::RLIM_INFINITY };
        assert_eq!(rlim(big), want);
    }

    #[test]
    fn template_takes_the_containers_process() {
        let mut spec = Spec::default();
        let mut process = Process::default();
        process.set_env(Some(vec!["A=1".into(), "PATH=/bin:/usr/bin".into()]));
        process.set_cwd("/work".into());
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some([Capability::Kill].into()));
        caps.set_effective(Some([Capability::Kill].into()));
        caps.set_permitted(Some([Capability::Kill].into()));
        caps.set_inheritable(Some(Default::default()));
        caps.set_ambient(Some(Default::default()));
        process.set_capabilities(Some(caps));
        process.set_no_new_privileges(Some(true));
        process.set_oom_score_adj(Some(1000));
        let mut user = process.user().clone();
        user.set_uid(1000);
        user.set_gid(3000);
        user.set_additional_gids(Some(vec![3000, 4000]));
        process.set_user(user);
        spec.set_process(Some(process));
        let ns = |typ| {
            let mut ns = libcontainer::oci_spec::runtime::LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        };
        let types =
            [LinuxNamespaceType::Mount, LinuxNamespaceType::Pid, LinuxNamespaceType::Network];
        let linux = spec.linux_mut().as_mut().expect("linux");
        linux.set_namespaces(Some(types.into_iter().map(ns).collect()));
        let t = ExecTemplate::new("app#0", &spec, 1, Path::new("/nonexistent"), None)
            .expect("template");
        assert_eq!(t.path, vec!["/bin".to_string(), "/usr/bin".to_string()]);
        assert_eq!(t.env, vec![c_string("A=1"), c_string("PATH=/bin:/usr/bin")]);
        assert_eq!(t.cwd, c_string("/work"));
        assert_eq!((t.uid, t.gid, t.groups.clone()), (1000, 3000, vec![3000, 4000]));
        let kill = 1 << 5;
        assert_eq!(
            t.caps,
            Some(CapSets {
                bounding: kill,
                effective: kill,
                permitted: kill,
                inheritable: 0,
                ambient: 0
            })
        );
        assert!(t.no_new_privs);
        assert_eq!(t.oom_score_adj, Some(c_string("1000")));
        // The spec's namespaces, mount last; pid is entered by the parent.
        let names: Vec<&str> = t.namespaces.iter().map(|(n, _)| *n).collect();
        assert_eq!((names, t.pid_namespace), (vec!["net", "mnt"], true));
        assert!(t.cgroup_procs.is_empty(), "pid 1 is in no cgroup below /nonexistent");
    }
}
