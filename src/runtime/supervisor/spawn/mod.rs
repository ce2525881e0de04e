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

pub(super) mod capabilities;
mod child;
mod step;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};

use capabilities::{mask, CapSets};
use child::Child;
use step::Step;

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
    seccomp: Option<Arc<Filter>>,
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
        seccomp: Option<Arc<Filter>>,
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
    /// /dev/null; `tty`: stdin is a terminal, made the process's controlling one); returns its pid once it has executed the command, or why it could not.
    pub fn spawn(
        &self,
        argv: &[String],
        stdin: Option<RawFd>,
        stdout: RawFd,
        stderr: RawFd,
        isolation: Isolation,
        tty: bool,
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
            tty,
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

#[cfg(test)]
mod tests;
