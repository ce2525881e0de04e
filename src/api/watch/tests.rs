//! Diffing, resourceVersions, replays, 410, selectors, bookmarks and Table rows, on a
//! `Published` driven by hand (no HTTP, no agent).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde_json::Value;
use smol::stream::StreamExt;

use super::stream::WatchStream;
use super::{EventType, WatchRequest, RING};
use crate::api::routes::{handle, Body, Context, Request};
use crate::api::{ApiConfig, Metrics, Published};
use crate::manifest::{DesiredState, ObjectKey};
use crate::store::EventRecord;

fn pod(name: &str, phase: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
        ..Default::default()
    }
}

fn record(reason: &str, count: u32) -> EventRecord {
    EventRecord {
        pod_uid: "uid-web".into(),
        namespace: "default".into(),
        pod_name: "web".into(),
        container: Some("app".into()),
        type_: "Normal".into(),
        reason: reason.into(),
        message: format!("{reason} message"),
        count,
        first_seen: 1_700_000_000,
        last_seen: 1_700_000_000 + i64::from(count),
    }
}

fn rv(p: &Pod) -> u64 {
    p.metadata.resource_version.as_deref().unwrap().parse().unwrap()
}

fn publish(p: &Published, pods: Vec<Pod>) {
    let s = p.current();
    p.publish(pods, s.events.clone(), s.desired.clone());
}

/// A request as kubectl sends it, routed; panics unless it is a watch.
fn watch_request(path: &str, query: &str, accept: &str, published: &Published) -> WatchRequest {
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let metrics = Metrics::default();
    let snapshot = published.current();
    let mut req = Request::get(path, query);
    req.accept = accept;
    let reply = handle(&req, &Context { snapshot: &snapshot, config: &config, metrics: &metrics });
    match reply.body {
        Body::Watch(w) => *w,
        other => panic!("not a watch: {} {other:?}", reply.status),
    }
}

fn open(published: &Arc<Published>, path: &str, query: &str) -> WatchStream {
    watch_request(path, query, "", published).stream(published.clone())
}

/// The next event, or `None` when the stream ended; panics after 5 s.
fn next(s: &mut WatchStream) -> Option<Value> {
    smol::block_on(smol::future::or(async { Some(s.next().await) }, async {
        smol::Timer::after(Duration::from_secs(5)).await;
        None
    }))
    .expect("no watch event within 5 s")
    .map(|b| serde_json::from_slice(&b).unwrap())
}

/// True when nothing is sent within 100 ms.
fn quiet(s: &mut WatchStream) -> bool {
    smol::block_on(smol::future::or(async { s.next().await.map(|_| false) }, async {
        smol::Timer::after(Duration::from_millis(100)).await;
        Some(true)
    }))
    .unwrap_or(false)
}

fn summary(e: &Value) -> (String, String, String) {
    (
        e["type"].as_str().unwrap().into(),
        e["object"]["metadata"]["name"].as_str().unwrap_or_default().into(),
        e["object"]["metadata"]["resourceVersion"].as_str().unwrap_or_default().into(),
    )
}

#[test]
fn diff_gives_changed_objects_new_versions_and_keeps_the_others() {
    let p = Published::default();
    publish(&p, vec![pod("a", "Pending", "x"), pod("b", "Running", "x")]);
    let s1 = p.current();
    assert_eq!((rv(&s1.pods[0]), rv(&s1.pods[1]), s1.version), (1, 2, 2));
    // Same content again: nothing changes, not even the list's version.
    publish(&p, vec![pod("a", "Pending", "x"), pod("b", "Running", "x")]);
    assert_eq!(p.current().version, 2);
    assert_eq!(p.watch.ring().changes.len(), 2);
    // a modified, b deleted, c added.
    publish(&p, vec![pod("a", "Running", "x"), pod("c", "Pending", "x")]);
    let s2 = p.current();
    assert_eq!(s2.version, 5);
    assert_eq!((rv(&s2.pods[0]), rv(&s2.pods[1])), (3, 4));
    let ring = p.watch.ring();
    let kinds: Vec<(EventType, u64)> = ring.changes.iter().map(|c| (c.type_, c.rv)).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Added, 1),
            (EventType::Added, 2),
            (EventType::Modified, 3),
            (EventType::Added, 4),
            (EventType::Deleted, 5)
        ]
    );
    // DELETED carries the last state, at the deletion's version.
    let super::Object::Pod(last) = &*ring.changes[4].object else { panic!("a pod") };
    assert_eq!(last.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(rv(last), 5);
}

#[test]
fn one_counter_over_every_kind_and_versions_served_in_lists() {
    let p = Published::default();
    let key = ObjectKey { namespace: "default".into(), name: "cfg".into() };
    let cm = |v: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("cfg".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), v.to_string())].into()),
        ..Default::default()
    };
    let mut desired = DesiredState::default();
    desired.config_maps.insert(key.clone(), cm("1"));
    p.publish(
        vec![pod("a", "Running", "x")],
        Arc::new(vec![record("Pulled", 1)]),
        Arc::new(desired.clone()),
    );
    let s = p.current();
    assert_eq!(s.version, 3);
    assert_eq!(s.versions.events.as_slice(), [2]);
    assert_eq!(s.versions.config_maps.get(&key), Some(&3));
    // The event's count goes up (the agent folds repeats): MODIFIED, a new version.
    p.publish(s.pods.clone(), Arc::new(vec![record("Pulled", 2)]), s.desired.clone());
    assert_eq!(p.current().versions.events.as_slice(), [4]);
    desired.config_maps.insert(key.clone(), cm("2"));
    let s = p.current();
    p.publish(s.pods.clone(), s.events.clone(), Arc::new(desired));
    let s = p.current();
    assert_eq!((s.version, s.versions.config_maps.get(&key)), (5, Some(&5)));
    assert_eq!(rv(&s.pods[0]), 1, "the pod did not change");

    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let metrics = Metrics::default();
    let ctx = Context { snapshot: &s, config: &config, metrics: &metrics };
    let get = |path: &str| handle(&Request::get(path, ""), &ctx).json().clone();
    assert_eq!(get("/api/v1/pods")["metadata"]["resourceVersion"], "5");
    assert_eq!(get("/api/v1/pods")["items"][0]["metadata"]["resourceVersion"], "1");
    assert_eq!(get("/api/v1/events")["items"][0]["metadata"]["resourceVersion"], "4");
    assert_eq!(get("/api/v1/configmaps")["items"][0]["metadata"]["resourceVersion"], "5");
    assert_eq!(
        get("/api/v1/namespaces/default/configmaps/cfg")["metadata"]["resourceVersion"],
        "5"
    );
}

#[test]
fn watch_without_a_version_starts_with_every_object_then_follows_changes() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x"), pod("b", "Running", "x")]);
    let mut w = open(&p, "/api/v1/namespaces/default/pods", "watch=1&resourceVersion=0");
    assert_eq!(summary(&next(&mut w).unwrap()), ("ADDED".into(), "a".into(), "1".into()));
    assert_eq!(summary(&next(&mut w).unwrap()), ("ADDED".into(), "b".into(), "2".into()));
    assert!(quiet(&mut w));
    assert_eq!(p.watchers(), 1);
    publish(&p, vec![pod("a", "Running", "x")]);
    assert_eq!(summary(&next(&mut w).unwrap()), ("MODIFIED".into(), "a".into(), "3".into()));
    let deleted = next(&mut w).unwrap();
    assert_eq!(summary(&deleted), ("DELETED".into(), "b".into(), "4".into()));
    assert_eq!(deleted["object"]["status"]["phase"], "Running");
    drop(w);
    assert_eq!(p.watchers(), 0);
    // Another namespace sees nothing.
    let mut other = open(&p, "/api/v1/namespaces/edge/pods", "watch=true");
    publish(&p, vec![pod("a", "Failed", "x")]);
    assert!(quiet(&mut other));
}

#[test]
fn watch_from_a_version_replays_what_came_after_it() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x")]);
    publish(&p, vec![pod("a", "Running", "x")]);
    publish(&p, vec![pod("a", "Running", "x"), pod("b", "Pending", "x")]);
    let mut w = open(&p, "/api/v1/pods", "watch=1&resourceVersion=1");
    assert_eq!(summary(&next(&mut w).unwrap()), ("MODIFIED".into(), "a".into(), "2".into()));
    assert_eq!(summary(&next(&mut w).unwrap()), ("ADDED".into(), "b".into(), "3".into()));
    assert!(quiet(&mut w));
    // From the list's version: only what comes next.
    let mut w = open(&p, "/api/v1/pods", "watch=1&resourceVersion=3");
    assert!(quiet(&mut w));
}

#[test]
fn a_version_older_than_the_ring_is_410_expired_and_so_is_a_watcher_left_behind() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x")]);
    // A watcher that is never read while the ring turns over.
    let mut slow = open(&p, "/api/v1/pods", "watch=1&resourceVersion=1");
    for i in 0..RING + 5 {
        publish(&p, vec![pod("a", &format!("Phase{i}"), "x")]);
    }
    let mut w = open(&p, "/api/v1/pods", "watch=1&resourceVersion=1");
    for s in [&mut w, &mut slow] {
        let e = next(s).unwrap();
        assert_eq!(e["type"], "ERROR");
        assert_eq!(e["object"]["kind"], "Status");
        assert_eq!(e["object"]["code"], 410);
        assert_eq!(e["object"]["reason"], "Expired");
        assert_eq!(e["object"]["message"], "too old resource version: 1 (6)");
        assert_eq!(next(s), None, "the watch ends after the error");
    }
    // Within the window: fine.
    let mut w = open(&p, "/api/v1/pods", &format!("watch=1&resourceVersion={RING}"));
    assert_eq!(summary(&next(&mut w).unwrap()).2, (RING + 1).to_string());
}

#[test]
fn selectors_turn_changes_in_and_out_of_them_into_added_and_deleted() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x"), pod("b", "Pending", "y")]);
    let mut by_label = open(&p, "/api/v1/pods", "watch=1&labelSelector=app%3Dx");
    assert_eq!(summary(&next(&mut by_label).unwrap()).1, "a");
    assert!(quiet(&mut by_label));
    // What `kubectl get pod b -w` sends.
    let mut by_name = open(
        &p,
        "/api/v1/namespaces/default/pods",
        "watch=1&fieldSelector=metadata.name%3Db&resourceVersion=2",
    );
    let mut running = open(&p, "/api/v1/pods", "watch=1&fieldSelector=status.phase%3DRunning");
    publish(&p, vec![pod("a", "Running", "x"), pod("b", "Pending", "x")]);
    assert_eq!(summary(&next(&mut by_label).unwrap()), ("MODIFIED".into(), "a".into(), "3".into()));
    assert_eq!(summary(&next(&mut by_label).unwrap()), ("ADDED".into(), "b".into(), "4".into()));
    assert_eq!(summary(&next(&mut by_name).unwrap()), ("MODIFIED".into(), "b".into(), "4".into()));
    assert!(quiet(&mut by_name));
    assert_eq!(summary(&next(&mut running).unwrap()), ("ADDED".into(), "a".into(), "3".into()));
    publish(&p, vec![pod("a", "Succeeded", "x"), pod("b", "Pending", "x")]);
    // Leaving the selection: DELETED with the last state that matched, at the new version.
    let left = next(&mut running).unwrap();
    assert_eq!(summary(&left), ("DELETED".into(), "a".into(), "5".into()));
    assert_eq!(left["object"]["status"]["phase"], "Running");
    // Replayed after a later publish dropped its old state: a change out of the selection is a
    // DELETED with the new state. The newest batch still has its old states: back in, ADDED.
    publish(&p, vec![pod("a", "Running", "x"), pod("b", "Pending", "x")]);
    let mut replay =
        open(&p, "/api/v1/pods", "watch=1&fieldSelector=status.phase%3DRunning&resourceVersion=4");
    let gone = next(&mut replay).unwrap();
    assert_eq!(summary(&gone), ("DELETED".into(), "a".into(), "5".into()));
    assert_eq!(gone["object"]["status"]["phase"], "Succeeded");
    assert_eq!(summary(&next(&mut replay).unwrap()), ("ADDED".into(), "a".into(), "6".into()));
}

#[test]
fn bookmarks_when_allowed_and_the_watch_ends_at_its_timeout() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x")]);
    let mut req =
        watch_request("/api/v1/pods", "watch=1&resourceVersion=1&allowWatchBookmarks=true", "", &p);
    req.bookmark_every = Duration::from_millis(20);
    let mut w = req.stream(p.clone());
    let b = next(&mut w).unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"],
        serde_json::json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}})
    );
    publish(&p, vec![pod("a", "Running", "x")]);
    assert_eq!(next(&mut w).unwrap()["type"], "MODIFIED");
    assert_eq!(next(&mut w).unwrap()["object"]["metadata"]["resourceVersion"], "2");
    // No bookmarks unless asked.
    let mut plain = open(&p, "/api/v1/pods", "watch=1&resourceVersion=2");
    assert!(quiet(&mut plain));
    let mut timed = open(&p, "/api/v1/pods", "watch=1&resourceVersion=2&timeoutSeconds=1");
    let start = std::time::Instant::now();
    assert_eq!(next(&mut timed), None);
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
}

#[test]
fn table_watches_send_one_row_per_event_with_columns_once() {
    let p = Arc::new(Published::default());
    publish(&p, vec![pod("a", "Pending", "x"), pod("b", "Pending", "x")]);
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let mut w =
        watch_request("/api/v1/namespaces/default/pods", "watch=1", accept, &p).stream(p.clone());
    let first = next(&mut w).unwrap();
    assert_eq!(first["type"], "ADDED");
    let t = &first["object"];
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["metadata"]["resourceVersion"], "1");
    assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["cells"][0], "a");
    assert_eq!(t["rows"][0]["cells"][2], "Pending");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let second = next(&mut w).unwrap();
    assert_eq!(second["object"]["columnDefinitions"], serde_json::json!([]));
    assert_eq!(second["object"]["rows"][0]["cells"][0], "b");
    // A watch opened from the list's version: its first row carries the columns though the
    // other watch already sent this change without them (lines are shared per form).
    let mut fresh =
        watch_request("/api/v1/pods", "watch=1&resourceVersion=2", accept, &p).stream(p.clone());
    publish(&p, vec![pod("a", "Running", "x"), pod("b", "Pending", "x")]);
    let m = next(&mut w).unwrap();
    assert_eq!(
        (m["type"].as_str(), &m["object"]["rows"][0]["cells"][2]),
        (Some("MODIFIED"), &Value::from("Running"))
    );
    assert_eq!(m["object"]["columnDefinitions"], serde_json::json!([]));
    let f = next(&mut fresh).unwrap();
    assert_eq!(f["object"]["columnDefinitions"][0]["name"], "Name");
    assert_eq!(f["object"]["rows"][0]["cells"][2], "Running");
    // `kubectl get pod a -w` first gets the pod, as a one-row Table too.
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let (metrics, snapshot) = (Metrics::default(), p.current());
    let mut req = Request::get("/api/v1/namespaces/default/pods/a", "");
    req.accept = accept;
    let one = handle(&req, &Context { snapshot: &snapshot, config: &config, metrics: &metrics });
    assert_eq!(
        (one.json()["kind"].as_str(), one.json()["rows"][0]["cells"][0].as_str()),
        (Some("Table"), Some("a"))
    );
    // includeObject=Object: the whole pod in the row.
    let mut full =
        watch_request("/api/v1/pods", "watch=1&includeObject=Object", accept, &p).stream(p.clone());
    assert_eq!(next(&mut full).unwrap()["object"]["rows"][0]["object"]["kind"], "Pod");
    // Events are rows too.
    p.publish(p.current().pods.clone(), Arc::new(vec![record("Started", 1)]), Default::default());
    let mut ev = watch_request("/api/v1/events", "watch=1", accept, &p).stream(p.clone());
    let e = next(&mut ev).unwrap();
    assert_eq!(e["object"]["columnDefinitions"][2]["name"], "Reason");
    assert_eq!(e["object"]["rows"][0]["cells"][2], "Started");
}

#[test]
fn secrets_are_watched_redacted_and_configmaps_deleted_with_their_last_state() {
    let p = Arc::new(Published::default());
    let key = |n: &str| ObjectKey { namespace: "default".into(), name: n.into() };
    let meta = |n: &str| ObjectMeta {
        name: Some(n.into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let mut d = DesiredState::default();
    d.secrets.insert(
        key("db"),
        Secret {
            metadata: meta("db"),
            data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        },
    );
    d.config_maps.insert(key("cfg"), ConfigMap { metadata: meta("cfg"), ..Default::default() });
    p.publish(vec![], Default::default(), Arc::new(d.clone()));
    let mut secrets = open(&p, "/api/v1/secrets", "watch=1");
    let mut cms = open(&p, "/api/v1/namespaces/default/configmaps", "watch=1");
    let added = next(&mut secrets).unwrap();
    assert_eq!(added["object"]["data"]["password"], "");
    assert!(!added.to_string().contains("aHVudGVyMg"), "{added}");
    assert_eq!(summary(&next(&mut cms).unwrap()).1, "cfg");
    d.secrets.get_mut(&key("db")).unwrap().data =
        Some([("password".to_string(), ByteString(b"hunter3".to_vec()))].into());
    d.config_maps.clear();
    p.publish(vec![], Default::default(), Arc::new(d));
    let modified = next(&mut secrets).unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert!(!modified.to_string().contains("aHVudGVyMw"), "{modified}");
    assert_eq!(summary(&next(&mut cms).unwrap()), ("DELETED".into(), "cfg".into(), "3".into()));
}

#[test]
fn bad_parameters_are_400_and_other_paths_are_not_watches() {
    let p = Published::default();
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let metrics = Metrics::default();
    let s = p.current();
    let ctx = Context { snapshot: &s, config: &config, metrics: &metrics };
    for q in [
        "watch=1&resourceVersion=x",
        "watch=1&timeoutSeconds=-1",
        "watch=1&fieldSelector=spec.containers%3Dx",
    ] {
        let r = handle(&Request::get("/api/v1/pods", q), &ctx);
        assert_eq!((r.status, &r.json()["kind"]), (400, &Value::from("Status")), "{q}");
    }
    assert!(matches!(handle(&Request::get("/api/v1/pods", "watch=0"), &ctx).body, Body::Json(_)));
    assert!(matches!(
        handle(&Request::get("/api/v1/namespaces/default/pods/a/log", "watch=1"), &ctx).status,
        404
    ));
}

#[test]
fn events_diff_follows_folding_appending_and_dropping_and_any_other_order() {
    let p = Published::default();
    let publish_events = |events: Vec<EventRecord>| {
        p.publish(vec![], Arc::new(events), Default::default());
        let s = p.current();
        (s.versions.events.as_slice().to_vec(), s.version)
    };
    let (a, b, c, d) = (record("A", 1), record("B", 1), record("C", 1), record("D", 1));
    assert_eq!(publish_events(vec![a.clone(), b.clone(), c.clone()]), (vec![1, 2, 3], 3));
    // The oldest dropped, one folded (count 2), one appended.
    let (versions, rv) = publish_events(vec![b.clone(), record("C", 2), d.clone()]);
    assert_eq!((versions, rv), (vec![2, 4, 5], 6));
    let types: Vec<(EventType, u64)> =
        p.watch.ring().changes.iter().skip(3).map(|c| (c.type_, c.rv)).collect();
    assert_eq!(types, [(EventType::Modified, 4), (EventType::Added, 5), (EventType::Deleted, 6)]);
    // Any other order is matched by key.
    let (versions, rv) = publish_events(vec![d, record("C", 2), b]);
    assert_eq!((versions, rv), (vec![5, 4, 2], 6));
}

fn node(ready: &str, heartbeat: i64) -> k8s_openapi::api::core::v1::Node {
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let at = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
    Node {
        metadata: ObjectMeta {
            name: Some("edge".into()),
            labels: Some([("kubernetes.io/os".to_string(), "linux".to_string())].into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                last_heartbeat_time: Some(at(heartbeat)),
                last_transition_time: Some(at(1_700_000_000)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_node_is_watched_and_modified_when_more_than_its_heartbeat_changes() {
    let p = Arc::new(Published::default());
    p.set_node(node("True", 1_700_000_000));
    publish(&p, vec![]);
    let mut all = open(&p, "/api/v1/nodes", "watch=1");
    let added = next(&mut all).unwrap();
    assert_eq!(summary(&added), ("ADDED".into(), "edge".into(), "1".into()));
    assert_eq!(added["object"]["kind"], "Node");
    let mut named = open(&p, "/api/v1/nodes", "watch=1&fieldSelector=metadata.name%3Dedge");
    assert_eq!(summary(&next(&mut named).unwrap()).0, "ADDED");
    let mut other = open(&p, "/api/v1/nodes", "watch=1&fieldSelector=metadata.name%3Dother");
    // A new heartbeat alone: no change, no new version.
    p.set_node(node("True", 1_700_000_010));
    publish(&p, vec![]);
    assert!(quiet(&mut all));
    assert_eq!(p.current().versions.node, 1);
    // A condition that changes: MODIFIED, to every watch that selects the node.
    p.set_node(node("False", 1_700_000_020));
    publish(&p, vec![]);
    let m = next(&mut all).unwrap();
    assert_eq!(summary(&m), ("MODIFIED".into(), "edge".into(), "2".into()));
    assert_eq!(m["object"]["status"]["conditions"][0]["status"], "False");
    assert_eq!(summary(&next(&mut named).unwrap()).0, "MODIFIED");
    assert!(quiet(&mut other));
    // `kubectl get nodes -w`: Table rows, resuming from the list's version.
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let mut rows =
        watch_request("/api/v1/nodes", "watch=1&resourceVersion=1", accept, &p).stream(p.clone());
    let row = next(&mut rows).unwrap();
    assert_eq!(row["type"], "MODIFIED");
    assert_eq!(row["object"]["kind"], "Table");
    assert_eq!(row["object"]["rows"][0]["cells"][0], "edge");
    assert_eq!(row["object"]["rows"][0]["cells"][1], "NotReady");
    // The list carries the version the watch resumes from; nodes are not namespaced.
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let (metrics, snapshot) = (Metrics::default(), p.current());
    let ctx = Context { snapshot: &snapshot, config: &config, metrics: &metrics };
    let list = handle(&Request::get("/api/v1/nodes", ""), &ctx);
    assert_eq!(list.json()["items"][0]["metadata"]["resourceVersion"], "2");
    let namespaced = handle(&Request::get("/api/v1/namespaces/default/nodes", "watch=1"), &ctx);
    assert_eq!(namespaced.status, 404);
}

#[test]
fn the_legacy_watch_paths_are_the_watches_of_their_collections() {
    let p = Arc::new(Published::default());
    p.set_node(node("True", 1_700_000_000));
    let mut other = pod("b", "Pending", "x");
    other.metadata.namespace = Some("kube-system".into());
    publish(&p, vec![pod("a", "Pending", "x"), other]);
    let names = |path: &str, query: &str| {
        let mut w = open(&p, path, query);
        let mut names = Vec::new();
        // Each event until 100 ms pass without one.
        while let Some(Some(b)) =
            smol::block_on(smol::future::or(async { Some(w.next().await) }, async {
                smol::Timer::after(Duration::from_millis(100)).await;
                None
            }))
        {
            let e: Value = serde_json::from_slice(&b).unwrap();
            names.push(format!("{} {}", e["type"].as_str().unwrap(), summary(&e).1));
        }
        names
    };
    // No `watch=1` needed on these paths.
    assert_eq!(names("/api/v1/watch/pods", ""), ["ADDED a", "ADDED b"]);
    assert_eq!(names("/api/v1/watch/namespaces/default/pods", ""), ["ADDED a"]);
    assert_eq!(names("/api/v1/watch/namespaces/default/pods/a", ""), ["ADDED a"]);
    assert!(names("/api/v1/watch/namespaces/kube-system/pods/a", "").is_empty());
    assert_eq!(names("/api/v1/watch/nodes", ""), ["ADDED edge"]);
    assert_eq!(names("/api/v1/watch/nodes/edge", ""), ["ADDED edge"]);
    assert!(names("/api/v1/watch/nodes/other", "").is_empty());
    // The name and the query's selectors both apply; so does resourceVersion.
    assert!(names("/api/v1/watch/pods", "labelSelector=app%3Dy").is_empty());
    let mut w = open(&p, "/api/v1/watch/namespaces/default/pods/a", "resourceVersion=3");
    assert!(quiet(&mut w));
    publish(&p, vec![pod("a", "Running", "x"), pod("c", "Pending", "x")]);
    assert_eq!(summary(&next(&mut w).unwrap()).0, "MODIFIED");
    assert!(quiet(&mut w), "c is not a");
    for kind in ["events", "configmaps", "secrets"] {
        let path = format!("/api/v1/watch/namespaces/default/{kind}");
        let _ = watch_request(&path, "", "", &p);
        let _ = watch_request(&format!("/api/v1/watch/{kind}"), "", "", &p);
        let _ = watch_request(&format!("{path}/one"), "", "", &p);
    }
    // Not watches: a namespaced kind named without its namespace, a namespaced node, others.
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    let (metrics, snapshot) = (Metrics::default(), p.current());
    let ctx = Context { snapshot: &snapshot, config: &config, metrics: &metrics };
    for path in [
        "/api/v1/watch/pods/a",
        "/api/v1/watch/namespaces/default/nodes",
        "/api/v1/watch/services",
        "/api/v1/watch/namespaces/default/pods/a/log",
    ] {
        assert_eq!(handle(&Request::get(path, ""), &ctx).status, 404, "{path}");
    }
}
