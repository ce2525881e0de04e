//! Code that runs inside the container process after libcontainer set it up.

use std::sync::Arc;

use libcontainer::oci_spec::runtime::{Capabilities, Capability, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::memory::{discard_for_pause, Regions};
use super::spawn::capabilities::{capset, mask};
use crate::runtime::spec::seccomp::Filter;

/// Gives the workload default signal handling. Rust ignores SIGPIPE, glibc ignores its internal
/// signals 32 and 33, and an ignored disposition survives execve; libcontainer resets neither
/// the dispositions nor the mask.
pub(super) fn reset_signals() {
    // SAFETY: rt_sigaction with SIG_DFL and sigprocmask with an empty set only change this
    // process's signal state; we are the only thread (a fresh clone).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // Raw syscall: glibc's wrappers refuse 32 and 33.
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &sa as *const libc::sigaction,
                    0usize,
                    8usize,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// App containers: signals reset, the seccomp filter loaded, then `execvp` of `process.args`.
#[derive(Clone, Default)]
pub struct AppExecutor {
    pub seccomp: Option<LateSeccomp>,
}

/// The container's seccomp filter, compiled once per profile by the supervisor (or inherited
/// from the fork server) and loaded by the executor, right before execve, instead of
/// libcontainer's init compiling the profile again for every container (15-20 ms each).
///
/// Without no_new_privs loading a filter needs CAP_SYS_ADMIN, which libcontainer has dropped
/// by the time the executor runs. So [`LateSeccomp::prepare`] asks libcontainer to leave it in
/// the permitted and effective sets only (never the bounding, inheritable or ambient sets),
/// and the executor drops it right after the load: the process ends with exactly the spec's
/// sets, and even a failed drop could not survive the execve of a root process (its permitted
/// set becomes the bounding set) or a non-root one (no file capabilities kept).
#[derive(Clone)]
pub struct LateSeccomp {
    filter: Arc<Filter>,
    /// (effective, permitted, inheritable) to set after the load, when CAP_SYS_ADMIN was kept.
    restore: Option<(u64, u64, u64)>,
}

impl LateSeccomp {
    /// Takes `linux.seccomp` out of `spec` (the copy given to libcontainer) and adds
    /// CAP_SYS_ADMIN to its permitted and effective sets when the load will need it.
    pub fn prepare(spec: &mut Spec, filter: Arc<Filter>) -> Self {
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        let mut restore = None;
        let process = spec.process_mut().as_mut();
        let no_new_privs = process.as_ref().and_then(|p| p.no_new_privileges()) == Some(true);
        if let Some(process) = process.filter(|_| !no_new_privs) {
            if let Some(caps) = process.capabilities().clone() {
                let has = |set: &Option<Capabilities>| {
                    set.as_ref().is_some_and(|s| s.contains(&Capability::SysAdmin))
                };
                if !(has(caps.effective()) && has(caps.permitted())) {
                    restore = Some((
                        mask(caps.effective()),
                        mask(caps.permitted()),
                        mask(caps.inheritable()),
                    ));
                    let with_admin = |set: &Option<Capabilities>| {
                        let mut set = set.clone().unwrap_or_default();
                        set.insert(Capability::SysAdmin);
                        Some(set)
                    };
                    let mut caps = caps.clone();
                    caps.set_effective(with_admin(caps.effective()));
                    caps.set_permitted(with_admin(caps.permitted()));
                    process.set_capabilities(Some(caps));
                }
            }
        }
        Self { filter, restore }
    }

    /// In the container's init: load the filter, then drop what was kept for it.
    fn load(&self) -> Result<(), ExecutorError> {
        let failed = |what: &str| {
            ExecutorError::Other(format!("{what}: {}", std::io::Error::last_os_error()))
        };
        // SAFETY: one syscall each on this (single-threaded) process.
        unsafe {
            if self.filter.load() != 0 {
                return Err(failed("loading the seccomp filter"));
            }
            if let Some((effective, permitted, inheritable)) = self.restore {
                if capset(effective, permitted, inheritable) != 0 {
                    return Err(failed("dropping CAP_SYS_ADMIN after loading the seccomp filter"));
                }
            }
        }
        Ok(())
    }
}

impl Executor for AppExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        // A `tty: true` container's stdin is its terminal (libcontainer made this process a
        // session leader): make it the controlling terminal, so ^C and resizes reach the
        // foreground job. Elsewhere stdin is a pipe or /dev/null and this is skipped. Before
        // the filter: the profile's business is the workload's calls.
        // SAFETY: isatty and ioctl(TIOCSCTTY) on fd 0 only change this process's session.
        unsafe {
            if libc::isatty(0) == 1 {
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
        }
        if let Some(seccomp) = &self.seccomp {
            seccomp.load()?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The sandbox process: no image and no execve, it stays a clone of the supervisor already
/// inside the pod's namespaces. Like the Kubernetes pause image it exits 0 on SIGTERM or
/// SIGINT and, as init of a shared pid namespace, reaps orphans.
///
/// It stays a copy of the supervisor (not a re-exec of the binary): a fresh image would have
/// its own ~330 KB of relocated `.data.rel.ro` (PIE), which the copy shares with the supervisor.
/// What the copy has of its own (heap, dead stack) it gives back before it waits.
#[derive(Clone)]
pub struct PauseExecutor {
    pub memory: Regions,
}

impl Executor for PauseExecutor {
    fn exec(&self, _spec: &Spec) -> Result<(), ExecutorError> {
        // `self` lives on the heap, which is discarded below: copy now, and opaquely, or the
        // compiler may read the (immutable) original after the discard.
        let memory = std::hint::black_box(self.memory);
        // SAFETY: plain syscalls on this process; it never returns to Rust code that could
        // use the closed fds, and after discard_for_pause it touches no heap memory.
        unsafe {
            // libcontainer only marks fds >= 3 close-on-exec and we never exec: without this the
            // pause would hold the supervisor's socket, log pipes and exec pipes open.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::prctl(libc::PR_SET_NAME, c"pause".as_ptr());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            discard_for_pause(&memory);
            loop {
                let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
                if sig == libc::SIGTERM || sig == libc::SIGINT {
                    libc::_exit(0);
                }
                while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            }
        }
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        Ok(())
    }
}
