//! The manifest watcher against a real directory. Every wait is on the update channel with a
//! generous timeout; "nothing else happened" is proven with a sentinel file written afterwards
//! (events are handled in order, so anything caused earlier arrives before the sentinel).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost::manifest::{DesiredState, ManifestError, ObjectKey};
use outpost::watch::{Change, ObjectAction, ObjectChange, Update, WatchOptions, Watcher};
use smol::channel::Receiver;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: {image}\n"
    )
}

pub(crate) fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

pub(crate) fn recv(rx: &Receiver<Update>) -> Update {
    smol::block_on(smol::future::or(
        async { Some(rx.recv().await.expect("watcher stopped")) },
        async {
            smol::Timer::after(TIMEOUT).await;
            None
        },
    ))
    .unwrap_or_else(|| panic!("no update within {TIMEOUT:?}"))
}

/// Writes like editors and config tools do: a hidden temp file renamed into place.
pub(crate) fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

pub(crate) struct Harness {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) watcher: Watcher,
    pub(crate) rx: Receiver<Update>,
    pub(crate) state: Arc<DesiredState>,
    pub(crate) sentinels: usize,
    /// The update `start` sent.
    pub(crate) initial: Update,
}

/// What arrived while waiting.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) changes: Vec<Change>,
    pub(crate) objects: Vec<ObjectChange>,
    pub(crate) errors: Vec<ManifestError>,
    pub(crate) updates: usize,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with(WatchOptions::default(), |_| {})
    }

    /// `prepare` fills the directory before the watcher starts.
    pub(crate) fn with(options: WatchOptions, prepare: impl FnOnce(&Path)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("edge.d");
        fs::create_dir(&dir).unwrap();
        prepare(&dir);
        let (watcher, rx) = Watcher::start(&dir, options).unwrap();
        let initial = recv(&rx);
        let state = initial.state.clone();
        Harness { _tmp: tmp, root, dir, watcher, rx, state, sentinels: 0, initial }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Receives updates until `done` holds for the state; returns everything seen.
    pub(crate) fn until(&mut self, what: &str, done: impl Fn(&DesiredState) -> bool) -> Seen {
        let mut seen = Seen::default();
        while !done(&self.state) {
            let update =
                smol::block_on(smol::future::or(async { self.rx.recv().await.ok() }, async {
                    smol::Timer::after(TIMEOUT).await;
                    None
                }))
                .unwrap_or_else(|| panic!("timed out waiting for {what}; seen so far: {seen:#?}"));
            assert!(
                !update.changes.is_empty()
                    || !update.objects.is_empty()
                    || !update.errors.is_empty(),
                "empty update: {update:?}"
            );
            seen.updates += 1;
            seen.changes.extend(update.changes);
            seen.objects.extend(update.objects);
            seen.errors.extend(update.errors);
            self.state = update.state;
        }
        seen
    }

    /// Writes a fresh sentinel pod and waits for it; returns everything seen before it.
    pub(crate) fn settle(&mut self) -> Seen {
        self.sentinels += 1;
        let name = format!("zz-sentinel-{}", self.sentinels);
        write_atomic(&self.path(&format!("{name}.yaml")), &pod(&name, "busybox"));
        let k = key(&name);
        let mut seen = self.until(&name, |s| s.pods.contains_key(&k));
        let before = seen.changes.len();
        seen.changes.retain(|c| c.key() != &k);
        assert_eq!(seen.changes.len(), before - 1, "sentinel added once: {seen:#?}");
        seen
    }

    pub(crate) fn uid(&self, name: &str) -> String {
        self.state.pods[&key(name)].uid().to_string()
    }

    pub(crate) fn pod_names(&self) -> BTreeSet<String> {
        self.state
            .pods
            .keys()
            .map(|k| k.name.clone())
            .filter(|n| !n.starts_with("zz-sentinel-"))
            .collect()
    }
}

#[test]
fn missing_directory_is_created_and_the_empty_state_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/edge.d");
    let (_watcher, rx) = Watcher::start(&dir, WatchOptions::default()).unwrap();
    assert!(dir.is_dir());
    let first = recv(&rx);
    assert_eq!(*first.state, DesiredState::default());
    assert_eq!(first.changes, vec![]);
    assert_eq!(first.errors, vec![]);
}

#[test]
fn a_file_where_the_directory_should_be_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("edge.d");
    fs::write(&file, "").unwrap();
    let err = Watcher::start(&file, WatchOptions::default()).err().expect("must fail");
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
}

#[test]
fn initial_update_has_existing_pods_and_errors() {
    let h = Harness::with(WatchOptions::default(), |dir| {
        fs::write(dir.join("a-web.yaml"), pod("web", "busybox")).unwrap();
        fs::write(dir.join("b-web.yaml"), pod("web", "busybox:2")).unwrap();
        fs::write(
            dir.join("bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: [\n",
        )
        .unwrap();
        fs::write(dir.join(".hidden.yaml"), pod("hidden", "busybox")).unwrap();
    });
    assert_eq!(
        h.initial.changes,
        vec![Change::PodAdded { key: key("web"), uid: h.uid("web"), source: h.path("a-web.yaml") }]
    );
    assert_eq!(h.pod_names(), BTreeSet::from(["web".to_string()]));
    let mut error_files: Vec<_> = h.initial.errors.iter().map(|e| e.path.clone()).collect();
    error_files.sort();
    assert_eq!(
        error_files,
        vec![h.path("b-web.yaml"), h.path("bad.yaml")],
        "{:#?}",
        h.initial.errors
    );
    let duplicate = h.initial.errors.iter().find(|e| e.path == h.path("b-web.yaml")).unwrap();
    assert!(duplicate.message.contains("a-web.yaml"), "{duplicate}");
}

#[test]
fn create_edit_delete() {
    let mut h = Harness::new();
    let web = h.path("web.yaml");

    fs::write(&web, pod("web", "busybox")).unwrap();
    let seen = h.until("web added", |s| s.pods.contains_key(&key("web")));
    let uid1 = h.uid("web");
    assert_eq!(
        seen.changes,
        vec![Change::PodAdded { key: key("web"), uid: uid1.clone(), source: web.clone() }]
    );
    assert_eq!(seen.errors, vec![]);

    fs::write(&web, pod("web", "busybox:2")).unwrap();
    let seen = h.until("web replaced", |s| s.pods[&key("web")].uid() != uid1);
    let uid2 = h.uid("web");
    assert_eq!(
        seen.changes,
        vec![Change::PodReplaced {
            key: key("web"),
            old_uid: uid1,
            new_uid: uid2.clone(),
            source: web.clone()
        }]
    );
    // An in-place rewrite truncates first; if a read falls in between, that is the only error.
    assert!(
        seen.errors.iter().all(|e| e.message.starts_with("file is empty")),
        "{:#?}",
        seen.errors
    );

    fs::remove_file(&web).unwrap();
    let seen = h.until("web removed", |s| !s.pods.contains_key(&key("web")));
    assert_eq!(seen.changes, vec![Change::PodRemoved { key: key("web"), uid: uid2 }]);
    assert_eq!(h.pod_names(), BTreeSet::new());
}

#[test]
fn rename_into_place_is_exactly_one_change() {
    let mut h = Harness::new();
    let web = h.path("web.yaml");

    write_atomic(&web, &pod("web", "busybox"));
    let seen = h.settle();
    let uid1 = h.uid("web");
    assert_eq!(
        seen.changes,
        vec![Change::PodAdded { key: key("web"), uid: uid1.clone(), source: web.clone() }]
    );
    assert_eq!(seen.errors, vec![]);

    write_atomic(&web, &pod("web", "busybox:2"));
    let seen = h.settle();
    let uid2 = h.uid("web");
    assert_ne!(uid1, uid2);
    assert_eq!(
        seen.changes,
        vec![Change::PodReplaced {
            key: key("web"),
            old_uid: uid1,
            new_uid: uid2.clone(),
            source: web.clone()
        }]
    );
    assert_eq!(seen.errors, vec![]);

    // Same content under another name: the pod keeps running, only its source moves.
    let moved = h.path("web-moved.yaml");
    fs::rename(&web, &moved).unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(h.state.pods[&key("web")].source, moved);
    assert_eq!(h.uid("web"), uid2);
}

#[test]
fn temp_hidden_and_foreign_files_are_ignored() {
    let mut h = Harness::new();
    let ignored = [
        ".web.yaml",
        ".web.yaml.swp",
        ".#web.yaml",
        "#web.yaml#",
        "web.yaml~",
        "web.yaml.swp",
        "web.yaml.swx",
        "web.yaml.swo",
        "web.yaml.tmp",
        "web.yaml.part",
        "web.yaml.dpkg-new",
        "web.yaml.rpmnew",
        "4913",
        "notes.txt",
        "README",
    ];
    for (i, name) in ignored.iter().enumerate() {
        fs::write(h.path(name), pod(&format!("ignored{i}"), "busybox")).unwrap();
    }
    fs::create_dir(h.path("sub")).unwrap();
    fs::write(h.path("sub/nested.yaml"), pod("nested", "busybox")).unwrap();
    fs::create_dir(h.path("dir.yaml")).unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(seen.errors, vec![]);
    assert_eq!(h.pod_names(), BTreeSet::new());

    // A full rescan ignores them too.
    h.watcher.rescan();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(h.pod_names(), BTreeSet::new());
}

#[test]
fn an_invalid_file_keeps_its_last_good_pod_and_reports_once() {
    let mut h = Harness::new();
    let web = h.path("web.yaml");
    write_atomic(&web, &pod("web", "busybox"));
    h.settle();
    let uid1 = h.uid("web");

    let typo = format!("{}    imagePulPolicy: Always\n", pod("web", "busybox:2"));
    write_atomic(&web, &typo);
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(seen.errors.len(), 1, "{:#?}", seen.errors);
    let error = &seen.errors[0];
    assert_eq!((error.path.as_path(), error.line, error.column), (web.as_path(), 8, 5), "{error}");
    assert_eq!(error.field, "spec.containers[0].imagePulPolicy");
    assert!(error.to_string().starts_with(&format!("{}:8:5: ", web.display())), "{error}");
    assert_eq!(h.uid("web"), uid1, "the last valid pod keeps running");

    // Neither a rescan nor an unrelated edit reports the same errors again.
    h.watcher.rescan();
    let seen = h.settle();
    assert_eq!((seen.changes, seen.errors), (vec![], vec![]));

    // Emptying the file is treated as invalid too.
    fs::write(&web, "").unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(seen.errors.len(), 1, "{:#?}", seen.errors);
    assert!(seen.errors[0].message.starts_with("file is empty"), "{}", seen.errors[0]);
    assert_eq!(h.uid("web"), uid1);

    write_atomic(&web, &pod("web", "busybox:2"));
    let seen = h.settle();
    let uid2 = h.uid("web");
    assert_eq!(
        seen.changes,
        vec![Change::PodReplaced {
            key: key("web"),
            old_uid: uid1,
            new_uid: uid2,
            source: web.clone()
        }]
    );
    assert_eq!(seen.errors, vec![]);

    // A file that never parsed contributes nothing.
    write_atomic(
        &h.path("never.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec: {}\n",
    );
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert!(!seen.errors.is_empty());
    assert!(seen.errors.iter().all(|e| e.path == h.path("never.yaml")), "{:#?}", seen.errors);
    assert_eq!(h.pod_names(), BTreeSet::from(["web".to_string()]));
}

fn pod_reading(name: &str, extra_container: &str, volumes: &str) -> String {
    format!("{}{extra_container}{volumes}", pod(name, "busybox"))
}

fn config_map(value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config}}\ndata: {{level: {value}}}\n")
}

fn secret(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{token: {value}}}\n"
    )
}

#[test]
fn a_config_edit_reaches_exactly_the_pods_referencing_it() {
    let mut h = Harness::with(WatchOptions::default(), |dir| {
        let env_from = "    envFrom:\n    - configMapRef: {name: app-config}\n";
        let volume = "  volumes:\n  - name: cfg\n    configMap: {name: app-config}\n";
        let secret_env = "    env:\n    - name: TOKEN\n      valueFrom: {secretKeyRef: {name: creds, key: token}}\n";
        fs::write(dir.join("a.yaml"), pod_reading("a", env_from, "")).unwrap();
        fs::write(dir.join("b.yaml"), pod_reading("b", "", volume)).unwrap();
        fs::write(dir.join("c.yaml"), pod("c", "busybox")).unwrap();
        fs::write(dir.join("d.yaml"), pod_reading("d", secret_env, "")).unwrap();
        fs::write(dir.join("app-config.yaml"), config_map("info")).unwrap();
        fs::write(dir.join("creds.yaml"), secret("one")).unwrap();
    });
    assert_eq!(h.initial.errors, vec![]);
    assert_eq!(h.pod_names(), ["a", "b", "c", "d"].map(String::from).into());
    let config_changed = |h: &Harness, names: &[&str], reference: &str| -> Vec<Change> {
        names
            .iter()
            .map(|n| Change::PodConfigChanged {
                key: key(n),
                uid: h.uid(n),
                reference: reference.into(),
            })
            .collect()
    };

    write_atomic(&h.path("app-config.yaml"), &config_map("debug"));
    let seen = h.settle();
    assert_eq!(seen.changes, config_changed(&h, &["a", "b"], "ConfigMap default/app-config"));
    assert_eq!(
        seen.changes[0].to_string(),
        "pod default/a: referenced ConfigMap default/app-config changed"
    );

    write_atomic(&h.path("creds.yaml"), &secret("two"));
    let seen = h.settle();
    assert_eq!(seen.changes, config_changed(&h, &["d"], "Secret default/creds"));

    fs::remove_file(h.path("app-config.yaml")).unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, config_changed(&h, &["a", "b"], "ConfigMap default/app-config"));
    assert!(h.state.config_maps.is_empty());
}

/// With no pod file, a ConfigMap or Secret change still sends an update (the pod diff is
/// empty), so the API lists them.
#[test]
fn config_maps_and_secrets_alone_are_sent() {
    let mut h = Harness::new();
    let cm = key("app-config");
    write_atomic(&h.path("app-config.yaml"), &config_map("info"));
    let seen = h.until("the ConfigMap", |s| s.config_maps.contains_key(&cm));
    let added = ObjectChange { kind: "ConfigMap", key: cm.clone(), action: ObjectAction::Added };
    assert_eq!((seen.changes, seen.objects), (vec![], vec![added.clone()]));

    // Metadata alone restarts no pod but is what the API shows.
    let labelled =
        config_map("info").replace("{name: app-config}", "{name: app-config, labels: {a: b}}");
    write_atomic(&h.path("app-config.yaml"), &labelled);
    let seen = h.until("the label", |s| s.config_maps[&cm].metadata.labels.is_some());
    let changed = ObjectChange { action: ObjectAction::Changed, ..added.clone() };
    assert_eq!(seen.objects, vec![changed]);

    fs::write(h.path("creds.yaml"), secret("one")).unwrap();
    let seen = h.until("the Secret", |s| s.secrets.contains_key(&key("creds")));
    let secret_added =
        ObjectChange { kind: "Secret", key: key("creds"), action: ObjectAction::Added };
    assert_eq!(seen.objects, vec![secret_added]);

    fs::remove_file(h.path("app-config.yaml")).unwrap();
    let seen = h.until("the removal", |s| s.config_maps.is_empty());
    assert_eq!(seen.objects, vec![ObjectChange { action: ObjectAction::Removed, ..added }]);
    assert_eq!(h.settle().objects, vec![]);
}

#[test]
fn five_hundred_files_at_once() {
    let mut h = Harness::new();
    let expected: BTreeSet<String> = (0..500).map(|i| format!("pod-{i:03}")).collect();
    for name in &expected {
        fs::write(h.path(&format!("{name}.yaml")), pod(name, "busybox")).unwrap();
    }
    let seen = h.until("500 pods", |s| s.pods.len() == 500);
    assert_eq!(h.pod_names(), expected);
    assert_eq!(seen.errors, vec![]);
    let added: BTreeSet<String> = seen
        .changes
        .iter()
        .map(|c| match c {
            Change::PodAdded { key, .. } => key.name.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!((seen.changes.len(), added), (500, expected.clone()));
    let seen = h.settle();
    assert_eq!(seen.changes, vec![]);
    assert_eq!(h.pod_names(), expected);
}

/// `web.yaml` in the watched directory is a symlink to a file elsewhere: inotify on the
/// directory does not see the target change, only a rescan does.
pub(crate) fn symlinked(options: WatchOptions) -> (Harness, PathBuf) {
    let mut target = None;
    let h = Harness::with(options, |dir| {
        let outside = dir.parent().unwrap().join("outside");
        fs::create_dir(&outside).unwrap();
        let t = outside.join("web.yaml");
        fs::write(&t, pod("web", "busybox")).unwrap();
        std::os::unix::fs::symlink(&t, dir.join("web.yaml")).unwrap();
        fs::write(outside.join("api.yaml"), pod("api", "busybox")).unwrap();
        std::os::unix::fs::symlink(outside.join("api.yaml"), dir.join("api.yaml")).unwrap();
        target = Some(t);
    });
    assert_eq!(h.pod_names(), ["api", "web"].map(String::from).into());
    (h, target.unwrap())
}

#[test]
fn dropping_the_watcher_stops_it_and_closes_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let (watcher, rx) = Watcher::start(tmp.path(), WatchOptions::default()).unwrap();
    recv(&rx);
    drop(watcher);
    fs::write(tmp.path().join("web.yaml"), pod("web", "busybox")).unwrap();
    let closed = smol::block_on(smol::future::or(async { rx.recv().await.is_err() }, async {
        smol::Timer::after(TIMEOUT).await;
        false
    }));
    assert!(closed, "the channel must close once the watcher is dropped");
}

/// The kubelet's file source re-reads on each event; we debounce, but a file whose writer has
/// closed it (or renamed it into place) is final, so it is read without the quiet period.
/// With a 60 s debounce, only the early flush can deliver these within the 10 s timeout.
#[test]
fn settled_files_skip_the_debounce_and_open_ones_wait_for_it() {
    use std::io::Write;
    let options = WatchOptions { debounce: Duration::from_secs(60), ..Default::default() };
    let mut h = Harness::with(options, |_| {});

    fs::write(h.path("closed.yaml"), pod("closed", "busybox")).unwrap();
    h.until("a closed write", |s| s.pods.contains_key(&key("closed")));
    write_atomic(&h.path("renamed.yaml"), &pod("renamed", "busybox"));
    h.until("a rename into place", |s| s.pods.contains_key(&key("renamed")));
    fs::remove_file(h.path("closed.yaml")).unwrap();
    h.until("a removal", |s| !s.pods.contains_key(&key("closed")));
    // A move within the directory stays one event pair: the pod is not removed in between.
    fs::rename(h.path("renamed.yaml"), h.path("moved.yaml")).unwrap();
    let seen = h.settle();
    assert_eq!(seen.changes, vec![], "a moved file is no change");

    // Still open for writing: the watcher waits (here for the 60 s quiet period) rather
    // than read a half-written file; closing it settles it.
    let mut open = fs::File::create(h.path("open.yaml")).unwrap();
    open.write_all(pod("open", "busybox").as_bytes()).unwrap();
    open.flush().unwrap();
    let early = smol::block_on(smol::future::or(async { h.rx.recv().await.ok() }, async {
        smol::Timer::after(Duration::from_secs(1)).await;
        None
    }));
    assert!(early.is_none(), "an open file was read before its writer closed it: {early:?}");
    drop(open);
    h.until("the file closed", |s| s.pods.contains_key(&key("open")));
}
