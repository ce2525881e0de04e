//! The pod cgroup tree, on cgroup v1 (one hierarchy per controller) and v2 (unified).
//!
//! ```text
//! <cgroup_parent>/<pod_uid>/supervisor          the supervisor itself
//!                          /pause               libcontainer, a shared pid namespace's pause
//!                          /<name>.<attempt>    libcontainer, one per container instance
//! ```
//! libcontainer creates and deletes the leaves of containers; the supervisor creates its own
//! leaf and removes the pod level at shutdown.

use std::path::{Path, PathBuf};

use super::error::{IoContext, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// Mount points of every hierarchy: the v2 root, or each v1 controller plus `name=systemd` and
/// a hybrid host's `unified`.
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        // Skip the comounted aliases (cpu -> cpu,cpuacct) so each hierarchy appears once.
        .filter(|p| p.join("cgroup.procs").exists() && !p.is_symlink())
        .collect();
    found.sort();
    found
}

/// Whether the host has only the unified (v2) hierarchy.
pub fn unified_only() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The container's cgroup paths to remount read-only, parent first: `/sys/fs/cgroup` and each
/// hierarchy the host mounts below it (`mountinfo` is the host's). libcontainer's v1 mount
/// binds each hierarchy rw and its v2 mount ignores the spec's options; its `readonlyPaths`
/// step bind-remounts each of these ro after the mounts (a missing one is skipped).
pub fn readonly_paths(mountinfo: &str) -> Vec<String> {
    let mut paths = vec![ROOT.to_string()];
    for line in mountinfo.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else { continue };
        let fstype = rest.split(' ').next().unwrap_or_default();
        let Some(point) = fields.split(' ').nth(4) else { continue };
        let Some(name) = point.strip_prefix(ROOT).and_then(|n| n.strip_prefix('/')) else {
            continue;
        };
        if matches!(fstype, "cgroup" | "cgroup2") && !name.is_empty() && !name.contains('/') {
            // mountinfo escapes blanks as octal; cgroup names have none, but a name with
            // escapes would not match the container's path anyway.
            paths.push(format!("{ROOT}/{name}"));
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

fn relative(cgroup: &Path) -> &Path {
    cgroup.strip_prefix("/").unwrap_or(cgroup)
}

/// Clears what an earlier incarnation of this pod left in its cgroup tree (UIDs come from
/// content, so a pod recreated after a crash reuses its path): thaws frozen leaves (a kill cut
/// short leaves v1 freezer cgroups FROZEN), kills what still runs there, removes the dirs.
pub fn clear_stale(pod_cgroup: &Path) {
    for h in hierarchies() {
        let pod = h.join(relative(pod_cgroup));
        if !pod.exists() {
            continue;
        }
        log::warn!("cgroup {} left by an earlier run: clearing it", pod.display());
        let mut dirs: Vec<PathBuf> = vec![pod.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            i += 1;
        }
        // Deepest first, so each directory is empty when it is removed.
        for dir in dirs.iter().rev() {
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Moves the calling process to `<pod>/supervisor` in every hierarchy, so a stop of the agent's
/// service (systemd KillMode=control-group) does not take the pod down, and its memory is
/// charged to the pod.
pub fn join_supervisor_leaf(pod_cgroup: &Path) -> Result<()> {
    for h in hierarchies() {
        // A new v1 cpuset cgroup has empty cpus/mems and refuses tasks.
        if h.ends_with("cpuset") {
            continue;
        }
        let dir = h.join(relative(pod_cgroup)).join("supervisor");
        std::fs::create_dir_all(&dir).io("create cgroup", &dir)?;
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, "0").io("join cgroup", &procs)?;
    }
    Ok(())
}

/// Caps the tasks of the whole pod (supervisor, pause, containers, exec'd processes) at `max`
/// with the pids controller, as the kubelet's `--pod-max-pids` does on the pod cgroup. On v2
/// the controller is enabled down to the pod's parent first. A host without the controller
/// gets a warning: the limit is the node's setting, not a manifest's.
pub fn set_pids_max(pod_cgroup: &Path, max: u64) -> Result<()> {
    let root = Path::new(ROOT);
    let rel = relative(pod_cgroup);
    let pod = if unified_only() {
        let enable = |dir: &Path| {
            let control = dir.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == "pids") {
                return Ok(());
            }
            std::fs::write(&control, "+pids").io("enable pids in", &control)
        };
        // Every ancestor of the pod cgroup, the root first.
        let mut dir = root.to_path_buf();
        enable(&dir)?;
        for part in rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            enable(&dir)?;
        }
        root.join(rel)
    } else {
        root.join("pids").join(rel)
    };
    if !pod.exists() {
        log::warn!("no pids cgroup controller at {}: pod tasks are not limited", pod.display());
        return Ok(());
    }
    let file = pod.join("pids.max");
    std::fs::write(&file, max.to_string()).io("write", &file)
}

/// Leaves the pod cgroup and removes its supervisor leaf and the pod level, in every
/// hierarchy. The containers' leaves must be deleted already.
pub fn remove_pod(pod_cgroup: &Path) {
    for h in hierarchies() {
        let _ = std::fs::write(h.join("cgroup.procs"), "0");
        let pod = h.join(relative(pod_cgroup));
        for dir in [pod.join("supervisor"), pod] {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove cgroup {}: {e}", dir.display()),
            }
        }
    }
}

/// How many times the kernel OOM killer fired in `cgroup`: v1 `memory.oom_control`'s
/// `oom_kill`, v2 `memory.events`' `oom_kill`. Read before the cgroup is deleted.
pub fn oom_kills(cgroup: &Path) -> u64 {
    let rel = relative(cgroup);
    let candidates = [
        Path::new(ROOT).join("memory").join(rel).join("memory.oom_control"),
        Path::new(ROOT).join(rel).join("memory.events"),
    ];
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// A v2 host with swap accounting: the pod cgroup has `memory.swap.max` (never on v1, whose
/// root holds no such file). The kubelet checks the same before capping swap.
pub fn swap_max_available(pod_cgroup: &Path) -> bool {
    Path::new(ROOT).join(relative(pod_cgroup)).join(crate::runtime::spec::SWAP_MAX_FILE).exists()
}

/// The `cgroup.procs` files of `cgroup` in every hierarchy where `pid` is a member of it: where a
/// process joins to share the cgroups of the container whose init is `pid`.
pub fn procs_files_of(cgroup: &Path, pid: i32) -> Vec<PathBuf> {
    let rel = relative(cgroup);
    let pid = pid.to_string();
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel).join("cgroup.procs"))
        .filter(|procs| {
            std::fs::read_to_string(procs).is_ok_and(|text| text.lines().any(|l| l.trim() == pid))
        })
        .collect()
}

/// Pids in a cgroup leaf (v2, or v1's devices hierarchy, where libcontainer looks too).
pub fn pids(cgroup: &Path) -> Vec<i32> {
    let rel = relative(cgroup);
    for base in [Path::new(ROOT).to_path_buf(), Path::new(ROOT).join("devices")] {
        if let Ok(text) = std::fs::read_to_string(base.join(rel).join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod readonly_tests {
    use super::readonly_paths;

    #[test]
    fn v1_hierarchies_are_remounted_read_only_after_the_cgroup_root() {
        let mountinfo = "\
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
31 21 0:28 / /sys/fs/cgroup/memory/nested rw shared:16 - cgroup cgroup rw,memory
32 21 0:29 / /sys/fs/bpf rw shared:17 - bpf bpf rw
";
        assert_eq!(
            readonly_paths(mountinfo),
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/unified"
            ]
        );
    }

    #[test]
    fn v2_is_the_cgroup_root_alone() {
        let mountinfo =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(readonly_paths(mountinfo), ["/sys/fs/cgroup"]);
    }
}
