//! Code that runs inside the container process after libcontainer set it up.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::memory::{discard_for_pause, Regions};

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

/// App containers and execs: `execvp` of `process.args`, with signals reset first.
#[derive(Clone)]
pub struct AppExecutor;

impl Executor for AppExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
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
