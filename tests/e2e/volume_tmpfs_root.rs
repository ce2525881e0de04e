//! `volume` with the real mount table: needs root (this machine and CI run tests as root).

use std::path::Path;

use crate::volume_support::*;
use outpost::manifest::DesiredState;
use outpost::volume::{prepare, teardown, Mounter, SystemMounter};
use serde_json::json;

/// The mount at `path` in /proc/self/mountinfo: (fs type, super options).
fn mount_entry(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (left.split(' ').nth(4)? == path.to_str()?).then(|| {
            let r: Vec<&str> = right.split(' ').collect();
            (r[0].to_string(), r.get(2).unwrap_or(&"").to_string())
        })
    })
}

/// Unmounts whatever the test left mounted, even when an assertion failed.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = teardown(self.0, &SystemMounter);
    }
}

#[test]
fn memory_volumes_are_real_tmpfs_mounts_and_teardown_removes_them() {
    let _guard = crate::support::shared();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test mounts tmpfs: run the test suite as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u-1/volumes");
    let _cleanup = Cleanup(&pod_dir);
    let mut desired = DesiredState::default();
    add_secret(&mut desired, "creds", &[("password", b"hunter2")]);
    let p = pod(
        json!([
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            {"name": "creds", "secret": {"secretName": "creds"}}
        ]),
        json!({"limits": {"memory": "64Mi"}}),
    );
    let alloc = allocatable();
    let volumes = prepare(&ctx(&p, &desired, &pod_dir, &alloc, &SystemMounter)).unwrap();

    let (fs, opts) =
        mount_entry(&volumes["mem"]).expect("emptyDir medium Memory must be a mount point");
    assert_eq!(fs, "tmpfs");
    assert!(opts.split(',').any(|o| o == "size=8192k"), "options {opts}");
    let (fs, opts) = mount_entry(&volumes["creds"]).expect("secret volume must be a mount point");
    assert_eq!(fs, "tmpfs");
    assert!(opts.split(',').any(|o| o == "size=65536k"), "options {opts}");
    assert_eq!(std::fs::read(volumes["creds"].join("password")).unwrap(), b"hunter2");
    std::fs::write(volumes["mem"].join("f"), "x").unwrap();

    let mut under = SystemMounter.mounts_under(&pod_dir).unwrap();
    under.sort();
    let mut expected = vec![volumes["creds"].clone(), volumes["mem"].clone()];
    expected.sort();
    assert_eq!(under, expected);

    teardown(&pod_dir, &SystemMounter).unwrap();
    assert_eq!(mount_entry(&volumes["mem"]), None);
    assert_eq!(mount_entry(&volumes["creds"]), None);
    assert!(!pod_dir.exists());
}

/// `fsGroup` as the kubelet's `SetVolumeOwnership`: the secret's 0400 file becomes 0440 of
/// the fsGroup (readable by a non-root user in it), its directories setgid; the emptyDir
/// directory is 2777 of the fsGroup; a live update keeps it so.
#[test]
fn fs_group_owns_the_pods_volumes() {
    let _guard = crate::support::shared();
    use std::os::unix::fs::MetadataExt;
    assert!(nix::unistd::Uid::effective().is_root(), "this test chowns: run it as root");
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u-1/volumes");
    let _cleanup = Cleanup(&pod_dir);
    let mut desired = DesiredState::default();
    add_secret(&mut desired, "creds", &[("password", b"hunter2")]);
    let mut p = pod(
        json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}
        ]),
        json!({}),
    );
    p.spec.as_mut().unwrap().security_context =
        Some(serde_json::from_value(json!({"fsGroup": 4321})).unwrap());
    let alloc = allocatable();
    let volumes = prepare(&ctx(&p, &desired, &pod_dir, &alloc, &SystemMounter)).unwrap();

    let secret = std::fs::metadata(volumes["creds"].join("password")).unwrap();
    assert_eq!((secret.gid(), secret.mode() & 0o7777), (4321, 0o440));
    let dir = std::fs::metadata(&volumes["creds"]).unwrap();
    assert_eq!(dir.gid(), 4321);
    assert_eq!(dir.mode() & 0o2000, 0o2000, "directories are setgid");
    let scratch = std::fs::metadata(&volumes["scratch"]).unwrap();
    assert_eq!((scratch.gid(), scratch.mode() & 0o7777), (4321, 0o2777));

    add_secret(&mut desired, "creds", &[("password", b"rotated")]);
    let report = outpost::volume::update(&ctx(&p, &desired, &pod_dir, &alloc, &SystemMounter));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let secret = std::fs::metadata(volumes["creds"].join("password")).unwrap();
    assert_eq!((secret.gid(), secret.mode() & 0o7777), (4321, 0o440));
}
