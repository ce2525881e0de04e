//! Manifest URLs (`--manifest-url`): the kubelet's HTTP static pod source, for fleets, with
//! offline operation.
//!
//! One task on the agent's executor polls every URL (no thread per source) every
//! [`UrlOptions::interval`] with `If-None-Match`/`If-Modified-Since`, and hands each new valid
//! body's documents to the [`Watcher`](super::Watcher), which merges them with the directory's
//! (each source kept apart; an object defined twice keeps its first definition, both named).
//!
//! A body is parsed and validated exactly like a file, its errors naming the URL (without its
//! query, which may hold a signature) and the line. The last valid body of each URL is cached
//! in `<state>/sources/<sha256(url)>` (atomic write) and loaded before the first fetch, so the
//! pods come back after an agent restart or a reboot with the server down:
//!
//! * an unreachable server or an error answer keeps the version in force (cached or fetched),
//!   and retries with back-off (doubling from the interval to [`MAX_BACKOFF`], ±20% jitter so a
//!   fleet does not come back in step);
//! * a body that fails validation keeps the last valid one (as a file does), its errors
//!   reported once;
//! * an empty body while the source had objects counts as invalid, like an emptied file: a
//!   half-written upload must not stop pods. A body of only a comment removes them.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderName};
use sha2::{Digest, Sha256};

use crate::http_client::{Client, HttpError, Target};
use crate::manifest::{parse_bytes, Document, ManifestError, MAX_FILE_BYTES};

use super::SourceSender;

/// The kubelet's `--http-check-frequency`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);
/// Connecting, waiting for the answer, every pause in the body (the kubelet's is 10 s).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A whole fetch, however its server trickles: one slow source must not hold up the others
/// (they are polled in turn).
pub const FETCH_DEADLINE: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing source.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Where the cached bodies live, under the state directory.
pub const CACHE_DIR: &str = "sources";

/// `--manifest-url*` flags.
#[derive(Clone, Debug)]
pub struct UrlOptions {
    pub urls: Vec<String>,
    /// Sent with every request.
    pub headers: Vec<UrlHeader>,
    /// CA certificates trusted besides the system's.
    pub ca_files: Vec<PathBuf>,
    pub interval: Duration,
}

impl Default for UrlOptions {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            headers: Vec::new(),
            ca_files: Vec::new(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// A request header; its value is never logged nor shown (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct UrlHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

#[derive(Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// `--manifest-url-header 'Name: value'`.
    Literal(String),
    /// `--manifest-url-header-file 'Name: /path'`: the file's content without its trailing
    /// newline, read for every request (a rotated token applies at the next poll).
    File(PathBuf),
}

impl fmt::Debug for UrlHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            HeaderValue::Literal(_) => write!(f, "{}: <redacted>", self.name),
            HeaderValue::File(p) => write!(f, "{}: <from {}>", self.name, p.display()),
        }
    }
}

/// `Name: value` (value trimmed); for both header flags.
pub fn parse_header(s: &str) -> Result<(HeaderName, String), String> {
    let (name, value) =
        s.split_once(':').ok_or("expected 'Name: value', e.g. 'Authorization: Bearer …'")?;
    let name = HeaderName::try_from(name.trim())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("header {name}: the value is empty"));
    }
    if hyper::header::HeaderValue::try_from(value).is_err() {
        return Err(format!("header {name}: the value has characters a header cannot carry"));
    }
    Ok((name, value.to_string()))
}

/// How a URL appears in errors, logs, pod sources and the API: without user info, query and
/// fragment, which may hold credentials.
pub fn display_name(url: &str) -> String {
    match Target::parse(url) {
        Ok(t) if t.path.contains('?') => format!("{}?…", t.url()),
        Ok(t) => t.url(),
        // Still named (it must be fixed), without what could be a credential.
        Err(_) => {
            let cut = url.split(['?', '#']).next().unwrap_or_default();
            match cut.split_once("://") {
                Some((scheme, rest)) => {
                    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                    format!("{scheme}://{rest}")
                }
                None => cut.to_string(),
            }
        }
    }
}

/// What `outpost get sources` and `/metrics` show of one source.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The URL as [`display_name`] shows it.
    pub url: String,
    /// Unix seconds of the last answer that was valid or unchanged (304).
    pub last_success: Option<i64>,
    /// Unix seconds of the last failure, and what it was.
    pub last_error_time: Option<i64>,
    pub last_error: Option<String>,
    pub etag: Option<String>,
    /// Objects of the version in force.
    pub objects: usize,
    /// The version in force came from the cache (nothing fetched since the start).
    pub from_cache: bool,
    pub fetches_total: u64,
    pub errors_total: u64,
}

/// The statuses of all sources, in flag order; shared with the API.
pub type SourceStatuses = Arc<Mutex<Vec<SourceStatus>>>;

/// One source's new documents or errors, for the watcher.
#[derive(Clone, Debug)]
pub struct SourceUpdate {
    /// The display name (also the documents' path).
    pub name: String,
    /// The documents now in force, when they changed.
    pub documents: Option<Vec<Document>>,
    /// Errors to report (each set once).
    pub errors: Vec<ManifestError>,
}

/// What one fetch got.
#[derive(Debug)]
pub enum Fetched {
    Body { bytes: Vec<u8>, etag: Option<String>, last_modified: Option<String> },
    NotModified,
    Failed(String),
}

/// The cache file's first line.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

struct Source {
    /// The URL as given (requested, hashed for the cache; never logged).
    url: String,
    target: Target,
    name: String,
    cache: PathBuf,
    etag: Option<String>,
    last_modified: Option<String>,
    /// SHA-256 of the body in force.
    body: Option<[u8; 32]>,
    had_objects: bool,
    /// Errors last reported, so each set is reported once.
    reported: Vec<ManifestError>,
    failures: u32,
    next: Instant,
    status: SourceStatus,
    /// A new valid body to cache (written off the agent's thread: it fsyncs).
    to_cache: Option<Vec<u8>>,
}

/// The manifest URLs, loaded from the cache and ready to poll.
pub struct UrlSources {
    sources: Vec<Source>,
    headers: Vec<UrlHeader>,
    interval: Duration,
    client: Client,
    statuses: SourceStatuses,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("--manifest-url {url}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("--manifest-url-ca: {0}")]
    Client(HttpError),
}

impl UrlSources {
    /// Reads each URL's cached body (valid ones are in force before the first fetch). Returns
    /// the sources and, per URL with a valid cache, its documents for the first update.
    pub fn load(
        options: &UrlOptions,
        state: &Path,
    ) -> Result<(UrlSources, Vec<SourceUpdate>), UrlError> {
        let client = Client::new(&options.ca_files, TIMEOUT).map_err(UrlError::Client)?;
        let dir = state.join(CACHE_DIR);
        let now = Instant::now();
        let mut sources = Vec::new();
        let mut initial = Vec::new();
        for url in &options.urls {
            let target = Target::parse(url)
                .map_err(|reason| UrlError::Url { url: display_name(url), reason })?;
            let name = display_name(url);
            let mut source = Source {
                url: url.clone(),
                target,
                cache: dir.join(cache_name(url)),
                status: SourceStatus { url: name.clone(), ..SourceStatus::default() },
                name,
                etag: None,
                last_modified: None,
                body: None,
                had_objects: false,
                reported: Vec::new(),
                failures: 0,
                next: now,
                to_cache: None,
            };
            if let Some(update) = source.load_cache() {
                initial.push(update);
            }
            sources.push(source);
        }
        let statuses = Arc::new(Mutex::new(sources.iter().map(|s| s.status.clone()).collect()));
        let interval = options.interval.max(Duration::from_millis(100));
        Ok((
            UrlSources { sources, headers: options.headers.clone(), interval, client, statuses },
            initial,
        ))
    }

    /// What the API shows; updated after every fetch.
    pub fn statuses(&self) -> SourceStatuses {
        self.statuses.clone()
    }

    /// Polls until the watcher is gone. Runs on the agent's executor.
    pub async fn run(mut self, sink: SourceSender) {
        if self.sources.is_empty() {
            return;
        }
        loop {
            let now = Instant::now();
            for i in 0..self.sources.len() {
                if self.sources[i].next > now {
                    continue;
                }
                let fetched = self.fetch_within(i, FETCH_DEADLINE).await;
                let source = &mut self.sources[i];
                let update = source.apply(fetched, self.interval, crate::format::now().as_second());
                if let Some(slot) =
                    self.statuses.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i)
                {
                    *slot = source.status.clone();
                }
                if let Some(write) = source.cache_write() {
                    smol::unblock(write).await;
                }
                if let Some(update) = update {
                    if !sink.send(update) {
                        return;
                    }
                }
            }
            let next = self.sources.iter().map(|s| s.next).min().unwrap_or(now + self.interval);
            crate::tasks::sleep(next.saturating_duration_since(Instant::now())).await;
        }
    }

    /// [`Self::fetch`], failed once `deadline` has passed.
    async fn fetch_within(&self, i: usize, deadline: Duration) -> Fetched {
        smol::future::or(self.fetch(i), async {
            crate::tasks::sleep(deadline).await;
            Fetched::Failed(format!(
                "no complete answer within {}",
                crate::format::go_duration(deadline)
            ))
        })
        .await
    }

    async fn fetch(&self, i: usize) -> Fetched {
        let source = &self.sources[i];
        let mut headers = Vec::new();
        for h in &self.headers {
            let value = match &h.value {
                HeaderValue::Literal(v) => v.clone(),
                HeaderValue::File(path) => match std::fs::read_to_string(path) {
                    Ok(v) => v.trim_end_matches(['\n', '\r']).to_string(),
                    Err(e) => {
                        return Fetched::Failed(format!(
                            "cannot read the value of header {} from {}: {e}",
                            h.name,
                            path.display()
                        ))
                    }
                },
            };
            headers.push((h.name.clone(), value));
        }
        if let Some(etag) = &source.etag {
            headers.push((header::IF_NONE_MATCH, etag.clone()));
        }
        if let Some(modified) = &source.last_modified {
            headers.push((header::IF_MODIFIED_SINCE, modified.clone()));
        }
        let response = match self.client.get(&source.target, &headers).await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(redact(&e.to_string(), source)),
        };
        match response.status {
            200 => {
                let etag = response.header("etag").map(String::from);
                let last_modified = response.header("last-modified").map(String::from);
                match response.bytes(MAX_FILE_BYTES, "body").await {
                    Ok(bytes) => Fetched::Body { bytes, etag, last_modified },
                    Err(HttpError::TooLarge { .. }) => Fetched::Failed(format!(
                        "the body is larger than {} KiB, the limit of a manifest file: split it \
                         into several URLs",
                        MAX_FILE_BYTES / 1024
                    )),
                    Err(e) => Fetched::Failed(redact(&e.to_string(), source)),
                }
            }
            304 => Fetched::NotModified,
            status @ 300..=399 => Fetched::Failed(format!(
                "status {status}: redirects are not followed; point --manifest-url at the final \
                 location"
            )),
            status => Fetched::Failed(format!("status {status}")),
        }
    }
}

/// Errors name the URL without its query (the client's `Target::url` already drops it); this
/// only guards against a future message that quotes the URL as given.
fn redact(message: &str, source: &Source) -> String {
    message.replace(&source.url, &source.name)
}

/// Pods from a URL are the kubelet's `http` source (`kubectl describe` shows it).
fn parse(name: &str, body: &[u8]) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut documents = parse_bytes(Path::new(name), body)?;
    for d in &mut documents {
        if let crate::manifest::Object::Pod(pod) = &mut d.object {
            let annotations =
                Arc::make_mut(pod).metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(crate::manifest::CONFIG_SOURCE.into(), "http".into());
        }
    }
    Ok(documents)
}

/// The cache file of a URL: the SHA-256 of the URL as given.
pub fn cache_name(url: &str) -> String {
    Sha256::digest(url.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Doubling from the interval to [`MAX_BACKOFF`] (or the interval, if longer), times
/// `jitter` (0.8 to 1.2).
pub fn backoff(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    let base = interval.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap);
    base.mul_f64(jitter.clamp(0.8, 1.2))
}

/// A factor in [0.8, 1.2), different for each call.
fn jitter() -> f64 {
    let r = RandomState::new().hash_one(Instant::now());
    0.8 + 0.4 * (r % 10_000) as f64 / 10_000.0
}

impl Source {
    /// Puts the cached body in force, if there is a valid one.
    fn load_cache(&mut self) -> Option<SourceUpdate> {
        let bytes = match std::fs::read(&self.cache) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!(
                    "manifest URL {}: cannot read its cache {}: {e}",
                    self.name,
                    self.cache.display()
                );
                return None;
            }
        };
        let split = bytes.iter().position(|&b| b == b'\n')?;
        let meta: CacheMeta = match serde_json::from_slice(&bytes[..split]) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(
                    "manifest URL {}: cache {} is damaged ({e}); ignored",
                    self.name,
                    self.cache.display()
                );
                return None;
            }
        };
        let body = &bytes[split + 1..];
        match parse(&self.name, body) {
            Ok(documents) => {
                log::info!(
                    "manifest URL {}: {} objects from the cache, until the server answers",
                    self.name,
                    documents.len()
                );
                self.etag = meta.etag;
                self.last_modified = meta.last_modified;
                self.body = Some(Sha256::digest(body).into());
                self.had_objects = !documents.is_empty();
                self.status.objects = documents.len();
                self.status.etag = self.etag.clone();
                self.status.from_cache = true;
                Some(SourceUpdate {
                    name: self.name.clone(),
                    documents: Some(documents),
                    errors: Vec::new(),
                })
            }
            Err(errors) => {
                // E.g. validation tightened by an upgrade: the server's next answer decides.
                log::warn!(
                    "manifest URL {}: the cached body is no longer valid ({}); waiting for the server",
                    self.name,
                    errors.first().map(ToString::to_string).unwrap_or_default()
                );
                None
            }
        }
    }

    /// Takes a fetch's result: the new documents or errors for the watcher, if any; updates
    /// the status, the cache and when to poll next.
    fn apply(&mut self, fetched: Fetched, interval: Duration, now: i64) -> Option<SourceUpdate> {
        self.status.fetches_total += 1;
        match fetched {
            Fetched::NotModified => {
                self.succeeded(interval, now);
                None
            }
            Fetched::Failed(reason) => {
                self.failed(reason, interval, now);
                None
            }
            Fetched::Body { bytes, etag, last_modified } => {
                let hash: [u8; 32] = Sha256::digest(&bytes).into();
                let result = if bytes.is_empty() && self.had_objects {
                    Err(vec![ManifestError::file(
                        &self.name,
                        "the body is empty: the last valid version stays in force; serve a \
                         comment only (`# no pods`) to remove every object",
                    )])
                } else if self.body == Some(hash) {
                    // Same body, new validators (a server without ETags).
                    self.etag = etag;
                    self.last_modified = last_modified;
                    self.status.etag = self.etag.clone();
                    self.succeeded(interval, now);
                    return self.clear_errors();
                } else {
                    parse(&self.name, &bytes)
                };
                match result {
                    Ok(documents) => {
                        self.etag = etag;
                        self.last_modified = last_modified;
                        self.body = Some(hash);
                        self.had_objects = !documents.is_empty();
                        self.status.objects = documents.len();
                        self.status.etag = self.etag.clone();
                        self.status.from_cache = false;
                        self.to_cache = Some(bytes);
                        self.succeeded(interval, now);
                        if !self.reported.is_empty() {
                            log::info!("manifest URL {} is valid again", self.name);
                        }
                        self.reported.clear();
                        Some(SourceUpdate {
                            name: self.name.clone(),
                            documents: Some(documents),
                            errors: Vec::new(),
                        })
                    }
                    Err(errors) => {
                        // Validators of a bad body are not kept: the next poll gets it again
                        // (or its fix) in full, and the errors are reported once.
                        let first = errors.first().map(ToString::to_string).unwrap_or_default();
                        self.failed(format!("invalid body: {first}"), interval, now);
                        if errors == self.reported {
                            return None;
                        }
                        self.reported = errors.clone();
                        Some(SourceUpdate { name: self.name.clone(), documents: None, errors })
                    }
                }
            }
        }
    }

    fn clear_errors(&mut self) -> Option<SourceUpdate> {
        if self.reported.is_empty() {
            return None;
        }
        log::info!("manifest URL {} is valid again", self.name);
        self.reported.clear();
        None
    }

    fn succeeded(&mut self, interval: Duration, now: i64) {
        if self.failures > 0 && self.reported.is_empty() {
            log::info!("manifest URL {}: answering again", self.name);
        }
        self.failures = 0;
        self.status.last_success = Some(now);
        self.next = Instant::now() + interval;
    }

    fn failed(&mut self, reason: String, interval: Duration, now: i64) {
        self.failures += 1;
        let delay = backoff(interval, self.failures, jitter());
        // One line per failure would flood the journal of a fleet whose server is down: the
        // first, then every tenth.
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            log::warn!(
                "manifest URL {}: {reason}; the version in force stays ({} failures, next try in {})",
                self.name,
                self.failures,
                crate::format::go_duration(delay)
            );
        }
        self.status.errors_total += 1;
        self.status.last_error = Some(reason);
        self.status.last_error_time = Some(now);
        self.next = Instant::now() + delay;
    }

    /// The pending cache write, if a new valid body came: it writes the body beside its cache
    /// file and renames it into place.
    fn cache_write(&mut self) -> Option<impl FnOnce() + Send + 'static> {
        let body = self.to_cache.take()?;
        let meta = CacheMeta {
            url: self.name.clone(),
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
        };
        let (path, name) = (self.cache.clone(), self.name.clone());
        Some(move || {
            if let Err(e) = write_atomic(&path, &meta, &body) {
                log::warn!(
                    "manifest URL {name}: cannot cache the body in {}: {e} (a restart without \
                     the server would start without it)",
                    path.display()
                );
            }
        })
    }
}

fn write_atomic(path: &Path, meta: &CacheMeta, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    // Bodies may hold Secrets: the cache is root's only.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    serde_json::to_writer(&mut f, meta)?;
    f.write_all(b"\n")?;
    f.write_all(body)?;
    // A power cut must leave the old version or the new one, never a torn file.
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
