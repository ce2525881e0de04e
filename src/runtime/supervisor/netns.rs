//! `lo` up in the pod's new network namespace, from the supervisor's only thread.

use std::fs::File;

use nix::sched::{setns, CloneFlags};

use super::error::{IoContext, Result, SupervisorError};

pub fn loopback_up(pid: i32) -> Result<()> {
    let own_path = "/proc/self/ns/net";
    let own = File::open(own_path).io("open", own_path)?;
    let target_path = format!("/proc/{pid}/ns/net");
    let target = File::open(&target_path).io("open", &target_path)?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|source| SupervisorError::Sys { what: "setns(pod netns)", source })?;
    let result = set_lo_up();
    // Must get back, or every later socket of the supervisor lands in the pod; there is no
    // sane way to continue if the kernel refuses to re-enter a namespace we were just in.
    if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNET) {
        log::error!("setns back to the host network namespace failed: {e}");
        std::process::abort();
    }
    result
}

fn set_lo_up() -> Result<()> {
    crate::network::netns::loopback_up()
        .map_err(|source| SupervisorError::Sys { what: "bring lo up", source })
}
