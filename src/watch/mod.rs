//! The manifest directory watcher: file events in, desired-state [`Update`]s out.
//!
//! [`Watcher::start`] creates the directory if it is missing, reads it, and sends a first
//! [`Update`] (even for an empty directory). A background thread then turns `notify` events
//! into further updates:
//!
//! * **Files.** Only `*.yaml`, `*.yml` and `*.json` directly in the directory are read, like the
//!   kubelet's static pod path (subdirectories are not). Hidden files, editor swap, backup and
//!   temp files and package-manager leftovers are ignored: see [`is_manifest_name`]. Symlinks
//!   are followed to files.
//! * **Debounce.** Events are coalesced until [`WatchOptions::debounce`] passes without one,
//!   and for at most four times that long, so a burst costs one update and a continuous stream
//!   still flushes regularly. Atomic rename-into-place (write `.x.yaml.tmp`, rename to `x.yaml`)
//!   is one change. A batch whose every file is *settled* (its last event was close-after-write,
//!   rename or removal) is flushed at once: the writer is done, and waiting out the quiet period
//!   would only delay the pod (the kubelet's file source re-reads on every event, no debounce).
//! * **Re-parsing.** A file named by an event is re-read; on a full rescan only files whose
//!   inode, size, mtime or ctime changed are.
//! * **Rescan.** Every [`WatchOptions::rescan_every`], and at once after an inotify queue
//!   overflow, a notify error or an event on the directory itself, the whole directory is
//!   listed again. This catches what inotify cannot see (an edited symlink target outside the
//!   directory) and re-establishes the watch when the directory was deleted and recreated.
//! * **No inotify.** When the watch cannot be set up (inotify's per-user limits are exhausted,
//!   `fs.inotify.max_user_instances` or `max_user_watches`), the watcher logs the limit and the
//!   fix once, keeps working on the periodic rescan alone, and retries the watch with back-off
//!   (1 s doubling to 20 s, the kubelet's file source); a watch that comes back rescans at once.
//!
//! Semantics of a file's contribution to the desired state:
//!
//! * a valid file contributes its objects (duplicates across files: the incumbent wins, see
//!   [`DesiredState::build`]);
//! * a file that becomes invalid keeps its **last valid documents**: a typo while editing must
//!   not kill a running pod. Its errors are reported once, in the update where they appear or
//!   change, not again on every rescan. A file emptied to 0 bytes counts as invalid, since
//!   truncate-then-write editors pass through that state;
//! * a file that never parsed contributes nothing;
//! * a deleted file (or a symlink whose target is gone) removes its objects;
//! * a missing directory counts as empty (its pods are removed, as the kubelet does) and is
//!   warned about; it is not recreated after start, so that `rm -rf d && mv new d` works.
//!
//! An [`Update`] is sent only when it has changes (of pods, ConfigMaps or Secrets) or errors,
//! except for the first one.

mod diff;
mod dir;
pub mod url;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::manifest::{DesiredState, Document, ManifestError};

pub use diff::{diff, object_changes, Change, ObjectAction, ObjectChange};
pub use dir::is_manifest_name;
use dir::{ManifestDir, Scan};
pub use url::{SourceStatus, SourceStatuses, UrlOptions, UrlSources};

/// Timing of the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Quiet period that ends a burst of events. A continuous stream is flushed at least every
    /// four times this long.
    pub debounce: Duration,
    /// Interval of the full rescan that reconciles whatever inotify missed.
    pub rescan_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { debounce: Duration::from_millis(10), rescan_every: Duration::from_secs(20) }
    }
}

/// The desired state after some files changed.
#[derive(Clone, Debug)]
pub struct Update {
    /// The whole desired state after this update (for level-triggered consumers).
    pub state: Arc<DesiredState>,
    /// What differs from the previous update (for edge-triggered consumers and logs).
    pub changes: Vec<Change>,
    /// The ConfigMaps and Secrets that differ from the previous update (for logs). An update
    /// with only these still goes out: the API serves them from `state`.
    pub objects: Vec<ObjectChange>,
    /// Errors of the files whose parse result changed in this update, and newly detected
    /// duplicate definitions.
    pub errors: Vec<ManifestError>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create manifest directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("manifest directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot resolve manifest directory {path}: {source}")]
    Resolve { path: PathBuf, source: io::Error },
    #[error("cannot start the watcher thread for {path}: {source}")]
    Thread { path: PathBuf, source: io::Error },
}

enum Msg {
    Event(notify::Result<Event>),
    Rescan,
    Source(url::SourceUpdate),
    Stop,
}

/// Hands a manifest source's documents to the watcher, which merges them with the
/// directory's.
#[derive(Clone)]
pub struct SourceSender(mpsc::Sender<Msg>);

impl SourceSender {
    /// False once the watcher is gone.
    pub fn send(&self, update: url::SourceUpdate) -> bool {
        self.0.send(Msg::Source(update)).is_ok()
    }
}

/// Watches a manifest directory. Dropping it stops and joins its background thread (which owns
/// the `notify` watcher); the update channel then closes.
pub struct Watcher {
    dir: PathBuf,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Creates `dir` if missing, scans it, and sends the initial Update (even when empty)
    /// before returning.
    pub fn start(
        dir: &Path,
        options: WatchOptions,
    ) -> Result<(Watcher, smol::channel::Receiver<Update>), WatchError> {
        Self::start_with_sources(dir, options, Vec::new())
    }

    /// As [`Watcher::start`], with other sources' documents (manifest URLs' cached bodies)
    /// already in the initial update.
    pub fn start_with_sources(
        dir: &Path,
        options: WatchOptions,
        sources: Vec<url::SourceUpdate>,
    ) -> Result<(Watcher, smol::channel::Receiver<Update>), WatchError> {
        let path = std::path::absolute(dir)
            .map_err(|source| WatchError::Resolve { path: dir.to_path_buf(), source })?;
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(WatchError::NotADirectory { path }),
            Err(_) => {
                fs::create_dir_all(&path)
                    .map_err(|source| WatchError::CreateDir { path: path.clone(), source })?;
                log::info!("created manifest directory {}", path.display());
            }
        }
        // A zero interval would rescan in a busy loop.
        let options = WatchOptions {
            rescan_every: options.rescan_every.max(Duration::from_millis(10)),
            ..options
        };
        let (tx, rx) = mpsc::channel();
        let (updates, receiver) = smol::channel::unbounded();
        let mut worker = Worker {
            dir: ManifestDir::new(&path),
            path: path.clone(),
            options,
            notify: None,
            events: tx.clone(),
            failing: None,
            watched: None,
            state: Arc::default(),
            duplicates: Vec::new(),
            sources: BTreeMap::new(),
            rx,
            updates,
        };
        for update in sources {
            worker.apply_source(update, &mut Scan::default());
        }
        // Watch before the first listing, so nothing written in between is missed. Without a
        // watch the agent still runs on the periodic rescan.
        worker.try_watch();
        worker.initial_update();
        let thread = std::thread::Builder::new()
            .name("outpost-watch".into())
            .spawn(move || worker.run())
            .map_err(|source| WatchError::Thread { path: path.clone(), source })?;
        Ok((Watcher { dir: path, tx, thread: Some(thread) }, receiver))
    }

    /// The watched directory, made absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where other sources send their documents.
    pub fn source_sender(&self) -> SourceSender {
        SourceSender(self.tx.clone())
    }

    /// Asks for a full rescan now, as after an inotify overflow (e.g. on SIGHUP).
    pub fn rescan(&self) {
        let _ = self.tx.send(Msg::Rescan);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("manifest watcher thread for {} panicked", self.dir.display());
            }
        }
    }
}

/// Files to re-read, or the whole directory.
#[derive(Default)]
struct Batch {
    names: BTreeSet<OsString>,
    /// Names whose last event says a writer may still be busy (created, written, not closed).
    unsettled: BTreeSet<OsString>,
    full: bool,
    /// Other sources' new documents or errors, in arrival order.
    sources: Vec<url::SourceUpdate>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        !self.full && self.names.is_empty() && self.sources.is_empty()
    }

    /// Only finished writes, renames and removals, or a source's whole new body: nothing to
    /// wait for.
    fn is_settled(&self) -> bool {
        !self.full
            && (!self.names.is_empty() || !self.sources.is_empty())
            && self.unsettled.is_empty()
    }

    fn add(&mut self, name: &OsStr, kind: &EventKind) {
        self.names.insert(name.to_owned());
        if settles(kind) {
            self.unsettled.remove(name);
        } else {
            self.unsettled.insert(name.to_owned());
        }
    }
}

/// Events after which a file's content is final until someone opens it again. Not a rename's
/// "from" half alone: its "to" half (and the pair) follow when the file stays in the
/// directory, and flushing in between would stop and restart a pod that only moved files.
fn settles(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | EventKind::Remove(_)
    )
}

/// Back-off of the watch retries while inotify is unavailable: the kubelet's file source
/// (`retryPeriod`, `maxRetryPeriod` in pkg/kubelet/config/file_linux.go).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(20);

/// The watch could not be set up: why, and when to try again.
struct Failing {
    cause: String,
    delay: Duration,
    retry_at: Instant,
}

struct Worker {
    dir: ManifestDir,
    path: PathBuf,
    options: WatchOptions,
    /// None while no inotify instance could be created.
    notify: Option<RecommendedWatcher>,
    /// For the events of a watcher created later.
    events: mpsc::Sender<Msg>,
    /// Set while the watch cannot be set up.
    failing: Option<Failing>,
    /// Device and inode of the directory the inotify watch is on.
    watched: Option<(u64, u64)>,
    state: Arc<DesiredState>,
    /// Duplicate-definition errors of the last build, so they are reported once.
    duplicates: Vec<ManifestError>,
    /// Other sources' documents in force (manifest URLs), by name.
    sources: BTreeMap<String, Vec<Document>>,
    rx: mpsc::Receiver<Msg>,
    updates: smol::channel::Sender<Update>,
}

impl Worker {
    fn run(mut self) {
        let mut next_rescan = after(self.options.rescan_every);
        loop {
            let mut batch = Batch::default();
            let deadline = match &self.failing {
                Some(f) => next_rescan.min(f.retry_at),
                None => next_rescan,
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.absorb(msg, &mut batch) {
                        return;
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    if !self.debounce(&mut batch) {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.failing.is_some() && self.retry_watch() {
                        // Whatever changed while unwatched.
                        batch.full = true;
                    }
                    if Instant::now() >= next_rescan {
                        batch.full = true;
                    }
                    if !batch.full {
                        continue;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if batch.full {
                next_rescan = after(self.options.rescan_every);
            }
            if !self.process(batch) {
                return; // nobody listens any more
            }
        }
    }

    /// Collects events until `debounce` passes without a relevant one, or 4 × `debounce`
    /// passes in all. False when told to stop.
    fn debounce(&mut self, batch: &mut Batch) -> bool {
        let cap = after(self.options.debounce.saturating_mul(4));
        let mut quiet_until = after(self.options.debounce);
        loop {
            if batch.is_settled() {
                return true;
            }
            let deadline = quiet_until.min(cap);
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(msg) => {
                    let before = (batch.names.len(), batch.full, batch.sources.len());
                    if !self.absorb(msg, batch) {
                        return false;
                    }
                    if (batch.names.len(), batch.full, batch.sources.len()) != before {
                        quiet_until = after(self.options.debounce);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Adds what a message asks for to the batch. False when told to stop.
    fn absorb(&self, msg: Msg, batch: &mut Batch) -> bool {
        match msg {
            Msg::Stop => return false,
            Msg::Rescan => batch.full = true,
            Msg::Source(update) => batch.sources.push(update),
            Msg::Event(Err(e)) => {
                log::warn!("watching manifest directory {}: {e}; rescanning", self.path.display());
                batch.full = true;
            }
            Msg::Event(Ok(ev)) if ev.need_rescan() || matches!(ev.kind, EventKind::Other) => {
                log::warn!(
                    "manifest directory {}: file events were lost (inotify queue overflow?); rescanning",
                    self.path.display()
                );
                batch.full = true;
            }
            // Opening and reading (our own parsing included) changes nothing.
            Msg::Event(Ok(Event { kind: EventKind::Access(kind), .. }))
                if kind != AccessKind::Close(AccessMode::Write) => {}
            Msg::Event(Ok(ev)) => {
                for path in &ev.paths {
                    match (path.parent(), path.file_name()) {
                        (Some(parent), Some(name)) if parent == self.path => {
                            if is_manifest_name(name) {
                                batch.add(name, &ev.kind);
                            }
                        }
                        // The directory itself was deleted, moved or changed.
                        _ => batch.full = true,
                    }
                }
            }
        }
        true
    }

    /// Puts the inotify watch on the directory now at `path`, if it is not already there.
    fn ensure_watch(&mut self) -> notify::Result<()> {
        let id = fs::metadata(&self.path).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()));
        let notify = match &mut self.notify {
            Some(notify) if id == self.watched => return Ok(()),
            Some(notify) => notify,
            None => {
                let events = self.events.clone();
                self.watched = None;
                self.notify.insert(notify::recommended_watcher(move |ev| {
                    let _ = events.send(Msg::Event(ev));
                })?)
            }
        };
        // The old watch may already be gone with its directory.
        let _ = notify.unwatch(&self.path);
        self.watched = None;
        if id.is_some() {
            notify.watch(&self.path, RecursiveMode::NonRecursive)?;
            self.watched = id;
        }
        Ok(())
    }

    /// Sets up the watch if needed. A failure is logged when its cause is new (not on every
    /// retry) and schedules the next retry; a recovery is logged once.
    fn try_watch(&mut self) {
        match self.ensure_watch() {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::info!("watching manifest directory {} again", self.path.display());
                }
            }
            Err(e) => {
                let cause = watch_failure(&e);
                let delay =
                    self.failing.as_ref().map_or(FIRST_RETRY, |f| (f.delay * 2).min(MAX_RETRY));
                if self.failing.as_ref().is_none_or(|f| f.cause != cause) {
                    log::error!(
                        "cannot watch manifest directory {}: {cause}; until then it is re-read every {:?} and the watch retried",
                        self.path.display(),
                        self.options.rescan_every
                    );
                }
                self.failing = Some(Failing { cause, delay, retry_at: after(delay) });
            }
        }
    }

    /// Retries a failed watch if its back-off is over. True when the watch is back.
    fn retry_watch(&mut self) -> bool {
        match &self.failing {
            Some(f) if Instant::now() >= f.retry_at => {
                self.try_watch();
                self.failing.is_none()
            }
            _ => false,
        }
    }

    /// The directory's valid documents, then the other sources'.
    fn documents(&self) -> impl Iterator<Item = &[Document]> {
        self.dir.documents().chain(self.sources.values().map(Vec::as_slice))
    }

    /// Takes a source's new documents and errors.
    fn apply_source(&mut self, update: url::SourceUpdate, scan: &mut Scan) {
        scan.errors.extend(update.errors);
        if let Some(documents) = update.documents {
            if self.sources.get(&update.name) != Some(&documents) {
                self.sources.insert(update.name, documents);
                scan.documents_changed = true;
            }
        }
    }

    fn initial_update(&mut self) {
        let mut scan = Scan::default();
        self.dir.rescan(&mut scan);
        let (state, duplicates) = DesiredState::build(self.documents(), &self.state);
        let mut errors = scan.errors;
        errors.extend(duplicates.iter().cloned());
        self.duplicates = duplicates;
        let changes = diff(&self.state, &state);
        let objects = object_changes(&self.state, &state);
        self.state = Arc::new(state);
        let _ =
            self.updates.try_send(Update { state: self.state.clone(), changes, objects, errors });
    }

    /// Reads what the batch names and sends an update if anything changed. False once the
    /// receiver is gone.
    fn process(&mut self, batch: Batch) -> bool {
        let mut scan = Scan::default();
        if batch.full {
            log::trace!("manifest directory {}: full rescan", self.path.display());
            if self.failing.is_none() {
                self.try_watch();
            } else {
                self.retry_watch();
            }
            self.dir.rescan(&mut scan);
        } else if !batch.names.is_empty() {
            log::trace!("manifest directory {}: re-reading {:?}", self.path.display(), batch.names);
            for name in &batch.names {
                self.dir.refresh(name, &mut scan);
            }
        }
        for update in batch.sources {
            self.apply_source(update, &mut scan);
        }
        let mut errors = scan.errors;
        let (mut changes, mut objects) = (Vec::new(), Vec::new());
        if scan.documents_changed {
            let (state, duplicates) = DesiredState::build(self.documents(), &self.state);
            errors.extend(duplicates.iter().filter(|e| !self.duplicates.contains(e)).cloned());
            self.duplicates = duplicates;
            changes = diff(&self.state, &state);
            objects = object_changes(&self.state, &state);
            self.state = Arc::new(state);
        }
        if changes.is_empty() && objects.is_empty() && errors.is_empty() {
            return !self.updates.is_closed();
        }
        let update = Update { state: self.state.clone(), changes, objects, errors };
        self.updates.try_send(update).is_ok()
    }
}

/// Why a watch failed, with the fix when it is a limit (also for the image auto-import). inotify_init fails with EMFILE both
/// for `fs.inotify.max_user_instances` and the process's descriptor limit: with a descriptor
/// to spare, it is the former. inotify_add_watch's ENOSPC (notify's `MaxFilesWatch`) is
/// `fs.inotify.max_user_watches`.
pub fn watch_failure(e: &notify::Error) -> String {
    let errno = match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(libc::ENOSPC),
        notify::ErrorKind::Io(io) => io.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::ENOSPC) => inotify_limit("max_user_watches", "watches"),
        Some(libc::EMFILE) if fs::File::open("/dev/null").is_ok() => {
            inotify_limit("max_user_instances", "instances")
        }
        Some(libc::EMFILE) => format!(
            "{e}: outpost has as many files open as its limit (RLIMIT_NOFILE) allows: raise \
             LimitNOFILE= in its service unit"
        ),
        Some(libc::ENFILE) => {
            format!("{e}: the system-wide limit of open files is reached: raise fs.file-max")
        }
        _ => e.to_string(),
    }
}

fn inotify_limit(sysctl: &str, what: &str) -> String {
    let current = fs::read_to_string(format!("/proc/sys/fs/inotify/{sysctl}"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let (now, suggested) = match current {
        Some(n) => (format!(" (now {n})"), (n.saturating_mul(4)).max(1024)),
        None => (String::new(), 1024),
    };
    format!(
        "the inotify limit fs.inotify.{sysctl}{now} is exhausted: this user's processes hold all \
         the inotify {what} it allows; raise it with `sysctl -w fs.inotify.{sysctl}={suggested}` \
         (and a file in /etc/sysctl.d to keep it)"
    )
}

/// `d` from now; a huge `d` (e.g. `Duration::MAX` to disable rescans) means "not in practice".
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_limits_are_named_with_their_fix() {
        let watches = watch_failure(&notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        assert!(watches.contains("fs.inotify.max_user_watches"), "{watches}");
        assert!(watches.contains("sysctl -w fs.inotify.max_user_watches="), "{watches}");
        // inotify_init's EMFILE while this process has descriptors to spare.
        let emfile = notify::Error::io(io::Error::from_raw_os_error(libc::EMFILE));
        let instances = watch_failure(&emfile);
        assert!(instances.contains("sysctl -w fs.inotify.max_user_instances="), "{instances}");
        assert!(!instances.contains("Too many open files"), "{instances}");
        let other = notify::Error::io(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(watch_failure(&other), other.to_string());
    }
}
