//! Usage readers for admission and eviction (and anyone else who wants them): /proc/meminfo,
//! a filesystem's statvfs, a cgroup's memory working set (cgroup v1 and v2), a directory
//! tree's disk usage, and where a container instance keeps its writable layer and logs.
//! Cheap, synchronous, never failing loudly: `None` when something cannot be read.

use std::collections::HashSet;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::paths::{pod_log_dir, PodDir};

/// `MemTotal` and `MemAvailable` of a meminfo file, in bytes.
pub fn meminfo(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// The kernel's task limit (`kernel.pid_max`, or `kernel.threads-max` if lower) and the
/// tasks that exist (`sysinfo`), as the kubelet's `pidlimit.Stats` reads them.
pub fn pid_limit(sysctl_dir: &Path) -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(sysctl_dir.join(name)).ok()?.trim().parse().ok()
    };
    let max = read("pid_max")?;
    let limit = read("threads-max").map_or(max, |t| t.min(max));
    let running = nix::sys::sysinfo::sysinfo().ok()?.process_count();
    Some((limit, u64::from(running)))
}

/// A filesystem's size and free space as the kubelet sees it (cadvisor: `f_bavail`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub capacity: u64,
    pub available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_stats(path: &Path) -> Option<FsStats> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = MaybeUninit::<libc::statvfs64>::uninit();
    // statvfs64, not nix's statvfs: on 32-bit glibc (armv7) that one fails with EOVERFLOW
    // once a count passes 32 bits (16 TiB of 4 KiB blocks, or XFS's inode estimate).
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statvfs64(path.as_ptr(), s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs64 succeeded, so it filled the buffer in.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // c_ulong: 32 bits on armv7
    let frsize = s.f_frsize as u64;
    Some(FsStats {
        capacity: s.f_blocks.saturating_mul(frsize),
        available: s.f_bavail.saturating_mul(frsize),
        inodes: s.f_files,
        inodes_free: s.f_favail,
    })
}

/// Bytes allocated on disk and inodes under `path`, like `du -x -s` (the kubelet's volume
/// metrics): hard links once, other filesystems skipped. `None` if `path` is missing.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let root = std::fs::symlink_metadata(path).ok()?;
    let dev = root.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.dev() != dev || !seen.insert(m.ino()) {
            continue;
        }
        bytes += m.blocks() * 512;
        inodes += 1;
        if m.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    Some((bytes, inodes))
}

/// The newest instance of each container of a pod with its writable layer (the overlay
/// upper dir) and its log files: `(name, attempt, upper, logs)`.
pub fn container_instances(
    state_dir: &Path,
    pod_uid: &str,
) -> Vec<(String, u32, PathBuf, Vec<PathBuf>)> {
    let pod = PodDir::new(state_dir.join("pods").join(pod_uid));
    let mut newest: std::collections::BTreeMap<String, u32> = Default::default();
    for e in std::fs::read_dir(pod.containers()).into_iter().flatten().flatten() {
        let key = e.file_name().to_string_lossy().into_owned();
        let Some((name, attempt)) = key.rsplit_once('.') else { continue };
        let Ok(attempt) = attempt.parse::<u32>() else { continue };
        let slot = newest.entry(name.to_string()).or_insert(attempt);
        *slot = (*slot).max(attempt);
    }
    let logs = pod_log_dir(state_dir, pod_uid);
    newest
        .into_iter()
        .map(|(name, attempt)| {
            let upper = pod.containers().join(format!("{name}.{attempt}")).join("upper");
            let prefix = format!("{attempt}.log");
            let files = std::fs::read_dir(logs.join(&name))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect();
            (name, attempt, upper, files)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // the fields are 32 bits wide on armv7
    fn fs_stats_are_statvfs_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = fs_stats(dir.path()).expect("statvfs of a temp dir");
        let s = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        // Totals only: free space moves while the test runs.
        assert_eq!(f.capacity, s.blocks() as u64 * s.fragment_size() as u64);
        assert_eq!(f.inodes, s.files() as u64);
        assert!(f.capacity > 0 && f.available <= f.capacity, "{f:?}");
        assert!(f.inodes_free <= f.inodes, "{f:?}");
        assert_eq!(fs_stats(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_pid_limit_is_the_lower_of_pid_max_and_threads_max() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pid_limit(dir.path()), None);
        std::fs::write(dir.path().join("pid_max"), "4194304\n").unwrap();
        let (limit, running) = pid_limit(dir.path()).unwrap();
        assert_eq!(limit, 4194304);
        assert!(running >= 1, "this test runs");
        std::fs::write(dir.path().join("threads-max"), "1000\n").unwrap();
        assert_eq!(pid_limit(dir.path()).unwrap().0, 1000);
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meminfo");
        std::fs::write(&path, "MemTotal:  2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\n")
            .unwrap();
        assert_eq!(meminfo(&path), Some((2048 * 1024, 1024 * 1024)));
        std::fs::write(&path, "MemTotal:  2048 kB\n").unwrap();
        assert_eq!(meminfo(&path), None);
    }

    #[test]
    fn disk_usage_counts_blocks_and_inodes_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(sub.join("f"), sub.join("g")).unwrap();
        let (bytes, inodes) = disk_usage(dir.path()).unwrap();
        let f = std::fs::metadata(sub.join("f")).unwrap();
        let dirs: u64 = [dir.path(), sub.as_path()]
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().blocks() * 512)
            .sum();
        assert_eq!((bytes, inodes), (f.blocks() * 512 + dirs, 3));
        assert!(f.blocks() * 512 >= 64 * 1024);
        assert_eq!(disk_usage(&dir.path().join("missing")), None);
    }

    #[test]
    fn container_instances_are_the_newest_with_their_logs() {
        let state = tempfile::tempdir().unwrap();
        let containers = state.path().join("pods/u1/containers");
        for d in ["app.0", "app.2", "side.0", "junk"] {
            std::fs::create_dir_all(containers.join(d).join("upper")).unwrap();
        }
        let logs = state.path().join("logs/u1/app");
        std::fs::create_dir_all(&logs).unwrap();
        for f in ["0.log", "2.log", "2.log.1"] {
            std::fs::write(logs.join(f), "x").unwrap();
        }
        let mut found = container_instances(state.path(), "u1");
        for f in &mut found {
            f.3.sort();
        }
        assert_eq!(
            found,
            [
                (
                    "app".into(),
                    2,
                    containers.join("app.2/upper"),
                    vec![logs.join("2.log"), logs.join("2.log.1")]
                ),
                ("side".into(), 0, containers.join("side.0/upper"), vec![]),
            ]
        );
    }
}
