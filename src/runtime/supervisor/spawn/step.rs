//! Where a spawn failed in the child, as the report pipe carries it.

/// Where a spawn failed in the child: reported to the parent as one byte plus errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
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
    pub(super) const ALL: [Step; 16] = [
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

    pub(super) fn what(self) -> &'static str {
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

/// -1 → the step failed with errno.
pub(super) fn check(r: libc::c_int, step: Step) -> std::result::Result<(), Step> {
    if r < 0 {
        Err(step)
    } else {
        Ok(())
    }
}
