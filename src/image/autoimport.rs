//! Air-gap import: tarballs dropped into `<store>/import/` are imported at agent start and
//! whenever one is written there, like k3s' `agent/images`. Each file is tried once per
//! version (name, size, mtime) — `imported.json` remembers successes and failures alike, so
//! a broken tarball is reported once, and tried again only after it is replaced.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use super::fsutil;
use super::refs;
use super::store::ImageStore;

/// File names taken from the import directory; anything else (partial downloads, dotfiles)
/// is left alone.
const SUFFIXES: [&str; 5] = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// The result of importing one dropped file.
#[derive(Debug)]
pub struct ImportOutcome {
    pub file: PathBuf,
    pub result: Result<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    files: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    size: u64,
    mtime_ns: i64,
    /// References imported, or the error that stopped it.
    outcome: std::result::Result<Vec<String>, String>,
}

/// Imports every new or changed tarball in the import directory; returns what it tried.
/// One failing file does not stop the others.
pub fn scan(store: &ImageStore) -> Result<Vec<ImportOutcome>> {
    let dir = store.import_dir();
    // Not the store lock: `import` takes that one for each file.
    let _lock = refs::lock(&store.root().join("import.lock"))?;
    let record_path = store.root().join("imported.json");
    let mut record: Record = match std::fs::read(&record_path) {
        Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
            log::warn!("{}: unreadable ({e}), importing everything again", record_path.display());
            Record::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
        Err(e) => return Err(ImageError::io(record_path, e)),
    };
    let mut names: Vec<(String, PathBuf, std::fs::Metadata)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| ImageError::io(&dir, e))? {
        let entry = entry.map_err(|e| ImageError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::metadata(entry.path()) else { continue };
        if meta.is_file() && !name.starts_with('.') && SUFFIXES.iter().any(|s| name.ends_with(s)) {
            names.push((name, entry.path(), meta));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut outcomes = Vec::new();
    for (name, path, meta) in names {
        let (size, mtime_ns) = (meta.size(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
        if record.files.get(&name).is_some_and(|s| s.size == size && s.mtime_ns == mtime_ns) {
            continue;
        }
        let result = store.import(&path);
        match &result {
            Ok(refs) => log::info!("auto-import {}: {}", path.display(), refs.join(", ")),
            Err(e) => log::error!("auto-import {} failed: {e}", path.display()),
        }
        let outcome = result.as_ref().map(Clone::clone).map_err(ToString::to_string);
        record.files.insert(name, Seen { size, mtime_ns, outcome });
        let data = serde_json::to_vec_pretty(&record).map_err(|source| ImageError::Json {
            file: record_path.clone(),
            what: "import record".into(),
            source,
        })?;
        fsutil::write_atomic(&record_path, &data)?;
        outcomes.push(ImportOutcome { file: path, result });
    }
    Ok(outcomes)
}

/// Watches the import directory; dropping the watcher stops it.
pub struct ImportWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl ImportWatcher {
    /// Scans once now, then again whenever a file is finished in the directory (written and
    /// closed, or moved in). `report` is called for each file tried, on the watcher thread.
    /// Without a watch (inotify's limits exhausted) the files there now are still imported.
    pub fn start(
        store: Arc<ImageStore>,
        report: impl Fn(ImportOutcome) + Send + Sync + 'static,
    ) -> Result<ImportWatcher> {
        let dir = store.import_dir();
        let report = Arc::new(report);
        let (watch_store, watch_report) = (Arc::clone(&store), Arc::clone(&report));
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Not Create: `cp` creates the file empty and closes it only when done.
            let finished = matches!(
                event.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                    | EventKind::Modify(ModifyKind::Name(_))
            );
            if finished {
                rescan(&watch_store, &*watch_report);
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        // After the watch is set up, so a file dropped in between is not missed.
        rescan(&store, &*report);
        let watcher = watcher.map_err(|source| ImageError::Watch { path: dir.clone(), source })?;
        Ok(ImportWatcher { _watcher: watcher })
    }
}

fn rescan(store: &ImageStore, report: &dyn Fn(ImportOutcome)) {
    match scan(store) {
        Ok(outcomes) => outcomes.into_iter().for_each(report),
        Err(e) => log::error!("auto-import scan of {} failed: {e}", store.import_dir().display()),
    }
}
