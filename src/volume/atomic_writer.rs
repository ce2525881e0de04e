//! The kubelet's AtomicWriter: a volume's files live in a timestamped directory
//! (`..2026_11_25_12_00_00.123456789`), `..data` links to it, and each top-level name links
//! through `..data`. An update writes a new directory and swaps `..data` with one rename, so a
//! reader sees the old set or the new set, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume.
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for FileProjection {
    // Secret bytes must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileProjection {{ {} bytes, mode {:o} }}", self.data.len(), self.mode)
    }
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a payload cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A key maps to an absolute path, `..`, or a name starting with `..`.
    #[error("invalid path {0:?}: must be relative, without '..' elements and not start with '..'")]
    InvalidPath(String),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io { op, path: path.to_path_buf(), source }
}

fn validate(path: &str) -> Result<(), WriteError> {
    let p = Path::new(path);
    let bad = path.is_empty()
        || path.len() > 4096
        || p.is_absolute()
        || path.starts_with("..")
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
        || p.components().any(|c| c.as_os_str().len() > 255);
    if bad {
        return Err(WriteError::InvalidPath(path.to_string()));
    }
    Ok(())
}

fn is_ts_dir_name(p: &Path) -> bool {
    let mut parts = p.components();
    matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(n)), None)
        if n.to_string_lossy().starts_with("..") && n != DATA_DIR && n != DATA_DIR_TMP)
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Writes `payload` into `target` (an existing directory). Returns whether anything changed:
/// an identical payload leaves the directory untouched.
pub fn write(target: &Path, payload: &Payload, now: SystemTime) -> Result<bool, WriteError> {
    for path in payload.keys() {
        validate(path)?;
    }
    let data_link = target.join(DATA_DIR);
    let old_ts = match std::fs::read_link(&data_link) {
        // Only a timestamped sibling, as written below: anything else (an absolute or
        // climbing link) would turn the removal of the old data into a host path's.
        Ok(p) if is_ts_dir_name(&p) => Some(p),
        Ok(p) => {
            let source = io::Error::other(format!("{DATA_DIR} points to {p:?}, not a data dir"));
            return Err(io_err("readlink", &data_link)(source));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("readlink", &data_link)(e)),
    };
    let changed = match &old_ts {
        None => true,
        Some(old) => !same_content(&target.join(old), payload)?,
    };
    if changed {
        let ts_dir = new_ts_dir(target, now)?;
        for (rel, file) in payload {
            let path = ts_dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
            }
            std::fs::write(&path, &file.data).map_err(io_err("write", &path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode & 0o7777))
                .map_err(io_err("chmod", &path))?;
        }
        let tmp = target.join(DATA_DIR_TMP);
        let _ = std::fs::remove_file(&tmp); // a leftover of an interrupted swap
        let ts_name = ts_dir.file_name().map(PathBuf::from).unwrap_or_default();
        symlink(&ts_name, &tmp).map_err(io_err("symlink", &tmp))?;
        std::fs::rename(&tmp, &data_link).map_err(io_err("rename", &tmp))?;
    }
    let wanted: BTreeSet<&str> = payload.keys().map(|k| top_level(k)).collect();
    for name in &wanted {
        let link = target.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link).map_err(io_err("symlink", &link))?;
        }
    }
    for entry in std::fs::read_dir(target).map_err(io_err("readdir", target))? {
        let entry = entry.map_err(io_err("readdir", target))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(name.as_str()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    if changed {
        if let Some(old) = old_ts {
            let old = target.join(old);
            std::fs::remove_dir_all(&old).map_err(io_err("remove", &old))?;
        }
    }
    Ok(changed)
}

/// Whether `dir` holds exactly `payload` (same files, bytes and modes).
fn same_content(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    let mut found = BTreeMap::new();
    if let Err(e) = collect(dir, dir, &mut found) {
        return match e {
            WriteError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => Ok(false),
            e => Err(e),
        };
    }
    if found.len() != payload.len() {
        return Ok(false);
    }
    for (rel, file) in payload {
        let Some(mode) = found.get(rel) else { return Ok(false) };
        if *mode != file.mode & 0o7777 {
            return Ok(false);
        }
        let path = dir.join(rel);
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        if bytes != file.data {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) -> Result<(), WriteError> {
    for entry in std::fs::read_dir(dir).map_err(io_err("readdir", dir))? {
        let entry = entry.map_err(io_err("readdir", dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        if meta.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.insert(rel, meta.permissions().mode() & 0o7777);
        }
    }
    Ok(())
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` (UTC), mode 0755, unique in `target`.
fn new_ts_dir(target: &Path, now: SystemTime) -> Result<PathBuf, WriteError> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(since.as_secs());
    let mut nanos = since.subsec_nanos();
    loop {
        let dir = target.join(format!("..{y:04}_{mo:02}_{d:02}_{h:02}_{mi:02}_{s:02}.{nanos:09}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => nanos = nanos.wrapping_add(1),
            Err(e) => return Err(io_err("mkdir", &dir)(e)),
        }
    }
}

/// Seconds since the epoch → UTC (year, month, day, hour, minute, second).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::runtime::civil_from_days(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}
