//! hostPath volumes: the kubelet's type checks (`checkType`), creating what `*OrCreate` asks for.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path};

use super::VolumeError;

/// Checks (or creates) `path` for `hostPath.type` and returns nothing on success.
pub fn check(volume: &str, path: &Path, typ: &str) -> Result<(), VolumeError> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(VolumeError::HostPathBacksteps { volume: volume.into(), path: path.into() });
    }
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    let fail = |what: &'static str| {
        Err(VolumeError::HostPathType { volume: volume.into(), path: path.into(), what })
    };
    match typ {
        "" => Ok(()),
        "DirectoryOrCreate" if ft.is_none() => {
            // Parents too, mode 0755, as `os.MkdirAll(path, 0755)`.
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path).map_err(|source| {
                VolumeError::Io { volume: volume.into(), op: "mkdir", path: path.into(), source }
            })
        }
        "DirectoryOrCreate" | "Directory" => {
            if ft.is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" if ft.is_none() => {
            // `os.OpenFile(path, O_CREATE, 0644)`: the parent must exist.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map(drop)
                .map_err(|source| VolumeError::Io {
                    volume: volume.into(),
                    op: "create",
                    path: path.into(),
                    source,
                })
        }
        "FileOrCreate" | "File" => {
            if ft.is_some_and(|t| t.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if ft.is_some_and(|t| t.is_socket()) {
                Ok(())
            } else {
                fail("a socket file")
            }
        }
        "CharDevice" => {
            if ft.is_some_and(|t| t.is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if ft.is_some_and(|t| t.is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(VolumeError::HostPathInvalidType { volume: volume.into(), typ: other.into() }),
    }
}
