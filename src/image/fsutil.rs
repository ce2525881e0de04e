//! Small file-system helpers shared by the store: atomic writes and temp names.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{ImageError, Result};

/// Prefix of every temporary file or directory in the store; `gc` removes those whose
/// writer process is gone.
pub const TMP_PREFIX: &str = ".tmp-";

/// A fresh temporary name in `dir`, carrying our pid so other processes can tell it is live.
pub fn tmp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
}

/// True if `name` is a temp name whose writer process no longer exists.
pub fn is_stale_tmp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX) else { return false };
    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// Makes a rename or file creation in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ImageError::io(dir, e))
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(dir);
    let result = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::io(path, e));
    }
    fsync_dir(dir)
}

/// Creates a directory and its parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))
}
