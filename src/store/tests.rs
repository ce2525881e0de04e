use super::*;

fn event(reason: &str, message: &str, at: i64) -> EventRecord {
    EventRecord {
        pod_uid: "u1".into(),
        namespace: "default".into(),
        pod_name: "web".into(),
        container: Some("app".into()),
        type_: "Warning".into(),
        reason: reason.into(),
        message: message.into(),
        count: 1,
        first_seen: at,
        last_seen: at,
    }
}

fn pod(uid: &str, state: &str) -> PodRecord {
    PodRecord {
        uid: uid.into(),
        namespace: "default".into(),
        name: format!("pod-{uid}"),
        pod: "{}".into(),
        engine_state: state.into(),
    }
}

#[test]
fn pods_survive_reopening_and_are_upserted_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        s.commit(&[pod("a", "{\"restarts\":1}"), pod("b", "{}")], &[], &[]).unwrap();
        s.commit(&[pod("a", "{\"restarts\":2}")], &["b".into()], &[]).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.pods().unwrap(), vec![pod("a", "{\"restarts\":2}")]);
    assert_eq!(s.schema_version().unwrap(), migrations::latest());
}

#[test]
fn repeated_events_are_folded_into_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.commit(&[], &[], &[event("BackOff", "Back-off restarting failed container", 10)]).unwrap();
    s.commit(
        &[],
        &[],
        &[
            event("BackOff", "Back-off restarting failed container", 20),
            event("Killing", "Stopping", 21),
        ],
    )
    .unwrap();
    let events = s.events(Some("default")).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].reason.as_str(), events[0].count, events[0].first_seen, events[0].last_seen),
        ("BackOff", 2, 10, 20)
    );
    assert_eq!(events[1].reason, "Killing");
    assert!(s.events(Some("other")).unwrap().is_empty());
}

#[test]
fn old_events_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let batch: Vec<EventRecord> =
        (0..MAX_EVENTS as i64 + 10).map(|i| event("Started", &format!("m{i}"), i)).collect();
    s.commit(&[], &[], &batch).unwrap();
    let events = s.events(None).unwrap();
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(events[0].message, "m10", "the oldest ten are gone");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    Store::open(&path).unwrap();
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(&path).err().expect("refused").to_string();
    assert!(
        err.ends_with("has schema version 99, newer than this outpost knows (1): upgrade outpost"),
        "{err}"
    );
}

#[test]
fn a_failed_batch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.commit(&[pod("a", "{}")], &[], &[]).unwrap();
    // Break the events table so the second part of the batch fails.
    s.conn.execute_batch("DROP TABLE events").unwrap();
    assert!(s.commit(&[pod("b", "{}")], &[], &[event("X", "y", 1)]).is_err());
    assert_eq!(s.pods().unwrap(), vec![pod("a", "{}")], "pod b was rolled back with the batch");
}
