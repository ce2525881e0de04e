//! One watch's body: JSON lines (`{"type":…,"object":…}`) polled by its connection's task.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;
use hyper::body::Bytes;
use serde_json::{json, Value};
use smol::future::Future;
use smol::stream::Stream;
use smol::Timer;

use super::{Change, EventType, Kind, Object, Open, WatchRequest};
use crate::api::{events, node, objects, table, Published, Snapshot};

pub struct WatchStream {
    published: Arc<Published>,
    req: WatchRequest,
    /// Every change up to here has been sent or filtered out.
    cursor: u64,
    pending: VecDeque<Bytes>,
    listener: Option<EventListener>,
    deadline: Option<Timer>,
    bookmark: Option<Timer>,
    done: bool,
    /// Only the first Table carries column definitions, as the API server sends them.
    sent_columns: bool,
    /// The node's name for events whose pod is gone, read once.
    node: Option<String>,
    _open: Open,
}

impl WatchRequest {
    /// Starts the watch at the current snapshot: its objects as ADDED when no resourceVersion
    /// was given, else the changes after that version.
    pub fn stream(self, published: Arc<Published>) -> WatchStream {
        let snapshot = published.current();
        let mut s = WatchStream {
            cursor: self.from.unwrap_or(snapshot.version),
            pending: VecDeque::new(),
            listener: None,
            deadline: self.timeout.map(Timer::after),
            bookmark: self.bookmarks.then(|| Timer::after(self.bookmark_every)),
            done: false,
            sent_columns: false,
            node: None,
            _open: Open::new(published.clone()),
            published,
            req: self,
        };
        if s.req.from.is_none() {
            s.initial(&snapshot);
        }
        s
    }
}

impl WatchStream {
    fn initial(&mut self, s: &Snapshot) {
        let node = self.node();
        let objects: Vec<(Object, u64)> = match self.req.kind {
            Kind::Pod => s
                .pods
                .iter()
                .map(|p| {
                    let rv = p.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
                    (Object::Pod(Box::new(p.clone())), rv.unwrap_or(0))
                })
                .collect(),
            Kind::Event => s
                .events
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (Object::Event(r.clone()), s.versions.events.get(i).copied().unwrap_or(0))
                })
                .collect(),
            Kind::ConfigMap => s
                .desired
                .config_maps
                .iter()
                .map(|(k, c)| {
                    let rv = s.versions.config_maps.get(k).copied().unwrap_or(0);
                    (Object::ConfigMap(c.clone()), rv)
                })
                .collect(),
            Kind::Secret => s
                .desired
                .secrets
                .iter()
                .map(|(k, c)| {
                    let rv = s.versions.secrets.get(k).copied().unwrap_or(0);
                    (Object::Secret(c.clone()), rv)
                })
                .collect(),
            Kind::Node => s
                .node
                .iter()
                .map(|n| (Object::Node(Box::new((**n).clone())), s.versions.node))
                .collect(),
        };
        for (object, rv) in objects {
            if self.selects(&object, rv, s, &node) {
                let line = self.encode("ADDED", &object, rv, s, &node);
                self.sent_columns = true;
                self.pending.push_back(line);
            }
        }
    }

    fn node(&mut self) -> String {
        self.node.get_or_insert_with(crate::api::routes::hostname).clone()
    }

    /// Reads the ring from the cursor. False when there was nothing new.
    fn catch_up(&mut self) -> bool {
        let since = self.published.watch.ring().since(self.cursor, self.req.kind);
        let (changes, to) = match since {
            Ok(found) => found,
            Err(e) => {
                // The API server's answer to a resourceVersion its cache no longer holds.
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {} ({})", e.asked, e.oldest),
                });
                self.pending.push_back(line(json!({"type": "ERROR", "object": status})));
                self.done = true;
                return true;
            }
        };
        if to == self.cursor {
            return false;
        }
        self.cursor = to;
        if !changes.is_empty() {
            let snapshot = self.published.current();
            let node = self.node();
            for c in changes {
                self.change(&c, &snapshot, &node);
            }
        }
        true
    }

    fn selects(&self, object: &Object, rv: u64, s: &Snapshot, node: &str) -> bool {
        self.req.selects(object, || self.to_json(object, rv, s, node))
    }

    fn change(&mut self, c: &Change, s: &Snapshot, node: &str) {
        let now = self.selects(&c.object, c.rv, s, node);
        let before = match (&c.old, c.type_) {
            (Some(old), EventType::Modified) => Some((old, self.selects(old, c.rv, s, node))),
            _ => None,
        };
        let (type_, object) = match (c.type_, before, now) {
            (EventType::Modified, Some((_, false)), true) => ("ADDED", &c.object),
            // Leaving the selection: the last state that matched, at this version.
            (EventType::Modified, Some((old, true)), false) => ("DELETED", old),
            (EventType::Modified, Some((_, false)), false) => return,
            // A replay of an older batch, whose old states are gone: whether the object was
            // selected before is unknown, so one that no longer is gets a DELETED with its new
            // state (a no-op for a client that never had it; informers treat a MODIFIED of an
            // object they lack as an add).
            (EventType::Modified, None, false) if self.req.in_namespace(&c.object) => {
                ("DELETED", &c.object)
            }
            (type_, _, true) => (type_.as_str(), &c.object),
            _ => return,
        };
        let columns = self.req.table.is_some() && !self.sent_columns;
        let encode = || self.encode(type_, object, c.rv, s, node);
        let line = if Arc::ptr_eq(object, &c.object) {
            c.lines.get_or((type_, self.req.table, columns), encode)
        } else {
            encode()
        };
        self.sent_columns = true;
        self.pending.push_back(line);
    }

    /// The object as served (secrets redacted unless shown), at `rv`.
    fn to_json(&self, object: &Object, rv: u64, s: &Snapshot, node: &str) -> Value {
        let mut v = match object {
            Object::Pod(p) => serde_json::to_value(p),
            Object::Event(r) => serde_json::to_value(events::to_event(r, &s.pods, node)),
            Object::ConfigMap(c) => serde_json::to_value(c),
            Object::Secret(secret) if self.req.show_secrets => serde_json::to_value(secret),
            Object::Secret(secret) => serde_json::to_value(objects::redact(secret)),
            Object::Node(n) => serde_json::to_value(n),
        }
        .unwrap_or_default();
        super::stamp(&mut v, Some(rv));
        v
    }

    /// One event's line: the object, or a one-row Table (with the columns on the first).
    fn encode(&self, type_: &str, object: &Object, rv: u64, s: &Snapshot, node: &str) -> Bytes {
        let json = self.to_json(object, rv, s, node);
        let object = match self.req.table {
            None => json,
            Some(include) => {
                let now = crate::format::now();
                let mut t = match object {
                    Object::Pod(p) => table::pods(&[(&**p, json)], rv, include, now),
                    Object::Event(r) => {
                        let e = events::to_event(r, &s.pods, node);
                        table::events(&[(e, json)], rv, include, now)
                    }
                    Object::Node(n) => node::node_table(&[(&**n, json)], rv, include, now),
                    Object::ConfigMap(_) | Object::Secret(_) => json,
                };
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                t
            }
        };
        line(json!({"type": type_, "object": object}))
    }

    fn push_bookmark(&mut self) {
        let rv = self.cursor.to_string();
        let object = match self.req.table {
            Some(_) => json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                               "metadata": {"resourceVersion": rv}, "columnDefinitions": [], "rows": []}),
            None => json!({"kind": self.req.kind.name(), "apiVersion": "v1",
                           "metadata": {"resourceVersion": rv}}),
        };
        self.pending.push_back(line(json!({"type": "BOOKMARK", "object": object})));
    }
}

fn line(v: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl Stream for WatchStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.pop_front() {
                return Poll::Ready(Some(b));
            }
            if this.done {
                return Poll::Ready(None);
            }
            // Listening before reading the ring: a publish in between still wakes us.
            if this.listener.is_none() {
                this.listener = Some(this.published.watch.changed.listen());
            }
            if this.catch_up() {
                this.listener = None;
                continue;
            }
            if let Some(l) = this.listener.as_mut() {
                if Pin::new(l).poll(cx).is_ready() {
                    this.listener = None;
                    continue;
                }
            }
            if let Some(t) = this.deadline.as_mut() {
                if Pin::new(t).poll(cx).is_ready() {
                    this.done = true;
                    continue;
                }
            }
            if let Some(t) = this.bookmark.as_mut() {
                if Pin::new(&mut *t).poll(cx).is_ready() {
                    t.set_after(this.req.bookmark_every);
                    this.push_bookmark();
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}
