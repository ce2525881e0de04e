//! `volume`: emptyDir, hostPath, configMap, secret, downwardAPI, projected, AtomicWriter
//! layout, live updates and teardown, with the fake mounter in temporary directories.

#[path = "common/volume_support.rs"]
mod volume_support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use outpost::manifest::DesiredState;
use outpost::volume::{prepare, teardown, update, FakeMounter, VolumeError};
use serde_json::{json, Value};
use volume_support::*;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    desired: DesiredState,
    mounter: FakeMounter,
    alloc: outpost::runtime::spec::Allocatable,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pods/u-1/volumes");
        Env {
            _tmp: tmp,
            dir,
            desired: DesiredState::default(),
            mounter: FakeMounter::default(),
            alloc: allocatable(),
        }
    }

    fn prepare(
        &self,
        volumes: Value,
        resources: Value,
    ) -> Result<std::collections::BTreeMap<String, PathBuf>, VolumeError> {
        let p = pod(volumes, resources);
        prepare(&ctx(&p, &self.desired, &self.dir, &self.alloc, &self.mounter))
    }

    fn one(&self, volume: Value) -> Result<PathBuf, VolumeError> {
        let name = volume["name"].as_str().unwrap().to_string();
        self.prepare(json!([volume]), json!({})).map(|m| m[&name].clone())
    }
}

#[test]
fn empty_dir_on_disk_is_a_0777_directory() {
    let env = Env::new();
    let path = env.one(json!({"name": "cache", "emptyDir": {}})).unwrap();
    assert_eq!(path, env.dir.join("kubernetes.io~empty-dir/cache"));
    assert!(path.is_dir());
    assert_eq!(mode(&path), 0o777);
    assert!(env.mounter.mounted().is_empty());
}

fn tmpfs_size(volume: Value, resources: Value) -> u64 {
    let env = Env::new();
    env.prepare(json!([volume]), resources).unwrap();
    let mounted = env.mounter.mounted();
    assert_eq!(mounted.len(), 1);
    assert_eq!(mounted[0].0, env.dir.join("kubernetes.io~empty-dir/mem"));
    mounted[0].1
}

#[test]
fn memory_empty_dir_is_a_tmpfs_sized_like_the_kubelet() {
    let mem = |size: Option<&str>| {
        let mut e = json!({"medium": "Memory"});
        if let Some(s) = size {
            e["sizeLimit"] = json!(s);
        }
        json!({"name": "mem", "emptyDir": e})
    };
    // Node allocatable by default.
    assert_eq!(tmpfs_size(mem(None), json!({})), 8 << 30);
    // The pod's memory limit when every container has one.
    assert_eq!(tmpfs_size(mem(None), json!({"limits": {"memory": "256Mi"}})), 256 << 20);
    // sizeLimit when smaller.
    assert_eq!(tmpfs_size(mem(Some("64Mi")), json!({"limits": {"memory": "256Mi"}})), 64 << 20);
    // sizeLimit larger than the pod limit: the pod limit.
    assert_eq!(tmpfs_size(mem(Some("1Gi")), json!({"limits": {"memory": "256Mi"}})), 256 << 20);
}

#[test]
fn preparing_twice_does_not_mount_twice() {
    let env = Env::new();
    let v = json!([{"name": "mem", "emptyDir": {"medium": "Memory"}}]);
    env.prepare(v.clone(), json!({})).unwrap();
    env.prepare(v, json!({})).unwrap();
    assert_eq!(env.mounter.mounted().len(), 1);
}

fn host_path(path: &Path, typ: &str) -> Result<PathBuf, VolumeError> {
    Env::new().one(json!({"name": "h", "hostPath": {"path": path, "type": typ}}))
}

fn host_path_error(path: &Path, typ: &str) -> String {
    host_path(path, typ).unwrap_err().to_string()
}

#[test]
fn host_path_types_are_checked_like_the_kubelet() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let file = t.join("file");
    std::fs::write(&file, "x").unwrap();
    let sock = t.join("sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    let missing = t.join("missing");

    assert_eq!(host_path(t, "Directory").unwrap(), t);
    assert_eq!(host_path(&file, "File").unwrap(), file);
    assert_eq!(host_path(&sock, "Socket").unwrap(), sock);
    assert_eq!(host_path(Path::new("/dev/null"), "CharDevice").unwrap(), Path::new("/dev/null"));
    assert_eq!(host_path(&missing, "").unwrap(), missing, "no type: no check");
    assert!(!missing.exists());

    let show = |p: &Path| p.display().to_string();
    assert_eq!(
        host_path_error(&missing, "Directory"),
        format!("hostPath type check failed: {} is not a directory", show(&missing))
    );
    assert_eq!(
        host_path_error(&file, "Directory"),
        format!("hostPath type check failed: {} is not a directory", show(&file))
    );
    assert_eq!(
        host_path_error(&file, "DirectoryOrCreate"),
        format!("hostPath type check failed: {} is not a directory", show(&file))
    );
    assert_eq!(
        host_path_error(t, "File"),
        format!("hostPath type check failed: {} is not a file", show(t))
    );
    assert_eq!(
        host_path_error(t, "FileOrCreate"),
        format!("hostPath type check failed: {} is not a file", show(t))
    );
    assert_eq!(
        host_path_error(&file, "Socket"),
        format!("hostPath type check failed: {} is not a socket file", show(&file))
    );
    assert_eq!(
        host_path_error(&file, "CharDevice"),
        format!("hostPath type check failed: {} is not a character device", show(&file))
    );
    assert_eq!(
        host_path_error(Path::new("/dev/null"), "BlockDevice"),
        "hostPath type check failed: /dev/null is not a block device"
    );
    assert_eq!(host_path_error(t, "Fifo"), "Fifo is an invalid volume type");
    let err = host_path(t, "Directory")
        .map(|_| ())
        .and(host_path(&missing, "File").map(|_| ()))
        .unwrap_err();
    assert_eq!(err.event_message(), format!("MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a file", show(&missing)));
}

#[test]
fn host_path_or_create() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/c");
    host_path(&dir, "DirectoryOrCreate").unwrap();
    assert!(dir.is_dir());
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&tmp.path().join("a")), 0o755);

    let file = tmp.path().join("a/new.txt");
    host_path(&file, "FileOrCreate").unwrap();
    assert!(file.is_file());
    assert_eq!(mode(&file), 0o644);
    // The kubelet creates the file only: its parent must exist.
    let orphan = tmp.path().join("nope/new.txt");
    assert!(matches!(
        host_path(&orphan, "FileOrCreate").unwrap_err(),
        VolumeError::Io { op: "create", .. }
    ));
}

const TS: &str = "..2026_11_25_12_00_00.123456789";

#[test]
fn config_map_volume_uses_the_atomic_writer_layout() {
    let mut env = Env::new();
    add_config_map(&mut env.desired, "cfg", json!({"app.ini": "a=1\n", "level": "3"}));
    let dir = env
        .one(json!({"name": "conf", "configMap": {"name": "cfg", "defaultMode": 0o640}}))
        .unwrap();
    assert_eq!(dir, env.dir.join("kubernetes.io~configmap/conf"));
    assert_eq!(ls(&dir), [TS, "..data", "app.ini", "level"]);
    assert_eq!(link(&dir.join("..data")), Path::new(TS));
    assert_eq!(link(&dir.join("app.ini")), Path::new("..data/app.ini"));
    assert_eq!(std::fs::read_to_string(dir.join("app.ini")).unwrap(), "a=1\n");
    assert_eq!(mode(&dir.join(TS).join("app.ini")), 0o640);
    assert_eq!(mode(&dir.join(TS)), 0o755);
    assert!(env.mounter.mounted().is_empty(), "configMaps are on disk");
}

#[test]
fn config_map_items_paths_modes_and_binary_data() {
    let mut env = Env::new();
    let cm = serde_json::from_value(json!({
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"a": "A", "b": "B"}, "binaryData": {"bin": "AAEC"}
    }))
    .unwrap();
    env.desired.config_maps.insert(outpost::manifest::ObjectKey::new("default", "cfg"), cm);
    let dir = env
        .one(json!({"name": "conf", "configMap": {"name": "cfg", "defaultMode": 0o644, "items": [
            {"key": "a", "path": "sub/dir/a.txt", "mode": 0o600},
            {"key": "bin", "path": "bin"}
        ]}}))
        .unwrap();
    assert_eq!(ls(&dir), [TS, "..data", "bin", "sub"]);
    assert_eq!(link(&dir.join("sub")), Path::new("..data/sub"));
    assert_eq!(std::fs::read_to_string(dir.join("sub/dir/a.txt")).unwrap(), "A");
    assert_eq!(mode(&dir.join(TS).join("sub/dir/a.txt")), 0o600);
    assert_eq!(std::fs::read(dir.join("bin")).unwrap(), [0u8, 1, 2]);
    assert_eq!(mode(&dir.join(TS).join("bin")), 0o644);
}

#[test]
fn missing_config_maps_and_keys() {
    let mut env = Env::new();
    let err = env.one(json!({"name": "conf", "configMap": {"name": "gone"}})).unwrap_err();
    assert_eq!(err.to_string(), "configmap \"gone\" not found");
    assert_eq!(
        err.event_message(),
        "MountVolume.SetUp failed for volume \"conf\" : configmap \"gone\" not found"
    );
    // Optional: an empty volume.
    let dir =
        env.one(json!({"name": "conf", "configMap": {"name": "gone", "optional": true}})).unwrap();
    assert_eq!(ls(&dir), [TS, "..data"]);
    assert_eq!(ls(&dir.join(TS)), Vec::<String>::new());

    add_config_map(&mut env.desired, "cfg", json!({"a": "A"}));
    let items = json!([{"key": "nokey", "path": "x"}, {"key": "a", "path": "a"}]);
    let err =
        env.one(json!({"name": "c2", "configMap": {"name": "cfg", "items": items}})).unwrap_err();
    assert_eq!(err.to_string(), "configmap references non-existent config key: nokey");
    let dir = env
        .one(json!({"name": "c3", "configMap": {"name": "cfg", "items": items, "optional": true}}))
        .unwrap();
    assert_eq!(ls(&dir), [TS, "..data", "a"]);

    let err = env.one(json!({"name": "s", "secret": {"secretName": "gone"}})).unwrap_err();
    assert_eq!(err.to_string(), "secret \"gone\" not found");
    add_secret(&mut env.desired, "creds", &[("k", b"v")]);
    let err = env.one(json!({"name": "s", "secret": {"secretName": "creds", "items": [{"key": "x", "path": "x"}]}})).unwrap_err();
    assert_eq!(err.to_string(), "references non-existent secret key: x");
}

#[test]
fn secrets_go_on_tmpfs_and_never_print_their_bytes() {
    let mut env = Env::new();
    add_secret(&mut env.desired, "creds", &[("password", b"hunter2"), ("token", b"t0k")]);
    let dir = env
        .one(json!({"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}))
        .unwrap();
    assert_eq!(dir, env.dir.join("kubernetes.io~secret/creds"));
    assert_eq!(env.mounter.mounted(), [(dir.clone(), 8u64 << 30)]);
    assert_eq!(std::fs::read(dir.join("password")).unwrap(), b"hunter2");
    assert_eq!(mode(&dir.join(TS).join("password")), 0o400);
    let f = outpost::volume::FileProjection { data: b"hunter2".to_vec(), mode: 0o400 };
    let shown = format!("{f:?}");
    assert!(!shown.contains("hunter2"));
    assert_eq!(shown, "FileProjection { 7 bytes, mode 400 }");
}

#[test]
fn downward_api_files_in_the_kubelet_format() {
    let env = Env::new();
    let items = json!([
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "mem", "mode": 0o600, "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}}
    ]);
    let p = pod(
        json!([{"name": "info", "downwardAPI": {"items": items, "defaultMode": 0o644}}]),
        json!({"limits": {"memory": "128Mi"}}),
    );
    let dir = prepare(&ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter)).unwrap()["info"]
        .clone();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("labels"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(read("annotations"), "a=\"1\"");
    assert_eq!(
        (read("name"), read("ns"), read("uid"), read("tier")),
        ("web".into(), "default".into(), "u-1".into(), "front".into())
    );
    assert_eq!(read("mem"), "128");
    assert_eq!(read("cpu"), "4000", "no cpu limit: node allocatable");
    assert_eq!(mode(&dir.join(TS).join("mem")), 0o600);
    assert_eq!(env.mounter.mounted().len(), 1, "downwardAPI is memory-backed");

    let bad = json!([{"name": "info", "downwardAPI": {"items": [
        {"path": "x", "resourceFieldRef": {"containerName": "ghost", "resource": "limits.cpu"}}]}}]);
    let err = env.prepare(bad, json!({})).unwrap_err();
    assert_eq!(err.to_string(), "container \"ghost\" not found in the pod");
}

#[test]
fn projected_merges_sources_and_refuses_cluster_only_ones() {
    let mut env = Env::new();
    add_config_map(&mut env.desired, "cfg", json!({"a": "A"}));
    add_secret(&mut env.desired, "creds", &[("s", b"S")]);
    let v = json!({"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cfg"}},
        {"secret": {"name": "creds", "items": [{"key": "s", "path": "secret/s", "mode": 0o400}]}},
        {"secret": {"name": "gone", "optional": true}},
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
    ]}});
    let dir = env.one(v).unwrap();
    assert_eq!(ls(&dir), [TS, "..data", "a", "name", "secret"]);
    assert_eq!(std::fs::read_to_string(dir.join("secret/s")).unwrap(), "S");
    assert_eq!(mode(&dir.join(TS).join("a")), 0o440);
    assert_eq!(mode(&dir.join(TS).join("secret/s")), 0o400);
    let v = json!({"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}});
    assert_eq!(
        env.one(v).unwrap_err().to_string(),
        "projected volume \"tok\": serviceAccountToken sources need a cluster and are not supported"
    );
}

#[test]
fn live_update_swaps_data_and_removes_the_old_directory() {
    let mut env = Env::new();
    add_config_map(&mut env.desired, "cfg", json!({"keep": "1", "old": "x"}));
    let volumes = json!([{"name": "conf", "configMap": {"name": "cfg"}}]);
    let p = pod(volumes, json!({}));
    let dir = prepare(&ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter)).unwrap()["conf"]
        .clone();

    // Unchanged content: nothing rewritten.
    let later = |nanos| {
        let mut c = ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter);
        c.now = now() + std::time::Duration::from_nanos(nanos);
        c
    };
    let report = update(&later(1));
    assert!(report.changed.is_empty() && report.errors.is_empty());
    assert_eq!(link(&dir.join("..data")), Path::new(TS));

    add_config_map(&mut env.desired, "cfg", json!({"keep": "2", "new": "n"}));
    let mut c = ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter);
    c.now = now() + std::time::Duration::from_secs(61);
    let report = update(&c);
    assert_eq!(report.changed, ["conf"]);
    let ts2 = "..2026_11_25_12_01_01.123456789";
    assert_eq!(ls(&dir), [ts2, "..data", "keep", "new"]);
    assert_eq!(link(&dir.join("..data")), Path::new(ts2));
    assert_eq!(link(&dir.join("new")), Path::new("..data/new"));
    assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "2");
    assert!(!dir.join("..data_tmp").exists());

    // A source that disappears: reported, old files stay.
    env.desired.config_maps.clear();
    let c = ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter);
    let report = update(&c);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].to_string(), "configmap \"cfg\" not found");
    assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "2");
}

#[test]
fn payload_paths_may_not_escape() {
    let mut env = Env::new();
    add_config_map(&mut env.desired, "cfg", json!({"a": "A"}));
    for path in ["../x", "/etc/x", "..x", "a/../../x"] {
        let err = env.one(json!({"name": "c", "configMap": {"name": "cfg", "items": [{"key": "a", "path": path}]}})).unwrap_err();
        assert!(matches!(err, VolumeError::Write { .. }), "{path}: {err:?}");
    }
}

#[test]
fn teardown_unmounts_and_removes() {
    let mut env = Env::new();
    add_secret(&mut env.desired, "creds", &[("k", b"v")]);
    env.prepare(
        json!([{"name": "s", "secret": {"secretName": "creds"}}, {"name": "m", "emptyDir": {"medium": "Memory"}}, {"name": "d", "emptyDir": {}}]),
        json!({}),
    )
    .unwrap();
    assert_eq!(env.mounter.mounted().len(), 2);
    teardown(&env.dir, &env.mounter).unwrap();
    assert!(env.mounter.mounted().is_empty());
    assert!(!env.dir.exists());
    // Idempotent.
    teardown(&env.dir, &env.mounter).unwrap();
}

/// Defence in depth beside the read-only mount: a `..data` that points anywhere but a
/// timestamped sibling (as a container with write access could make it) is refused, and the
/// update removes nothing through it.
#[test]
fn an_update_never_follows_a_planted_data_link() {
    let mut env = Env::new();
    add_config_map(&mut env.desired, "cfg", json!({"a": "1"}));
    let volumes = json!([{"name": "conf", "configMap": {"name": "cfg"}}]);
    let p = pod(volumes, json!({}));
    let dir = prepare(&ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter)).unwrap()["conf"]
        .clone();
    let victim = env._tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), "host").unwrap();
    for planted in [victim.clone(), PathBuf::from("../../../victim")] {
        std::fs::remove_file(dir.join("..data")).unwrap();
        std::os::unix::fs::symlink(&planted, dir.join("..data")).unwrap();
        add_config_map(&mut env.desired, "cfg", json!({"a": "2"}));
        let report = update(&ctx(&p, &env.desired, &env.dir, &env.alloc, &env.mounter));
        assert_eq!(report.errors.len(), 1, "{planted:?}: {:?}", report.errors);
        assert!(victim.join("precious").exists(), "{planted:?}: the update deleted a host file");
    }
}
