//! The default profile as the kernel enforces it, compiled to the [`Filter`] every process of
//! a container loads (its init, right before execve, and exec'd processes).
//! Each check runs in a forked child (a filter cannot be removed). One test: this binary stays
//! single-threaded apart from the harness, so forking is safe.

use std::collections::HashSet;

use libcontainer::oci_spec::runtime::{Capability, LinuxSeccomp};
use outpost::runtime::spec::seccomp::{default_profile, Cpu, Filter};

/// Exit codes of [`probe`]: what the child found.
const OK: i32 = 0;
const LOAD_FAILED: i32 = 10;
const FORK_FAILED: i32 = 11;
const CLONE_NEWUSER_ALLOWED: i32 = 12;
const UNSHARE_ALLOWED: i32 = 13;
const VSOCK_ALLOWED: i32 = 14;
const WRONG_ERRNO: i32 = 15;

/// In a child: no_new_privs, `load`, then a plain fork must work while clone with a namespace
/// flag, unshare(CLONE_NEWUSER) and an AF_VSOCK socket fail with EPERM.
fn probe(load: impl FnOnce() -> bool) -> i32 {
    // SAFETY: fork in a test binary whose other thread (the harness) only waits; the child
    // makes syscalls and _exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if !load() {
                libc::_exit(LOAD_FAILED);
            }
            let eperm = || *libc::__errno_location() == libc::EPERM;
            let clone = |flags: libc::c_int| {
                let r = libc::syscall(
                    libc::SYS_clone,
                    (flags | libc::SIGCHLD) as libc::c_long,
                    0,
                    0,
                    0,
                    0,
                );
                if r == 0 {
                    libc::_exit(0);
                }
                if r > 0 {
                    libc::waitpid(r as i32, std::ptr::null_mut(), 0);
                }
                r
            };
            if clone(0) < 0 {
                libc::_exit(FORK_FAILED);
            }
            if clone(libc::CLONE_NEWUSER) > 0 {
                libc::_exit(CLONE_NEWUSER_ALLOWED);
            }
            if !eperm() {
                libc::_exit(WRONG_ERRNO);
            }
            if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                libc::_exit(UNSHARE_ALLOWED);
            }
            if !eperm() {
                libc::_exit(WRONG_ERRNO);
            }
            if libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) >= 0 {
                libc::_exit(VSOCK_ALLOWED);
            }
            libc::_exit(if eperm() { OK } else { WRONG_ERRNO });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

fn profile() -> LinuxSeccomp {
    let caps: HashSet<Capability> = [Capability::Chown, Capability::Kill].into();
    default_profile(&caps, Cpu::native(), outpost::runtime::spec::seccomp::kernel_version())
}

#[test]
fn the_default_profile_filters_namespaces() {
    let _guard = crate::support::shared();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (clone with CLONE_NEWUSER as control)"
    );
    // Control: without a filter, root may create a user namespace.
    assert_eq!(probe(|| true), CLONE_NEWUSER_ALLOWED);

    let filter = Filter::compile(&profile()).expect("compile");
    // SAFETY: one syscall in the child.
    assert_eq!(probe(|| unsafe { filter.load() } == 0), OK, "the precompiled filter");
}
