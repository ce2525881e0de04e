//! A profile compiled to a BPF program once, loaded by processes the supervisor starts itself
//! with one syscall: no libseccomp work (and no allocation) between fork and execve.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as Op,
};

/// Why a profile does not compile.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("architecture {0}: {1}")]
    Arch(String, String),
    #[error("action {0:?} is not supported here")]
    Action(Action),
    #[error("rule for {name}: {source}")]
    Rule { name: String, source: libseccomp::error::SeccompError },
    #[error("{what}: {source}")]
    Libseccomp { what: &'static str, source: libseccomp::error::SeccompError },
    #[error("exporting the BPF program: {0}")]
    Export(std::io::Error),
}

/// A compiled filter: `struct sock_filter` instructions and the seccomp(2) flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

fn action(action: Action, errno: Option<u32>) -> Result<ScmpAction, FilterError> {
    // runc's and libcontainer's default errno.
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        Action::ScmpActAllow => ScmpAction::Allow,
        Action::ScmpActErrno => ScmpAction::Errno(errno),
        Action::ScmpActKill | Action::ScmpActKillThread => ScmpAction::KillThread,
        Action::ScmpActKillProcess => ScmpAction::KillProcess,
        Action::ScmpActTrap => ScmpAction::Trap,
        Action::ScmpActLog => ScmpAction::Log,
        Action::ScmpActTrace => ScmpAction::Trace(errno as u16),
        Action::ScmpActNotify => return Err(FilterError::Action(action)),
    })
}

/// OCI's operators; for `SCMP_CMP_MASKED_EQ` `value` is the mask and `valueTwo` the datum.
fn compare(index: usize, op: Op, value: u64, value_two: Option<u64>) -> ScmpArgCompare {
    let (op, datum) = match op {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, value),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    };
    ScmpArgCompare::new(index as u32, op, datum)
}

impl Filter {
    /// Builds the filter as runc does: unknown syscall names are skipped (this kernel or
    /// libseccomp does not have them), rules with the default action are redundant, several
    /// conditions on one argument become separate rules.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, FilterError> {
        let lib = |what| move |source| FilterError::Libseccomp { what, source };
        let default = action(profile.default_action(), profile.default_errno_ret())?;
        let mut ctx = ScmpFilterContext::new(default).map_err(lib("new filter"))?;
        // no_new_privs is the process spec's business, not the filter's.
        ctx.set_ctl_nnp(false).map_err(lib("no_new_privs attribute"))?;
        for arch in profile.architectures().iter().flatten() {
            let name = serde_json::to_value(arch)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let scmp = ScmpArch::from_str(&name)
                .map_err(|e| FilterError::Arch(name.clone(), e.to_string()))?;
            ctx.add_arch(scmp).map_err(|e| FilterError::Arch(name, e.to_string()))?;
        }
        let mut flags = 0;
        for flag in profile.flags().iter().flatten() {
            flags |= match flag {
                Flag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                Flag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                // One thread per exec'd process; a waiting-killable receive needs a listener.
                Flag::SeccompFilterFlagTsync | Flag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        for rule in profile.syscalls().iter().flatten() {
            let act = action(rule.action(), rule.errno_ret())?;
            if act == default {
                continue;
            }
            let args = rule.args().clone().unwrap_or_default();
            let comparators: Vec<ScmpArgCompare> =
                args.iter().map(|a| compare(a.index(), a.op(), a.value(), a.value_two())).collect();
            let mut seen = HashSet::new();
            let split = !args.iter().all(|a| seen.insert(a.index()));
            for name in rule.names() {
                let Ok(syscall) = ScmpSyscall::from_name(name) else {
                    log::debug!("seccomp: syscall {name} unknown to libseccomp, skipped");
                    continue;
                };
                let rule_err = |source| FilterError::Rule { name: name.clone(), source };
                if comparators.is_empty() {
                    ctx.add_rule(act, syscall).map_err(rule_err)?;
                } else if split {
                    for c in &comparators {
                        ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))
                            .map_err(rule_err)?;
                    }
                } else {
                    ctx.add_rule_conditional(act, syscall, &comparators).map_err(rule_err)?;
                }
            }
        }
        // libseccomp 2.5 exports to a file descriptor only.
        // SAFETY: memfd_create with a valid C string; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"outpost-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(FilterError::Export(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd nothing else owns.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        ctx.export_bpf(&file).map_err(lib("export"))?;
        let mut bytes = Vec::new();
        file.rewind().and_then(|_| file.read_to_end(&mut bytes)).map_err(FilterError::Export)?;
        let program = bytes
            .chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        Ok(Filter { program, flags })
    }

    /// Instructions in the program.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the filter on the calling thread: needs no_new_privs or CAP_SYS_ADMIN.
    /// Returns -1 with errno set on failure.
    ///
    /// # Safety
    /// One syscall; safe between fork and execve.
    pub unsafe fn load(&self) -> libc::c_int {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            self.flags,
            &prog as *const libc::sock_fprog,
        ) as libc::c_int
    }
}
