//! Content-addressed blobs: `blobs/sha256/<hex>`, written atomically and verified.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use super::error::{ImageError, Result};
use super::fsutil;

/// Largest JSON document (manifest, index, config) the store will parse.
pub const MAX_JSON: u64 = 16 << 20;

pub struct Blobs {
    dir: PathBuf,
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Reads the rest of the stream (tar padding, trailing blocks) and returns its digest.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("sha256:{:x}", self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The hex part of a `sha256:` digest, if it is one.
pub fn hex_of(digest: &str) -> Option<&str> {
    super::reference::validate_digest(digest).ok().map(|()| &digest[7..])
}

impl Blobs {
    pub fn open(root: &Path) -> Result<Blobs> {
        let dir = root.join("blobs").join("sha256");
        fsutil::create_dir_all(&dir)?;
        Ok(Blobs { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob; None for a digest that is not a valid sha256 (so never a path escape).
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|hex| self.dir.join(hex))
    }

    pub fn exists(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// Stores a stream, returning its digest and size. With `expected`, content that hashes
    /// differently is refused (`what` names it in the error) and nothing is stored.
    pub fn write(
        &self,
        reader: impl Read,
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64)> {
        let mut reader = HashingReader::new(reader);
        if let Some(path) = expected.and_then(|d| self.path(d)).filter(|p| p.is_file()) {
            // Already stored: verify the stream anyway so a corrupt archive is reported.
            let (actual, size) = reader.finish().map_err(|e| ImageError::io(what, e))?;
            check(expected, &actual, what)?;
            log::debug!("blob {actual} already in {}", path.display());
            return Ok((actual, size));
        }
        let tmp = fsutil::tmp_path(&self.dir);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
            }
            file.sync_all()?;
            reader.finish()
        })();
        let result = written
            .map_err(|e| ImageError::io(what, e))
            .and_then(|(actual, size)| check(expected, &actual, what).map(|()| (actual, size)));
        let (actual, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dest = self.dir.join(&actual[7..]);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::io(dest, e));
        }
        fsutil::fsync_dir(&self.dir)?;
        Ok((actual, size))
    }

    /// Stores bytes already in memory.
    pub fn write_bytes(&self, data: &[u8], what: &str) -> Result<String> {
        self.write(data, None, what).map(|(d, _)| d)
    }

    /// Opens a stored blob.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.path(digest).ok_or_else(|| ImageError::Missing {
            file: self.dir.clone(),
            what: format!("blob {digest} (not a sha256 digest)"),
        })?;
        File::open(&path).map_err(|e| ImageError::io(path, e))
    }

    /// Reads, verifies and parses a stored JSON blob.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &str, what: &str) -> Result<T> {
        let path = self.path(digest).unwrap_or_else(|| self.dir.join(digest));
        let mut data = Vec::new();
        self.open_blob(digest)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::io(&path, e))?;
        if data.len() as u64 > MAX_JSON {
            return Err(ImageError::TooLarge { file: path, entry: what.into(), limit: MAX_JSON });
        }
        let actual = format!("sha256:{:x}", Sha256::digest(&data));
        check(Some(digest), &actual, &path.display().to_string())?;
        serde_json::from_slice(&data).map_err(|source| ImageError::Json {
            file: path,
            what: what.to_string(),
            source,
        })
    }
}

fn check(expected: Option<&str>, actual: &str, what: &str) -> Result<()> {
    match expected {
        Some(e) if e != actual => Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}
