//! What inotify cannot see: the periodic and requested rescans, a directory deleted and
//! made again.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use outpost::watch::{Change, WatchOptions};

use crate::watch::*;

#[test]
fn the_periodic_rescan_sees_what_inotify_cannot() {
    let options = WatchOptions { rescan_every: Duration::from_millis(200), ..Default::default() };
    let (mut h, target) = symlinked(options);
    let uid1 = h.uid("web");
    write_atomic(&target, &pod("web", "busybox:2"));
    let seen = h.until("web replaced by the rescan", |s| s.pods[&key("web")].uid() != uid1);
    let uid2 = h.uid("web");
    assert_eq!(
        seen.changes,
        vec![Change::PodReplaced {
            key: key("web"),
            old_uid: uid1,
            new_uid: uid2.clone(),
            source: h.path("web.yaml")
        }]
    );

    fs::remove_file(&target).unwrap();
    let seen = h.until("dangling web removed", |s| !s.pods.contains_key(&key("web")));
    assert_eq!(seen.changes, vec![Change::PodRemoved { key: key("web"), uid: uid2 }]);
    assert_eq!(h.pod_names(), BTreeSet::from(["api".to_string()]));
}

#[test]
fn a_requested_rescan_sees_what_inotify_cannot() {
    // The same path as an inotify queue overflow: a full rescan at once.
    let options = WatchOptions { rescan_every: Duration::from_secs(3600), ..Default::default() };
    let (mut h, target) = symlinked(options);
    let uid1 = h.uid("web");
    write_atomic(&target, &pod("web", "busybox:2"));
    let seen = h.settle();
    assert_eq!(seen.changes, vec![], "no rescan yet, so no change");
    h.watcher.rescan();
    let seen = h.settle();
    assert_eq!(
        seen.changes,
        vec![Change::PodReplaced {
            key: key("web"),
            old_uid: uid1,
            new_uid: h.uid("web"),
            source: h.path("web.yaml"),
        }]
    );

    // Deleting the symlink itself is an ordinary event.
    let api = h.uid("api");
    fs::remove_file(h.path("api.yaml")).unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![Change::PodRemoved { key: key("api"), uid: api }]);
    assert!(h.root.join("outside/api.yaml").exists());
}

#[test]
fn a_deleted_and_recreated_directory_is_watched_again() {
    let options = WatchOptions { rescan_every: Duration::from_millis(200), ..Default::default() };
    let mut h = Harness::with(options, |dir| {
        fs::write(dir.join("web.yaml"), pod("web", "busybox")).unwrap()
    });
    let uid = h.uid("web");

    fs::remove_dir_all(&h.dir).unwrap();
    let seen = h.until("web removed with its directory", |s| s.pods.is_empty());
    assert_eq!(seen.changes, vec![Change::PodRemoved { key: key("web"), uid: uid.clone() }]);

    fs::create_dir(&h.dir).unwrap();
    write_atomic(&h.path("web.yaml"), &pod("web", "busybox"));
    let seen = h.until("web back", |s| s.pods.contains_key(&key("web")));
    assert_eq!(
        seen.changes,
        vec![Change::PodAdded { key: key("web"), uid, source: h.path("web.yaml") }]
    );

    // Events flow again: the sentinel, then an edit.
    h.settle();
    write_atomic(&h.path("api.yaml"), &pod("api", "busybox"));
    let seen = h.settle();
    assert!(
        matches!(&seen.changes[..], [Change::PodAdded { key, .. }] if key.name == "api"),
        "{seen:#?}"
    );
}
