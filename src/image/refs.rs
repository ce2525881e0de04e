//! The reference index (`refs.json`: reference → manifest digest) and the store lock.
//!
//! Writers (import, remove, gc) hold an exclusive `flock` on `lock` and replace `refs.json`
//! by rename; readers never lock: they re-read the file only when its inode changed, so an
//! `outpost image import` run beside the agent is seen by the agent's next `resolve`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use super::fsutil;

/// Keys are normalized `repository:tag`, or a bare manifest digest for images imported
/// without a name (so that they survive gc until removed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefIndex {
    pub refs: BTreeMap<String, String>,
}

impl RefIndex {
    pub fn is_referenced(&self, digest: &str) -> bool {
        self.refs.values().any(|d| d == digest)
    }
}

pub struct Refs {
    path: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<RefIndex>)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

/// Held while the store is being changed; released on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

pub fn lock(path: &Path) -> Result<StoreLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::io(path, e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, source)| ImageError::Lock { path: path.to_path_buf(), source })?;
    Ok(StoreLock { _lock: lock })
}

impl Refs {
    pub fn new(root: &Path) -> Refs {
        Refs { path: root.join("refs.json"), cache: Mutex::new(None) }
    }

    /// The current index; a `stat` when nothing changed.
    pub fn load(&self) -> Result<Arc<RefIndex>> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Stamp {
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => return Err(ImageError::io(&self.path, e)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, index)) = cache.as_ref() {
            if *s == stamp {
                return Ok(Arc::clone(index));
            }
        }
        let data = std::fs::read(&self.path).map_err(|e| ImageError::io(&self.path, e))?;
        let index: RefIndex = serde_json::from_slice(&data).map_err(|source| ImageError::Json {
            file: self.path.clone(),
            what: "reference index".into(),
            source,
        })?;
        let index = Arc::new(index);
        *cache = Some((stamp, Arc::clone(&index)));
        Ok(index)
    }

    /// Read-modify-write under the store lock.
    pub fn update<T>(&self, _lock: &StoreLock, f: impl FnOnce(&mut RefIndex) -> T) -> Result<T> {
        let mut index = (*self.load()?).clone();
        let out = f(&mut index);
        let data = serde_json::to_vec_pretty(&index).map_err(|source| ImageError::Json {
            file: self.path.clone(),
            what: "reference index".into(),
            source,
        })?;
        fsutil::write_atomic(&self.path, &data)?;
        Ok(out)
    }
}
