//! The container's root filesystem: an overlay of the image layers with a per-instance upper.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::{IoContext, Result, SupervisorError};

/// The mount options must fit in one page.
const MAX_OPTIONS: usize = 4000;

/// Mounts `lower_dirs` (bottom to top) + `upper`/`work` on `target`, creating the directories.
pub fn mount_rootfs(
    container: &str,
    lower_dirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    if lower_dirs.is_empty() {
        return Err(SupervisorError::NoLayers { container: container.to_string() });
    }
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).io("create", dir)?;
    }
    let options = options(lower_dirs, upper, work)?;
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|source| SupervisorError::Overlay { target: target.to_path_buf(), source })
}

/// Overlay wants the top layer first in `lowerdir`.
fn options(lower_dirs: &[PathBuf], upper: &Path, work: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for dir in lower_dirs.iter().rev().map(PathBuf::as_path).chain([upper, work]) {
        let text = dir.to_str().filter(|s| !s.contains([',', ':']));
        match text {
            Some(t) => parts.push(t),
            None => return Err(SupervisorError::LayerPath { path: dir.to_path_buf() }),
        }
    }
    let (upper, work) = (parts[parts.len() - 2], parts[parts.len() - 1]);
    let lower = parts[..parts.len() - 2].join(":");
    let options = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    if options.len() > MAX_OPTIONS {
        return Err(SupervisorError::LayerPath { path: lower_dirs[0].clone() });
    }
    Ok(options)
}

/// Lazily unmounts `target` if it is mounted.
pub fn unmount(target: &Path) {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => log::warn!("unmount {}: {e}", target.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_layer_first() {
        let lower = vec![PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        let o = options(&lower, Path::new("/c/upper"), Path::new("/c/work")).expect("options");
        assert_eq!(o, "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work");
    }

    #[test]
    fn refuses_separators_in_paths() {
        let lower = vec![PathBuf::from("/l/a:b")];
        let err = options(&lower, Path::new("/u"), Path::new("/w")).expect_err("colon");
        assert_eq!(
            err.to_string(),
            "layer path /l/a:b contains ',' or ':' or makes the mount options too long"
        );
    }
}
