use std::path::{Path, PathBuf};

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
        err.ends_with(&format!(
            "has schema version 99, newer than this outpost knows ({}): upgrade outpost",
            migrations::latest()
        )),
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

/// A database as a killed agent leaves it: records in the WAL, not checkpointed.
fn killed_with_wal(path: &Path) {
    let mut s = Store::open(path).unwrap();
    s.conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    for i in 0..5 {
        s.commit(&[pod(&format!("p{i}"), "{}")], &[], &[event("Started", &format!("m{i}"), i)])
            .unwrap();
    }
    drop(s);
    assert!(wal(path).metadata().unwrap().len() > 0, "the records are in the WAL");
}

fn wal(path: &Path) -> PathBuf {
    recover::companion(path, "-wal")
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

#[track_caller]
fn recovered(path: &Path) -> Recovery {
    let (s, recovery) = Store::open_or_recover(path, 1_700_000_000).unwrap();
    let recovery = recovery.expect("damage found");
    assert!(s.pods().unwrap().is_empty(), "a fresh database");
    assert_eq!(s.schema_version().unwrap(), migrations::latest());
    assert_eq!(recovery.kept, path.with_file_name("state.db.damaged-1700000000"));
    recovery
}

#[track_caller]
fn intact(path: &Path) -> Store {
    let (s, recovery) = Store::open_or_recover(path, 1_700_000_000).unwrap();
    assert_eq!(recovery, None);
    assert!(!path.with_file_name("state.db.damaged-1700000000").exists());
    s
}

#[test]
fn a_healthy_database_opens_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    assert_eq!(intact(&path).pods().unwrap(), vec![], "a new database is no damage");
    killed_with_wal(&path);
    assert_eq!(intact(&path).pods().unwrap().len(), 5);
}

#[test]
fn a_truncated_database_is_kept_aside_with_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    let wal_bytes = std::fs::read(wal(&path)).unwrap();
    std::fs::File::create(&path).unwrap();
    let r = recovered(&path);
    assert_eq!(r.damage, "the database file is empty (truncated to 0 bytes)");
    // SQLite would have deleted this WAL, and the records in it with it.
    assert_eq!(std::fs::read(recover::companion(&r.kept, "-wal")).unwrap(), wal_bytes);
    assert_eq!(std::fs::metadata(&r.kept).unwrap().len(), 0);
}

#[test]
fn a_file_that_is_not_a_database_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let r = recovered(&path);
    assert_eq!(r.damage, "the database file has no SQLite header");
    assert_eq!(std::fs::read(&r.kept).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn a_torn_wal_frame_before_committed_ones_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    let copy = dir.path().join("copy.db");
    // Garbage in the first frame's page, as a power cut leaves a page half written.
    overwrite(&wal(&path), 32 + 24 + 100, &[0xa5; 64]);
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(wal(&path), wal(&copy)).unwrap();
    let r = recovered(&path);
    assert_eq!(r.damage, "WAL frame 0 is torn and committed frames follow it: they are lost");
    assert!(recover::companion(&r.kept, "-wal").exists());
    // What plain SQLite makes of it: the records are gone without a word.
    assert!(Store::open(&copy).unwrap().pods().unwrap().is_empty());
}

#[test]
fn a_garbage_wal_header_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    overwrite(&wal(&path), 0, &[0xff; 32]);
    let r = recovered(&path);
    assert_eq!(r.damage, "the WAL header is not a WAL header: every transaction in it is lost");
}

#[test]
fn a_torn_last_frame_is_a_crash_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    // A transaction cut off while being written (its commit frame never made it): SQLite
    // ignores it, and nothing committed is lost.
    let len = wal(&path).metadata().unwrap().len();
    overwrite(&wal(&path), len - 200, &[0xa5; 64]);
    let pods = intact(&path).pods().unwrap();
    assert_eq!(pods.len(), 4, "the last transaction was the torn one: {pods:?}");
}

#[test]
fn a_missing_shm_is_rebuilt_by_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    let shm = recover::companion(&path, "-shm");
    std::fs::remove_file(&shm).unwrap();
    assert_eq!(intact(&path).pods().unwrap().len(), 5);
}

#[test]
fn a_database_with_garbage_pages_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        let batch: Vec<EventRecord> =
            (0..200).map(|i| event("Started", &format!("m{i}"), i)).collect();
        s.commit(&[pod("a", "{}")], &[], &batch).unwrap();
    }
    assert!(!wal(&path).exists(), "checkpointed on close");
    // Garbage over the middle of the file: b-tree pages, not the header.
    let len = path.metadata().unwrap().len();
    overwrite(&path, len / 2, &vec![0xa5; 4096]);
    let r = recovered(&path);
    assert!(
        r.damage.starts_with("quick_check: ") || r.damage.contains("malformed"),
        "{}",
        r.damage
    );
}

#[test]
fn a_missing_database_beside_its_wal_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    killed_with_wal(&path);
    std::fs::remove_file(&path).unwrap();
    let r = recovered(&path);
    assert_eq!(r.damage, "the database file is missing beside its WAL");
    assert!(recover::companion(&r.kept, "-wal").exists());
}

#[test]
fn a_second_recovery_in_the_same_second_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"one").unwrap();
    recovered(&path);
    drop(Store::open(&path));
    std::fs::write(&path, b"two").unwrap();
    let (_, r) = Store::open_or_recover(&path, 1_700_000_000).unwrap();
    let kept = r.unwrap().kept;
    assert_eq!(kept, path.with_file_name("state.db.damaged-1700000000.1"));
    assert_eq!(std::fs::read(kept).unwrap(), b"two");
}

#[test]
fn a_newer_schema_is_refused_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    Store::open(&path).unwrap();
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(Store::open_or_recover(&path, 1), Err(StoreError::TooNew { found: 99, .. })));
    assert!(path.exists());
}

#[test]
fn only_the_newest_sets_are_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    for unix in [10, 30, 20, 30, 40] {
        std::fs::write(&path, b"junk").unwrap();
        std::fs::write(recover::companion(&path, "-wal"), b"").unwrap();
        Store::open_or_recover(&path, unix).unwrap().1.expect("damage found");
        drop(std::fs::remove_file(&path));
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // 10 and 20 are gone; 30 and 30.1 (the same second) and 40 stay.
    assert_eq!(
        names,
        [
            "state.db.damaged-30",
            "state.db.damaged-30-wal",
            "state.db.damaged-30.1",
            "state.db.damaged-30.1-wal",
            "state.db.damaged-40",
            "state.db.damaged-40-wal",
        ]
    );
}

#[test]
fn a_database_truncated_halfway_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        let batch: Vec<EventRecord> =
            (0..500).map(|i| event("Started", &format!("m{i}"), i)).collect();
        s.commit(&[pod("a", "{}")], &[], &batch).unwrap();
    }
    let len = path.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let r = recovered(&path);
    assert_eq!(std::fs::metadata(&r.kept).unwrap().len(), len / 2);
    assert_eq!(r.damage, "database disk image is malformed");
}

#[test]
fn a_database_that_fails_quick_check_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        let batch: Vec<EventRecord> =
            (0..200).map(|i| event("Started", &format!("m{i}"), i)).collect();
        s.commit(&[pod("a", "{}")], &[], &batch).unwrap();
        s.conn.execute_batch("DELETE FROM events WHERE id < 100").unwrap();
    }
    // The header's count of free pages: wrong, but nothing SQLite trips over when reading.
    overwrite(&path, 36, &77u32.to_be_bytes());
    let r = recovered(&path);
    assert_eq!(r.damage, "quick_check: Freelist: size is 3 but should be 77");
}

fn revision(hash: &str, at: i64, result: &str, reason: Option<&str>) -> RevisionRecord {
    RevisionRecord {
        namespace: "default".into(),
        name: "web".into(),
        hash: hash.into(),
        pod: format!("{{\"uid\":\"{hash}\"}}"),
        config: "{}".into(),
        at,
        result: result.into(),
        reason: reason.map(Into::into),
    }
}

fn recorded(r: RevisionRecord) -> HistoryRecord {
    HistoryRecord::Revision(r)
}

/// A pod name that left the manifests loses its whole history, and only its own; a revision
/// after the forgetting (in the same commit) starts a new one.
#[test]
fn forgetting_a_pod_removes_its_revisions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let mut db = revision("x", 2, "Ready", None);
    db.name = "db".into();
    let before = [recorded(revision("a", 1, "Ready", None)), recorded(db.clone())];
    s.commit_with_revisions(&[], &[], &[], &before).unwrap();
    let forget = HistoryRecord::Forget { namespace: "default".into(), name: "web".into() };
    let after = [forget, recorded(revision("c", 7, "Pending", None))];
    s.commit_with_revisions(&[], &[], &[], &after).unwrap();
    assert_eq!(s.revisions(Some(("default", "web"))).unwrap(), [revision("c", 7, "Pending", None)]);
    assert_eq!(s.revisions(Some(("default", "db"))).unwrap(), [db]);
}

/// A revision's result updates the row its gate started; history survives reopening.
#[test]
fn revisions_are_one_row_per_rollout_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).unwrap();
        s.commit_with_revisions(&[], &[], &[], &[recorded(revision("a", 1, "Ready", None))])
            .unwrap();
        s.commit_with_revisions(&[], &[], &[], &[recorded(revision("b", 5, "Pending", None))])
            .unwrap();
        let failed = revision("b", 9, "Failed", Some("CrashLoopBackOff"));
        s.commit_with_revisions(&[], &[], &[], &[recorded(failed)]).unwrap();
        let mut other = revision("x", 2, "Ready", None);
        other.name = "db".into();
        s.commit_with_revisions(&[], &[], &[], &[recorded(other)]).unwrap();
    }
    let s = Store::open(&path).unwrap();
    let web = s.revisions(Some(("default", "web"))).unwrap();
    assert_eq!(
        web,
        [revision("a", 1, "Ready", None), revision("b", 5, "Failed", Some("CrashLoopBackOff"))]
    );
    assert_eq!(s.revisions(None).unwrap().len(), 3);
}

#[test]
fn revisions_are_pruned_per_pod() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    for i in 0..MAX_REVISIONS + 5 {
        let r = revision(&format!("h{i}"), i, "Ready", None);
        s.commit_with_revisions(&[], &[], &[], &[recorded(r)]).unwrap();
    }
    let web = s.revisions(Some(("default", "web"))).unwrap();
    assert_eq!(web.len() as i64, MAX_REVISIONS);
    assert_eq!(web[0].hash, "h5");
}

#[test]
fn revisions_of_many_pods_are_bounded_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let rows: Vec<HistoryRecord> = (0..MAX_REVISIONS_IN_ALL + 3)
        .map(|i| {
            // Not Ready: each name's last Ready revision is never pruned.
            let mut r = revision(&format!("h{i}"), i, "Failed", Some("ErrImagePull"));
            r.name = format!("pod-{i}");
            recorded(r)
        })
        .collect();
    s.commit_with_revisions(&[], &[], &[], &rows).unwrap();
    let all = s.revisions(None).unwrap();
    assert_eq!(all.len() as i64, MAX_REVISIONS_IN_ALL);
    assert_eq!(all[0].name, "pod-3");
}

/// The Ready revision again (its ConfigMaps or Secrets were edited alone): its row takes the
/// new config, instead of a row per edit pushing older revisions out of the history.
#[test]
fn a_ready_revision_recorded_again_updates_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.commit_with_revisions(&[], &[], &[], &[recorded(revision("a", 1, "Ready", None))]).unwrap();
    let mut again = revision("a", 8, "Ready", None);
    again.config = r#"{"configMaps":[]}"#.into();
    s.commit_with_revisions(&[], &[], &[], &[recorded(again)]).unwrap();
    let mut expected = revision("a", 1, "Ready", None);
    expected.config = r#"{"configMaps":[]}"#.into();
    assert_eq!(s.revisions(None).unwrap(), [expected]);
}

/// Pruning keeps the last Ready revision however many failed after it: it is what a restarted
/// agent rolls back to (without it, the failed content would run as a first version).
#[test]
fn pruning_keeps_the_last_ready_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.commit_with_revisions(&[], &[], &[], &[recorded(revision("a", 0, "Ready", None))]).unwrap();
    for i in 1..=MAX_REVISIONS + 5 {
        let r = revision(&format!("f{i}"), i, "Failed", Some("ErrImagePull"));
        s.commit_with_revisions(&[], &[], &[], &[recorded(r)]).unwrap();
    }
    let web = s.revisions(Some(("default", "web"))).unwrap();
    assert_eq!(web[0], revision("a", 0, "Ready", None));
    assert_eq!(web.len() as i64, MAX_REVISIONS + 1);
    assert_eq!(web[1].hash, "f6");
    // Bounded in all too.
    let rows: Vec<HistoryRecord> = (0..MAX_REVISIONS_IN_ALL)
        .map(|i| {
            let mut r = revision(&format!("h{i}"), i, "Failed", Some("ErrImagePull"));
            r.name = format!("pod-{i}");
            recorded(r)
        })
        .collect();
    s.commit_with_revisions(&[], &[], &[], &rows).unwrap();
    let web = s.revisions(Some(("default", "web"))).unwrap();
    assert_eq!(web, [revision("a", 0, "Ready", None)]);
}

/// A gated revision's result while the next edit's failed pull came after its `Pending` row
/// (the next edit is pulled during the gate): it still updates that row.
#[test]
fn a_gate_result_after_another_revision_updates_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let rows = [
        recorded(revision("a", 1, "Ready", None)),
        recorded(revision("b", 5, "Pending", None)),
        recorded(revision("c", 6, "Failed", Some("ErrImagePull"))),
        recorded(revision("b", 15, "Ready", None)),
    ];
    s.commit_with_revisions(&[], &[], &[], &rows).unwrap();
    assert_eq!(
        s.revisions(None).unwrap(),
        [
            revision("a", 1, "Ready", None),
            revision("b", 5, "Ready", None),
            revision("c", 6, "Failed", Some("ErrImagePull")),
        ]
    );
}
