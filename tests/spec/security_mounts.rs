//! `runtime::spec`: capabilities, privileged, read-only root, users, mounts and subPath safety.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::support::*;
use oci_spec::runtime::{Mount, Spec};
use outpost::runtime::spec::{
    ContainerSpec, SpecError, SubPathProblem, MASKED_PATHS, READONLY_PATHS,
};
use serde_json::{json, Value};

fn build(container: Value) -> ContainerSpec {
    Case::new(pod_with(container)).build().unwrap()
}

fn caps(spec: &Spec) -> BTreeSet<String> {
    let c = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    let effective: BTreeSet<String> =
        c.effective().clone().unwrap().iter().map(|c| c.to_string()).collect();
    let bounding: BTreeSet<String> =
        c.bounding().clone().unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(effective, bounding);
    assert!(c.inheritable().as_ref().unwrap().is_empty());
    effective
}

/// The capability set for a `capabilities` stanza.
fn check_caps(capabilities: Value, expected: &[&str]) {
    let spec = build(json!({"securityContext": {"capabilities": capabilities}}));
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(caps(&spec.spec), expected, "capabilities {capabilities}");
}

const DEFAULTS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

#[test]
fn capabilities_default_add_drop_and_all() {
    check_caps(json!({}), &DEFAULTS);
    let mut with_admin = DEFAULTS.to_vec();
    with_admin.push("NET_ADMIN");
    check_caps(json!({"add": ["NET_ADMIN"]}), &with_admin);
    check_caps(json!({"add": ["CAP_NET_ADMIN"]}), &with_admin);
    check_caps(json!({"add": ["net_admin"]}), &with_admin);
    let without_raw: Vec<&str> = DEFAULTS.iter().copied().filter(|c| *c != "NET_RAW").collect();
    check_caps(json!({"drop": ["NET_RAW"]}), &without_raw);
    check_caps(json!({"drop": ["ALL"]}), &[]);
    check_caps(json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}), &["NET_BIND_SERVICE"]);
    check_caps(json!({"add": ["SYS_TIME"], "drop": ["SYS_TIME"]}), &DEFAULTS);
    let spec =
        build(json!({"securityContext": {"capabilities": {"add": ["ALL"], "drop": ["CHOWN"]}}}));
    let got = caps(&spec.spec);
    assert_eq!(got.len(), 40);
    assert!(!got.contains("CHOWN") && got.contains("SYS_ADMIN"));
}

#[test]
fn unknown_capability_is_reported_not_fatal() {
    let spec = build(json!({"securityContext": {"capabilities": {"add": ["FLY"]}}}));
    assert_eq!(spec.warnings.len(), 1);
    assert_eq!(
        spec.warnings[0].to_string(),
        "container \"app\": unknown capability \"FLY\" ignored"
    );
}

fn find<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new(dest))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap()
}

#[test]
fn unprivileged_defaults_mask_paths_and_deny_devices() {
    let spec = build(json!({})).spec;
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), MASKED_PATHS.map(String::from));
    assert_eq!(linux.readonly_paths().clone().unwrap(), READONLY_PATHS.map(String::from));
    let devices = linux.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(devices.len(), 1);
    assert!(!devices[0].allow());
    assert_eq!(devices[0].access().as_deref(), Some("rwm"));
    assert_eq!(options(find(&spec, "/sys").unwrap()), ["nosuid", "noexec", "nodev", "ro"]);
    assert!(linux.seccomp().is_none());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    // Unset, not false: libcontainer would otherwise load seccomp after dropping capabilities.
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(
        dests,
        ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    );
}

#[test]
fn privileged_gets_all_caps_no_masks_writable_sys_and_all_devices() {
    let spec = build(json!({"securityContext": {"privileged": true}}));
    assert!(spec.privileged);
    assert_eq!(caps(&spec.spec).len(), 41);
    let linux = spec.spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), Vec::<String>::new());
    assert_eq!(linux.readonly_paths().clone().unwrap(), Vec::<String>::new());
    assert!(linux.resources().as_ref().unwrap().devices().clone().unwrap()[0].allow());
    assert_eq!(options(find(&spec.spec, "/sys").unwrap()), ["nosuid", "noexec", "nodev", "rw"]);
    assert_eq!(options(find(&spec.spec, "/sys/fs/cgroup").unwrap()).last().unwrap(), "rw");
}

#[test]
fn read_only_root_and_no_new_privileges() {
    let mut case = Case::new(pod_with(json!({"securityContext": {
        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false
    }})));
    case.files.hosts = Some("/run/pod/hosts".into());
    case.files.resolv_conf = Some("/run/pod/resolv.conf".into());
    case.files.hostname = Some("/run/pod/hostname".into());
    case.files.shm = Some("/run/pod/shm".into());
    case.files.termination_log = Some("/run/pod/app.termination-log".into());
    let spec = case.build().unwrap().spec;
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), Some(true));
    for dest in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        assert_eq!(options(find(&spec, dest).unwrap()), ["rbind", "rprivate", "ro"], "{dest}");
    }
    let shm = find(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.source().as_deref(), Some(Path::new("/run/pod/shm")));
    assert_eq!(options(shm), ["rbind", "rprivate", "rw"]);
    let log = find(&spec, "/dev/termination-log").unwrap();
    assert_eq!(log.source().as_deref(), Some(Path::new("/run/pod/app.termination-log")));
    assert_eq!(options(log), ["rbind", "rprivate", "rw"]);
    // The default /dev/shm tmpfs was replaced, not duplicated.
    let shm_count = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .count();
    assert_eq!(shm_count, 1);
}

fn user_of(pod_sc: Value, container_sc: Value, image_user: Option<&str>) -> (u32, u32, Vec<u32>) {
    let mut p = pod_with(json!({"securityContext": container_sc}));
    p.spec.as_mut().unwrap().security_context = Some(serde_json::from_value(pod_sc).unwrap());
    let mut img = json!({"Cmd": ["x"]});
    if let Some(u) = image_user {
        img["User"] = json!(u);
    }
    let mut spec = Case::new(p).image(img).build().unwrap();
    let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    let group = "root:x:0:\nwww:x:33:\naudio:x:29:www,other\nvideo:x:44:other\n";
    spec.resolve_user(Some(passwd), Some(group)).unwrap();
    let u = spec.spec.process().as_ref().unwrap().user().clone();
    (u.uid(), u.gid(), u.additional_gids().clone().unwrap_or_default())
}

#[test]
fn run_as_user_precedence_container_over_pod_over_image() {
    assert_eq!(user_of(json!({}), json!({}), None), (0, 0, vec![0]));
    assert_eq!(user_of(json!({}), json!({}), Some("www")), (33, 33, vec![33, 29]));
    assert_eq!(user_of(json!({}), json!({}), Some("1000:2000")), (1000, 2000, vec![2000]));
    assert_eq!(user_of(json!({}), json!({}), Some("33")), (33, 33, vec![33, 29]));
    assert_eq!(user_of(json!({}), json!({}), Some("www:video")), (33, 44, vec![44, 29]));
    assert_eq!(user_of(json!({"runAsUser": 1000}), json!({}), Some("www")), (1000, 0, vec![0]));
    assert_eq!(
        user_of(json!({"runAsUser": 1000}), json!({"runAsUser": 2000}), None),
        (2000, 0, vec![0])
    );
    assert_eq!(
        user_of(json!({"runAsUser": 1000, "runAsGroup": 3000}), json!({"runAsGroup": 4000}), None),
        (1000, 4000, vec![4000])
    );
    assert_eq!(
        user_of(
            json!({"runAsUser": 33, "fsGroup": 500, "supplementalGroups": [600, 33]}),
            json!({}),
            None
        ),
        (33, 33, vec![33, 29, 500, 600])
    );
    assert_eq!(
        user_of(json!({"runAsUser": 33, "supplementalGroupsPolicy": "Strict"}), json!({}), None),
        (33, 33, vec![33])
    );
    // runAsGroup alone keeps the image's user.
    assert_eq!(user_of(json!({"runAsGroup": 7}), json!({}), Some("www")), (33, 7, vec![7, 29]));
}

#[test]
fn home_comes_from_passwd_unless_set() {
    let mut spec =
        Case::new(pod_with(json!({}))).image(json!({"Cmd": ["x"], "User": "www"})).build().unwrap();
    spec.resolve_user(Some("www:x:33:33::/var/www:/bin/false\n"), None).unwrap();
    assert_eq!(env_var(&spec, "HOME").as_deref(), Some("/var/www"));
    let c = json!({"env": [{"name": "HOME", "value": "/data"}]});
    let mut spec = Case::new(pod_with(c)).build().unwrap();
    spec.resolve_user(None, None).unwrap();
    assert_eq!(env_var(&spec, "HOME").as_deref(), Some("/data"));
}

#[test]
fn unknown_user_name_is_an_error() {
    let mut spec = Case::new(pod_with(json!({})))
        .image(json!({"Cmd": ["x"], "User": "ghost"}))
        .build()
        .unwrap();
    let err = spec.resolve_user(Some("root:x:0:0::/root:/bin/sh\n"), None).unwrap_err();
    assert_eq!(err.to_string(), "unable to find user ghost: no matching entries in passwd file");
}

/// A case with volume `data` prepared at a fresh temporary directory.
fn with_volume(container: Value) -> (tempfile::TempDir, Case) {
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::new(pod_with(container));
    case.volumes.insert("data".into(), dir.path().to_path_buf());
    (dir, case)
}

/// (source, options, rootfs propagation) of the mount at /data.
type MountView = (PathBuf, Vec<String>, Option<String>);

fn mount_of(container: Value) -> (tempfile::TempDir, Result<MountView, SpecError>) {
    let (dir, case) = with_volume(container);
    let result = case.build().map(|s| {
        let m = find(&s.spec, "/data").unwrap();
        let prop = s.spec.linux().as_ref().unwrap().rootfs_propagation().clone();
        (m.source().clone().unwrap(), options(m), prop)
    });
    (dir, result)
}

#[test]
fn volume_mounts_are_rbinds_with_propagation() {
    let cases: [(Value, &[&str], Option<&str>); 5] = [
        (json!({}), &["rbind", "rprivate", "rw"], None),
        (json!({"readOnly": true}), &["rbind", "rprivate", "ro"], None),
        (json!({"mountPropagation": "None"}), &["rbind", "rprivate", "rw"], None),
        (
            json!({"mountPropagation": "HostToContainer"}),
            &["rbind", "rslave", "rw"],
            Some("rslave"),
        ),
        (
            json!({"mountPropagation": "HostToContainer", "readOnly": true}),
            &["rbind", "rslave", "ro"],
            Some("rslave"),
        ),
    ];
    for (extra, expected, prop) in cases {
        let mut vm = json!({"name": "data", "mountPath": "/data"});
        vm.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (dir, got) = mount_of(json!({"volumeMounts": [vm]}));
        let (source, opts, rootfs_prop) = got.unwrap();
        assert_eq!(source, dir.path());
        assert_eq!(opts, expected);
        assert_eq!(rootfs_prop.as_deref(), prop);
    }
}

#[test]
fn bidirectional_needs_privileged() {
    let vm = json!([{"name": "data", "mountPath": "/data", "mountPropagation": "Bidirectional"}]);
    let (_d, got) = mount_of(json!({"volumeMounts": vm}));
    let err = got.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Bidirectional mount propagation is available only to privileged containers"
    );
    assert_eq!(err.reason(), "CreateContainerConfigError");
    let (_d, got) = mount_of(json!({"volumeMounts": vm, "securityContext": {"privileged": true}}));
    let (_, opts, prop) = got.unwrap();
    assert_eq!(opts, ["rbind", "rshared", "rw"]);
    assert_eq!(prop.as_deref(), Some("rshared"));
}

#[test]
fn unknown_volume_is_a_config_error() {
    let c = json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]});
    let err = Case::new(pod_with(c)).build().unwrap_err();
    assert_eq!(err.to_string(), "cannot find volume \"nope\" to mount into container \"app\"");
}

#[test]
fn sub_path_resolves_inside_creates_missing_and_rejects_escapes() {
    // Existing file, and a symlink staying inside the volume.
    let (dir, case) = with_volume(
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "conf/app.ini"}]}),
    );
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/app.ini"), "x").unwrap();
    symlink("real", dir.path().join("conf")).unwrap();
    let spec = case.build().unwrap();
    let source = find(&spec.spec, "/data").unwrap().source().clone().unwrap();
    assert_eq!(source, dir.path().canonicalize().unwrap().join("real/app.ini"));

    // Missing: created as a directory with the volume's mode.
    let (dir, case) = with_volume(
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "a/b"}]}),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2775)).unwrap();
    case.build().unwrap();
    let mode = std::fs::metadata(dir.path().join("a/b")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o2775);

    // A symlink leading out of the volume.
    let (dir, case) = with_volume(
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "escape/passwd"}]}),
    );
    symlink("/etc", dir.path().join("escape")).unwrap();
    let err = case.build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to prepare subPath for volumeMount \"data\" of container \"app\""
    );
    assert!(
        matches!(err, SpecError::SubPath { problem: SubPathProblem::Escapes { .. }, .. }),
        "{err:?}"
    );

    // A relative symlink climbing out.
    let (dir, case) = with_volume(
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "up"}]}),
    );
    symlink("../../..", dir.path().join("up")).unwrap();
    assert!(matches!(
        case.build().unwrap_err(),
        SpecError::SubPath { problem: SubPathProblem::Escapes { .. }, .. }
    ));

    // `..` in the subPath itself.
    let (_dir, case) = with_volume(
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "a/../../x"}]}),
    );
    assert!(matches!(
        case.build().unwrap_err(),
        SpecError::SubPath { problem: SubPathProblem::Backsteps(_), .. }
    ));
}

#[test]
fn sub_path_expr_expands_container_variables() {
    let c = json!({
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": "logs/$(POD)"}]
    });
    let (dir, case) = with_volume(c);
    let spec = case.build().unwrap();
    assert_eq!(
        find(&spec.spec, "/data").unwrap().source().clone().unwrap(),
        dir.path().canonicalize().unwrap().join("logs/web")
    );
    let c =
        json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": "$(NOPE)"}]});
    let (_dir, case) = with_volume(c);
    let err = case.build().unwrap_err();
    match err {
        SpecError::SubPath { problem, .. } => {
            assert_eq!(problem.to_string(), "missing value for NOPE")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn user_mounts_replace_pod_files_and_sort_parents_first() {
    let c = json!({"volumeMounts": [
        {"name": "data", "mountPath": "/etc/hosts", "subPath": "hosts"},
        {"name": "data", "mountPath": "/srv/a/b"},
        {"name": "data", "mountPath": "/srv"}
    ]});
    let (dir, mut case) = with_volume(c);
    std::fs::write(dir.path().join("hosts"), "127.0.0.1 x\n").unwrap();
    case.files.hosts = Some("/run/pod/hosts".into());
    case.files.hostname = Some("/run/pod/hostname".into());
    let spec = case.build().unwrap().spec;
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .skip(7)
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(dests, ["/srv", "/etc/hosts", "/etc/hostname", "/srv/a/b"]);
    assert_eq!(
        find(&spec, "/etc/hosts").unwrap().source().clone().unwrap(),
        dir.path().canonicalize().unwrap().join("hosts")
    );
}

#[test]
fn working_dir_and_stop_signal() {
    let spec = build(json!({}));
    assert_eq!(spec.spec.process().as_ref().unwrap().cwd(), Path::new("/"));
    assert_eq!(spec.stop_signal, nix::sys::signal::Signal::SIGTERM);
    let spec = Case::new(pod_with(json!({})))
        .image(json!({"Cmd": ["x"], "WorkingDir": "/app", "StopSignal": "SIGQUIT"}))
        .build()
        .unwrap();
    assert_eq!(spec.spec.process().as_ref().unwrap().cwd(), Path::new("/app"));
    assert_eq!(spec.stop_signal, nix::sys::signal::Signal::SIGQUIT);
    let spec =
        Case::new(pod_with(json!({"workingDir": "/work", "lifecycle": {"stopSignal": "SIGUSR1"}})))
            .image(json!({"Cmd": ["x"], "WorkingDir": "/app", "StopSignal": "9"}))
            .build()
            .unwrap();
    assert_eq!(spec.spec.process().as_ref().unwrap().cwd(), Path::new("/work"));
    assert_eq!(spec.stop_signal, nix::sys::signal::Signal::SIGUSR1);
    let spec = Case::new(pod_with(json!({})))
        .image(json!({"Cmd": ["x"], "StopSignal": "9"}))
        .build()
        .unwrap();
    assert_eq!(spec.stop_signal, nix::sys::signal::Signal::SIGKILL);
}

/// The kubelet mounts configMap, secret, downwardAPI and projected volumes read-only whatever
/// `readOnly` says: their files are the agent's, and a writable `..data` would let a container
/// steer the agent's next update to a host path.
#[test]
fn agent_written_volumes_are_always_read_only() {
    let sources = [
        ("cfg", json!({"configMap": {"name": "c"}}), "ro"),
        ("sec", json!({"secret": {"secretName": "s"}}), "ro"),
        ("down", json!({"downwardAPI": {"items": []}}), "ro"),
        ("proj", json!({"projected": {"sources": []}}), "ro"),
        ("scratch", json!({"emptyDir": {}}), "rw"),
    ];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (name, source, _) in &sources {
        let mut v = source.clone();
        v["name"] = json!(name);
        volumes.push(v);
        mounts.push(json!({"name": name, "mountPath": format!("/{name}"), "readOnly": false}));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::new(pod(json!({
        "containers": [{"name": "app", "image": "busybox", "volumeMounts": mounts}],
        "volumes": volumes
    })));
    for (name, _, _) in &sources {
        case.volumes.insert(name.to_string(), dir.path().join(name));
    }
    let spec = case.build().unwrap().spec;
    for (name, _, want) in &sources {
        let m = find(&spec, &format!("/{name}")).unwrap();
        assert!(options(m).contains(&want.to_string()), "{name}: {:?}", options(m));
    }
}

/// `runAsNonRoot` is checked when the spec is built: a root or named image user refuses it
/// (CreateContainerConfigError), a non-root `runAsUser` or numeric `USER` passes.
#[test]
fn run_as_non_root_is_checked_against_run_as_user_and_the_image_user() {
    let build = |sc: Value, user: &str| {
        Case::new(pod_with(json!({"securityContext": sc})))
            .image(json!({"Cmd": ["x"], "User": user}))
            .build()
    };
    let err = build(json!({"runAsNonRoot": true}), "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "container has runAsNonRoot and image will run as root (pod: \"web_default(0f1e2d3c)\", container: app)"
    );
    assert_eq!(err.reason(), "CreateContainerConfigError");
    let err = build(json!({"runAsNonRoot": true}), "www").unwrap_err();
    assert_eq!(
        err.to_string(),
        "container has runAsNonRoot and image has non-numeric user (www), cannot verify user is non-root (pod: \"web_default(0f1e2d3c)\", container: app)"
    );
    let err = build(json!({"runAsNonRoot": true, "runAsUser": 0}), "1000").unwrap_err();
    assert_eq!(
        err.to_string(),
        "container's runAsUser breaks non-root policy (pod: \"web_default(0f1e2d3c)\", container: app)"
    );
    assert!(build(json!({"runAsNonRoot": true}), "1000:1000").is_ok());
    assert!(build(json!({"runAsNonRoot": true, "runAsUser": 1000}), "www").is_ok());
    assert!(build(json!({}), "").is_ok());
}

#[test]
fn seccomp_default_on_filters_unprivileged_containers_only() {
    let mut case = Case::new(pod_with(json!({})));
    case.node.seccomp.default_runtime_default = true;
    let seccomp = case.build().unwrap().spec.linux().clone().unwrap().seccomp().clone();
    let seccomp = seccomp.expect("RuntimeDefault when the pod says nothing");
    assert_eq!(seccomp.default_action(), oci_spec::runtime::LinuxSeccompAction::ScmpActErrno);
    let mut case = Case::new(pod_with(json!({"securityContext": {"privileged": true}})));
    case.node.seccomp.default_runtime_default = true;
    assert!(case.build().unwrap().spec.linux().as_ref().unwrap().seccomp().is_none());
}

#[test]
fn a_missing_localhost_profile_is_a_create_container_error_naming_the_file() {
    let case = Case::new(pod_with(json!({"securityContext": {"seccompProfile": {
        "type": "Localhost", "localhostProfile": "x/deny.json"
    }}})));
    let err = case.build().unwrap_err();
    assert!(matches!(err, SpecError::Seccomp { .. }), "{err:?}");
    assert_eq!(err.reason(), "CreateContainerError");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/seccomp/x/deny.json"), "{message}");
}
