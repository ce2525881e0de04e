//! The manifest directory as last read: for each manifest file, what it looked like on disk,
//! its last valid documents and its current errors.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::manifest::{parse_file, Document, ManifestError};

/// Whether a directory entry name is a manifest outpost reads: `*.yaml`, `*.yml` or `*.json`
/// (any letter case), not hidden (`.x.yaml`, `.x.yaml.swp`, emacs' `.#x.yaml`), not an emacs
/// autosave (`#x.yaml#`) nor a backup (`x.yaml~`).
///
/// The extension allowlist also rules out editor and package-manager leftovers: `x.yaml.swp`,
/// `.swx`, `.swo`, `.tmp`, `.part`, `.bak`, `.orig`, `.dpkg-new`, `.dpkg-old`, `.rpmnew`,
/// `.rpmsave`, vim's `4913` probe and any other extension.
pub fn is_manifest_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    let Some((stem, ext)) = name.rsplit_once('.') else { return false };
    !stem.is_empty() && ["yaml", "yml", "json"].iter().any(|e| ext.eq_ignore_ascii_case(e))
}

/// What `stat` says about a file (through symlinks). Any difference means it may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Default)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    /// The documents of the last successful parse; kept while the file is invalid.
    good: Option<Vec<Document>>,
    /// The errors of the current content, if it is invalid.
    errors: Option<Vec<ManifestError>>,
}

/// What reading the directory found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Some file's contribution to the desired state changed.
    pub documents_changed: bool,
    /// Errors of files whose parse result changed.
    pub errors: Vec<ManifestError>,
}

pub(super) struct ManifestDir {
    path: PathBuf,
    files: BTreeMap<OsString, FileState>,
    missing: bool,
}

impl ManifestDir {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), files: BTreeMap::new(), missing: false }
    }

    /// The valid documents of every file, for `DesiredState::build`.
    pub fn documents(&self) -> impl Iterator<Item = &[Document]> {
        self.files.values().filter_map(|f| f.good.as_deref())
    }

    /// Lists the directory: re-reads the files whose fingerprint changed, forgets the ones that
    /// are gone. A missing directory counts as an empty one.
    pub fn rescan(&mut self, out: &mut Scan) {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                if !self.missing {
                    log::warn!(
                        "manifest directory {} is missing: its pods are removed until it is back",
                        self.path.display()
                    );
                    self.missing = true;
                }
                let names: Vec<OsString> = self.files.keys().cloned().collect();
                for name in names {
                    self.remove(&name, out);
                }
                return;
            }
            Err(e) => {
                // Without a listing, removing anything could kill pods by mistake.
                log::warn!("cannot list manifest directory {}: {e}", self.path.display());
                return;
            }
        };
        if self.missing {
            log::info!("manifest directory {} is back", self.path.display());
            self.missing = false;
        }
        let mut names = BTreeSet::new();
        for entry in entries {
            match entry {
                Ok(entry) if is_manifest_name(&entry.file_name()) => {
                    names.insert(entry.file_name());
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("cannot list manifest directory {}: {e}", self.path.display());
                    return;
                }
            }
        }
        let gone: Vec<OsString> =
            self.files.keys().filter(|n| !names.contains(*n)).cloned().collect();
        for name in gone {
            self.remove(&name, out);
        }
        for name in names {
            self.update(&name, false, out);
        }
    }

    /// Re-reads one file an event named, whatever its fingerprint: two writes within one
    /// timestamp tick can leave size and mtime unchanged.
    pub fn refresh(&mut self, name: &OsStr, out: &mut Scan) {
        self.update(name, true, out);
    }

    fn update(&mut self, name: &OsStr, force: bool, out: &mut Scan) {
        let path = self.path.join(name);
        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return self.remove(name, out),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if self.files.contains_key(name) && fs::symlink_metadata(&path).is_ok() {
                    log::warn!(
                        "manifest {} is a dangling symlink: its objects are removed",
                        path.display()
                    );
                }
                return self.remove(name, out);
            }
            Err(e) => {
                let errors = vec![ManifestError::file(&path, format!("cannot read: {e}"))];
                return self.record(name, None, Err(errors), out);
            }
        };
        let fingerprint = Fingerprint::of(&meta);
        if !force && self.files.get(name).is_some_and(|f| f.fingerprint == Some(fingerprint)) {
            return;
        }
        let had_documents =
            self.files.get(name).is_some_and(|f| f.good.as_ref().is_some_and(|d| !d.is_empty()));
        let result = if meta.len() == 0 && had_documents {
            // Truncate-then-write editors pass through an empty file; that must not kill pods.
            Err(vec![ManifestError::file(
                &path,
                "file is empty: its pods keep running; delete the file to remove them",
            )])
        } else {
            parse_file(&path)
        };
        if result.is_err() && fs::symlink_metadata(&path).is_err() {
            return self.remove(name, out); // deleted while being read
        }
        self.record(name, Some(fingerprint), result, out);
    }

    fn record(
        &mut self,
        name: &OsStr,
        fingerprint: Option<Fingerprint>,
        result: Result<Vec<Document>, Vec<ManifestError>>,
        out: &mut Scan,
    ) {
        let path = self.path.join(name);
        let file = self.files.entry(name.to_owned()).or_default();
        file.fingerprint = fingerprint;
        match result {
            Ok(documents) => {
                if file.errors.take().is_some() {
                    log::info!("manifest {} is valid again", path.display());
                }
                if file.good.as_ref() != Some(&documents) {
                    log::debug!("manifest {} read: {} objects", path.display(), documents.len());
                    file.good = Some(documents);
                    out.documents_changed = true;
                }
            }
            Err(errors) => {
                if file.errors.as_ref() != Some(&errors) {
                    out.errors.extend(errors.iter().cloned());
                    file.errors = Some(errors);
                }
            }
        }
    }

    fn remove(&mut self, name: &OsStr, out: &mut Scan) {
        if let Some(file) = self.files.remove(name) {
            log::debug!("manifest {} removed", self.path.join(name).display());
            if file.good.is_some_and(|d| !d.is_empty()) {
                out.documents_changed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        for name in ["web.yaml", "web.yml", "web.json", "WEB.YAML", "a.b.yaml", "#web.yaml.json"] {
            let expected = !name.starts_with('#');
            assert_eq!(is_manifest_name(OsStr::new(name)), expected, "{name}");
        }
        for name in [
            ".web.yaml",
            ".web.yaml.tmp",
            ".web.yaml.swp",
            ".#web.yaml",
            "#web.yaml#",
            "web.yaml~",
            "web.yaml.swp",
            "web.yaml.swx",
            "web.yaml.swo",
            "web.yaml.tmp",
            "web.yaml.part",
            "web.yaml.bak",
            "web.yaml.dpkg-new",
            "web.yaml.dpkg-old",
            "web.yaml.dpkg-dist",
            "web.yaml.rpmnew",
            "web.yaml.rpmsave",
            "web.yaml.ucf-dist",
            "4913",
            "web.txt",
            "yaml",
            ".yaml",
            "web",
            "",
        ] {
            assert!(!is_manifest_name(OsStr::new(name)), "{name}");
        }
    }
}
