//! A new snapshot against the previous one: which objects were added, changed or removed,
//! each change with the next resourceVersion of one counter over every kind, as the API
//! server's etcd revision.
//!
//! Cheap on purpose (it runs on the agent's thread after each step that changed something):
//! objects are compared with `PartialEq`, nothing is serialized, and a kind whose source is
//! the same `Arc` as before (events, the manifests' ConfigMaps and Secrets) is not looked at.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Change, EventType, Object, Ring};
use crate::api::Snapshot;
use crate::manifest::ObjectKey;
use crate::store::EventRecord;

/// The resourceVersions of the objects that carry none themselves (pods carry theirs in
/// `metadata`). Each part is shared with the previous snapshot while its kind is unchanged.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    /// One per record of `Snapshot::events`, same order.
    pub events: Arc<Vec<u64>>,
    pub config_maps: Arc<BTreeMap<ObjectKey, u64>>,
    pub secrets: Arc<BTreeMap<ObjectKey, u64>>,
    /// The Node's (0 until there is one).
    pub node: u64,
}

/// Gives `next`'s objects their resourceVersions (kept when unchanged since `prev`, new when
/// changed) and `next.version` the latest; pushes one change per object added, modified or
/// deleted onto `ring`. Returns whether anything changed.
pub fn diff(prev: &Snapshot, next: &mut Snapshot, ring: &mut Ring) -> bool {
    let mut rv = prev.version;
    let mut changes = Vec::new();
    diff_pods(&prev.pods, &mut next.pods, &mut rv, &mut changes);
    next.versions.events = if Arc::ptr_eq(&prev.events, &next.events) {
        prev.versions.events.clone()
    } else {
        Arc::new(diff_events(prev, &next.events, &mut rv, &mut changes))
    };
    if Arc::ptr_eq(&prev.desired, &next.desired) {
        next.versions.config_maps = prev.versions.config_maps.clone();
        next.versions.secrets = prev.versions.secrets.clone();
    } else {
        next.versions.config_maps = Arc::new(diff_map(
            &prev.desired.config_maps,
            &prev.versions.config_maps,
            &next.desired.config_maps,
            |c| &mut c.metadata,
            Object::ConfigMap,
            &mut rv,
            &mut changes,
        ));
        next.versions.secrets = Arc::new(diff_map(
            &prev.desired.secrets,
            &prev.versions.secrets,
            &next.desired.secrets,
            |s| &mut s.metadata,
            Object::Secret,
            &mut rv,
            &mut changes,
        ));
    }
    next.versions.node = diff_node(prev, next, &mut rv, &mut changes);
    next.version = rv;
    let changed = !changes.is_empty();
    ring.push_batch(changes);
    changed
}

/// Pods are matched by UID: a changed manifest gives a pod a new UID (content-derived, like a
/// static pod's mirror), and the old one can still be terminating under the same name. Both
/// lists are sorted by namespace and name (`Published::publish`), so a binary search finds the
/// few pods of a name.
fn name(p: &Pod) -> (Option<&str>, Option<&str>) {
    (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
}

fn find(prev: &[Pod], pod: &Pod) -> Option<usize> {
    let m = &pod.metadata;
    let start = prev.partition_point(|p| name(p) < (m.namespace.as_deref(), m.name.as_deref()));
    prev[start..]
        .iter()
        .take_while(|p| name(p) == (m.namespace.as_deref(), m.name.as_deref()))
        .position(|p| p.metadata.uid == m.uid)
        .map(|i| start + i)
}

fn diff_pods(prev: &[Pod], next: &mut [Pod], rv: &mut u64, changes: &mut Vec<Change>) {
    let mut kept = vec![false; prev.len()];
    for pod in next.iter_mut() {
        match find(prev, pod) {
            Some(i) => {
                kept[i] = true;
                let was = &prev[i];
                // Equal but for the version the new one does not have yet.
                pod.metadata.resource_version.clone_from(&was.metadata.resource_version);
                if pod == was {
                    continue;
                }
                *rv += 1;
                pod.metadata.resource_version = Some(rv.to_string());
                changes.push(Change::new(
                    *rv,
                    EventType::Modified,
                    Object::Pod(Box::new(pod.clone())),
                    Some(Arc::new(Object::Pod(Box::new(was.clone())))),
                ));
            }
            None => {
                *rv += 1;
                pod.metadata.resource_version = Some(rv.to_string());
                changes.push(Change::new(
                    *rv,
                    EventType::Added,
                    Object::Pod(Box::new(pod.clone())),
                    None,
                ));
            }
        }
    }
    for (was, _) in prev.iter().zip(&kept).filter(|(_, kept)| !**kept) {
        *rv += 1;
        let mut last = was.clone();
        last.metadata.resource_version = Some(rv.to_string());
        changes.push(deleted(*rv, Object::Pod(Box::new(last))));
    }
}

/// The Node changes when anything but its heartbeat does: the agent stamps the heartbeat at
/// every publish, and a MODIFIED per publish would tell a watcher nothing (the kubelet too
/// writes its status only on a change, the lease carries the heartbeat).
fn diff_node(prev: &Snapshot, next: &Snapshot, rv: &mut u64, changes: &mut Vec<Change>) -> u64 {
    let Some(node) = &next.node else { return prev.versions.node };
    let type_ = match &prev.node {
        Some(was) if Arc::ptr_eq(was, node) || same_but_heartbeat(was, node) => {
            return prev.versions.node
        }
        Some(_) => EventType::Modified,
        None => EventType::Added,
    };
    *rv += 1;
    let stamped = |n: &Node| {
        let mut n = n.clone();
        n.metadata.resource_version = Some(rv.to_string());
        Object::Node(Box::new(n))
    };
    let old = prev.node.as_deref().map(|was| Arc::new(stamped(was)));
    changes.push(Change::new(*rv, type_, stamped(node), old));
    *rv
}

fn same_but_heartbeat(a: &Node, b: &Node) -> bool {
    let without = |n: &Node| {
        let mut n = n.clone();
        for c in n.status.iter_mut().flat_map(|s| s.conditions.iter_mut().flatten()) {
            c.last_heartbeat_time = None;
        }
        n
    };
    without(a) == without(b)
}

fn deleted(rv: u64, last: Object) -> Change {
    Change::new(rv, EventType::Deleted, last, None)
}

/// What names an event record (its name is derived from the same fields).
type EventKey<'a> = (&'a str, Option<&'a str>, &'a str, &'a str, i64);

fn event_key(r: &EventRecord) -> EventKey<'_> {
    (&r.pod_uid, r.container.as_deref(), &r.reason, &r.message, r.first_seen)
}

fn diff_events(
    prev: &Snapshot,
    next: &[EventRecord],
    rv: &mut u64,
    changes: &mut Vec<Change>,
) -> Vec<u64> {
    let was = &prev.events;
    let version = |j: usize| prev.versions.events.get(j).copied().unwrap_or(0);
    let mut matched = vec![false; was.len()];
    let mut versions = Vec::with_capacity(next.len());
    let mut record = |r: &EventRecord, found: Option<usize>, versions: &mut Vec<u64>| {
        let type_ = match found {
            Some(j) if was[j] == *r => return versions.push(version(j)),
            Some(_) => EventType::Modified,
            None => EventType::Added,
        };
        *rv += 1;
        versions.push(*rv);
        let old = found.map(|j| Arc::new(Object::Event(was[j].clone())));
        changes.push(Change::new(*rv, type_, Object::Event(r.clone()), old));
    };
    // The agent folds repeats in place, appends new events and drops the oldest: walk both
    // lists aligned on the first record, then match what is left by key (usually new ones).
    let offset = next
        .first()
        .and_then(|f| was.iter().position(|r| event_key(r) == event_key(f)))
        .unwrap_or(was.len());
    let mut aligned = 0;
    for (i, r) in next.iter().enumerate() {
        match was.get(offset + i) {
            Some(w) if event_key(w) == event_key(r) => {
                matched[offset + i] = true;
                record(r, Some(offset + i), &mut versions);
                aligned = i + 1;
            }
            _ => break,
        }
    }
    if aligned < next.len() {
        let mut left: HashMap<EventKey, usize> = was
            .iter()
            .enumerate()
            .filter(|(j, _)| !matched[*j])
            .map(|(j, r)| (event_key(r), j))
            .collect();
        for r in &next[aligned..] {
            let found = left.remove(&event_key(r));
            if let Some(j) = found {
                matched[j] = true;
            }
            record(r, found, &mut versions);
        }
    }
    for (j, _) in matched.iter().enumerate().filter(|(_, m)| !**m) {
        *rv += 1;
        changes.push(deleted(*rv, Object::Event(was[j].clone())));
    }
    versions
}

/// ConfigMaps or Secrets, keyed by namespace/name.
fn diff_map<T: Clone + PartialEq>(
    prev: &BTreeMap<ObjectKey, T>,
    prev_versions: &BTreeMap<ObjectKey, u64>,
    next: &BTreeMap<ObjectKey, T>,
    meta: fn(&mut T) -> &mut ObjectMeta,
    wrap: fn(T) -> Object,
    rv: &mut u64,
    changes: &mut Vec<Change>,
) -> BTreeMap<ObjectKey, u64> {
    let mut versions = BTreeMap::new();
    let stamped = |o: &T, rv: u64| {
        let mut o = o.clone();
        meta(&mut o).resource_version = Some(rv.to_string());
        wrap(o)
    };
    for (key, o) in next {
        let (type_, old) = match prev.get(key) {
            Some(was) if was == o => {
                versions.insert(key.clone(), prev_versions.get(key).copied().unwrap_or(0));
                continue;
            }
            Some(was) => (EventType::Modified, Some(Arc::new(stamped(was, 0)))),
            None => (EventType::Added, None),
        };
        *rv += 1;
        versions.insert(key.clone(), *rv);
        changes.push(Change::new(*rv, type_, stamped(o, *rv), old));
    }
    for (_, was) in prev.iter().filter(|(k, _)| !next.contains_key(*k)) {
        *rv += 1;
        changes.push(deleted(*rv, stamped(was, *rv)));
    }
    versions
}
