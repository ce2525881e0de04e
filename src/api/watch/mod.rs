//! `?watch=1` on pods, events, configmaps, secrets and the Node, with the API server's resourceVersion
//! semantics.
//!
//! Each publish is diffed against the previous snapshot (`diff.rs`): every object added,
//! modified or deleted gets the next value of one counter over all kinds, and the change goes
//! into a bounded [`Ring`]. A watch is a body stream (`stream.rs`) that the connection's task
//! polls: it sleeps on an [`event_listener::Event`] the publisher notifies, reads the ring
//! from its cursor, and writes JSON lines. No thread and no timer per watch (but for
//! `timeoutSeconds` and bookmarks), and backpressure is the connection's: a slow client is
//! not polled, and once the ring has moved past its cursor it gets `410 Expired` and is closed,
//! so a slow watcher neither blocks the agent nor holds memory beyond the ring.

mod diff;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::routes::{self, Body, Context, Reply, Request};
use super::selector::{FieldSelector, Fields, LabelSelector};
use super::table::Include;
use crate::manifest::ObjectKey;
use crate::store::EventRecord;

pub use diff::{diff, Versions};

/// Changes kept for watches that resume from a resourceVersion (the API server's watch cache
/// held 100 per resource by default); older ones get `410 Expired` and re-list. Each holds an
/// object's state (a pod is ~11 KB in memory, `benches/api_watch.rs`): this bounds the history.
pub const RING: usize = 100;

/// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (the API server's is about a
/// minute).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// The kinds that can be watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Event,
    ConfigMap,
    Secret,
    Node,
}

impl Kind {
    fn from_resource(resource: &str) -> Option<Self> {
        Some(match resource {
            "pods" => Kind::Pod,
            "events" => Kind::Event,
            "configmaps" => Kind::ConfigMap,
            "secrets" => Kind::Secret,
            "nodes" => Kind::Node,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Event => "Event",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
        }
    }

    fn fields(self) -> Fields {
        match self {
            Kind::Pod => Fields::Pod,
            Kind::Event => Fields::Event,
            Kind::ConfigMap | Kind::Secret | Kind::Node => Fields::Object,
        }
    }
}

/// An object as it was at one change. Secrets are kept as loaded and redacted when sent.
#[derive(Debug, PartialEq)]
pub enum Object {
    // Boxed: the other kinds are a fraction of its size.
    Pod(Box<Pod>),
    Event(EventRecord),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Node(Box<Node>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Event(_) => Kind::Event,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Node(_) => Kind::Node,
        }
    }
}

/// One object added, modified or deleted, at resourceVersion `rv`.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub type_: EventType,
    /// The new state; for a deletion, the last one.
    pub object: Arc<Object>,
    /// The state before a modification: a watch with selectors turns a change that moves an
    /// object in or out of them into ADDED or DELETED, as the API server does. Kept while the
    /// change is in the newest batch only (memory); see `stream.rs` for replays without it.
    pub old: Option<Arc<Object>>,
    /// The change as sent, shared by the watches that send it in the same form.
    pub lines: Arc<Lines>,
}

impl Change {
    pub fn new(rv: u64, type_: EventType, object: Object, old: Option<Arc<Object>>) -> Self {
        Self { rv, type_, object: Arc::new(object), old, lines: Arc::default() }
    }
}

/// What makes two watches send a change alike: the event type, the Table's row content and
/// whether the Table carries its columns.
type LineKey = (&'static str, Option<Include>, bool);

/// A change's encoded lines: serializing an object (or a Table row) is most of what an event
/// costs, so it is done once per form, not once per watch. Kept while the change is in the
/// newest publish's batch only, which every watch that keeps up reads.
#[derive(Debug, Default)]
pub struct Lines(Mutex<Vec<(LineKey, Bytes)>>);

impl Lines {
    fn get_or(&self, key: LineKey, encode: impl FnOnce() -> Bytes) -> Bytes {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = lines.iter().find(|(k, _)| *k == key) {
            return b.clone();
        }
        let b = encode();
        lines.push((key, b.clone()));
        b
    }

    fn clear(&self) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *lines = Vec::new();
    }
}

/// The last [`RING`] changes, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    changes: VecDeque<Change>,
    /// The resourceVersion of the newest change dropped: resuming before it would miss some.
    floor: u64,
    /// Where the newest batch starts (the last publish's changes are after it).
    batch: u64,
}

/// A watch asked to resume from a resourceVersion older than the ring.
#[derive(Debug, PartialEq)]
pub struct Expired {
    pub asked: u64,
    pub oldest: u64,
}

impl Ring {
    /// One publish's changes; the previous batch's old states and encoded lines are dropped.
    pub fn push_batch(&mut self, changes: Vec<Change>) {
        let batch = self.batch;
        for c in self.changes.iter_mut().rev().take_while(|c| c.rv > batch) {
            c.lines.clear();
            c.old = None;
        }
        self.batch = self.changes.back().map_or(self.batch, |c| c.rv);
        for c in changes {
            self.push(c);
        }
    }

    fn push(&mut self, change: Change) {
        if self.changes.len() == RING {
            if let Some(old) = self.changes.pop_front() {
                self.floor = old.rv;
            }
        }
        self.changes.push_back(change);
    }

    /// The changes to `kind` after `rv`, and the resourceVersion they bring the caller to.
    pub fn since(&self, rv: u64, kind: Kind) -> Result<(Vec<Change>, u64), Expired> {
        if rv < self.floor {
            return Err(Expired { asked: rv, oldest: self.floor });
        }
        let start = self.changes.partition_point(|c| c.rv <= rv);
        let to = self.changes.back().map_or(rv, |c| c.rv.max(rv));
        let changes =
            self.changes.range(start..).filter(|c| c.object.kind() == kind).cloned().collect();
        Ok((changes, to))
    }
}

/// What the publisher and the watches share, besides the snapshot.
#[derive(Debug, Default)]
pub struct Hub {
    ring: Mutex<Ring>,
    /// Notified after each publish that changed something.
    changed: event_listener::Event,
    /// Watches open now.
    watchers: AtomicUsize,
}

impl Hub {
    /// Held by the publisher from the diff until the snapshot is swapped, so publishes are
    /// serialized and each diff sees the snapshot the previous one made.
    pub fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn notify(&self) {
        self.changed.notify(usize::MAX);
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// A parsed watch request: what the stream sends.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchRequest {
    pub kind: Kind,
    pub namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// One-row Tables instead of objects (`kubectl get -w`), with what each row includes.
    table: Option<Include>,
    show_secrets: bool,
    /// Unset (or "0"): start with an ADDED for every current object.
    from: Option<u64>,
    timeout: Option<Duration>,
    bookmarks: bool,
    /// [`BOOKMARK_EVERY`]; shorter in tests.
    pub bookmark_every: Duration,
}

/// `?watch=1` (or `watch=true`) on a collection that can be watched, or one of the legacy
/// watch paths (`/api/v1/watch/…`, deprecated by the API server but still served: clients
/// built on old client libraries use them): the reply that streams it, or a 400. `None` for
/// any other request.
pub fn route(segments: &[&str], req: &Request, ctx: &Context) -> Option<Reply> {
    let (resource, namespace, name) = match segments {
        ["api", "v1", "watch", rest @ ..] => legacy(rest)?,
        _ if !req.query.flag("watch") => return None,
        ["api", "v1", resource] => (*resource, None, None),
        ["api", "v1", "namespaces", ns, resource] => (*resource, Some(ns.to_string()), None),
        _ => return None,
    };
    let kind = Kind::from_resource(resource)?;
    // Nodes are cluster-scoped; the namespaced kinds are named within a namespace only.
    let misplaced = match kind {
        Kind::Node => namespace.is_some(),
        _ => name.is_some() && namespace.is_none(),
    };
    if misplaced {
        return None;
    }
    Some(match WatchRequest::parse(kind, namespace, name, req, ctx) {
        Ok(w) => Reply { status: 200, body: Body::Watch(Box::new(w)) },
        Err(reply) => reply,
    })
}

/// `/api/v1/watch/` + `RESOURCE[/NAME]` or `namespaces/NS/RESOURCE[/NAME]`: the resource, the
/// namespace and the name (a `metadata.name` field selector, as the API server applies it).
fn legacy<'a>(rest: &[&'a str]) -> Option<(&'a str, Option<String>, Option<String>)> {
    Some(match rest {
        [resource] => (*resource, None, None),
        ["namespaces", ns, resource] => (*resource, Some(ns.to_string()), None),
        ["namespaces", ns, resource, name] => {
            (*resource, Some(ns.to_string()), Some(name.to_string()))
        }
        [resource, name] => (*resource, None, Some(name.to_string())),
        _ => return None,
    })
}

impl WatchRequest {
    fn parse(
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
        req: &Request,
        ctx: &Context,
    ) -> Result<Self, Reply> {
        let (labels, mut fields) = routes::selectors(req, kind.fields())?;
        if let Some(name) = name {
            fields = fields.and_name(&name);
        }
        let bad = |m: String| routes::status(400, "BadRequest", &m);
        let from = match req.query.get("resourceVersion") {
            None | Some("" | "0") => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                bad(format!("resourceVersion: Invalid value: {v:?}: must be an unsigned integer"))
            })?),
        };
        let timeout = match req.query.get("timeoutSeconds") {
            None | Some("") => None,
            Some(v) => Some(Duration::from_secs(v.parse::<u64>().map_err(|_| {
                bad(format!("timeoutSeconds: Invalid value: {v:?}: must be an unsigned integer"))
            })?)),
        };
        // Tables only where lists are Tables (pods, events, nodes).
        let table = (routes::wants_table(req.accept)
            && matches!(kind, Kind::Pod | Kind::Event | Kind::Node))
        .then(|| Include::parse(req.query.get("includeObject")));
        Ok(Self {
            kind,
            namespace,
            labels,
            fields,
            table,
            show_secrets: ctx.config.show_secrets,
            from,
            timeout,
            bookmarks: req.query.flag("allowWatchBookmarks"),
            bookmark_every: BOOKMARK_EVERY,
        })
    }

    /// Whether this watch selects the object; `json` (the object as served) is made only
    /// for a field selector.
    fn selects(&self, object: &Object, json: impl FnOnce() -> Value) -> bool {
        let (_, labels) = self.meta(object);
        self.in_namespace(object)
            && self.labels.matches(labels)
            && (self.fields == FieldSelector::default() || self.fields.matches(&json()))
    }

    fn in_namespace(&self, object: &Object) -> bool {
        self.namespace.as_deref().is_none_or(|ns| self.meta(object).0 == Some(ns))
    }

    fn meta<'a>(
        &self,
        object: &'a Object,
    ) -> (Option<&'a str>, Option<&'a std::collections::BTreeMap<String, String>>) {
        match object {
            Object::Pod(p) => (p.metadata.namespace.as_deref(), p.metadata.labels.as_ref()),
            Object::ConfigMap(c) => (c.metadata.namespace.as_deref(), c.metadata.labels.as_ref()),
            Object::Secret(s) => (s.metadata.namespace.as_deref(), s.metadata.labels.as_ref()),
            Object::Node(n) => (None, n.metadata.labels.as_ref()),
            // Events never have labels.
            Object::Event(r) => (Some(r.namespace.as_str()), None),
        }
    }
}

/// `metadata.resourceVersion` on a served object.
pub fn stamp(object: &mut Value, rv: Option<u64>) {
    if let (Some(rv), Some(meta)) = (rv, object.get_mut("metadata")) {
        meta["resourceVersion"] = Value::String(rv.to_string());
    }
}

/// The resourceVersion of a ConfigMap or Secret in `versions`.
pub fn version_of(
    versions: &std::collections::BTreeMap<ObjectKey, u64>,
    meta: &ObjectMeta,
) -> Option<u64> {
    let key = ObjectKey {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    };
    versions.get(&key).copied()
}

/// Counts a watch while it is open.
#[derive(Debug)]
struct Open(Arc<super::Published>);

impl Open {
    fn new(published: Arc<super::Published>) -> Self {
        published.watch.watchers.fetch_add(1, Ordering::Relaxed);
        Self(published)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.watch.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}
