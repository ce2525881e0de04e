//! A hostile pod against the host's mounts, for real (root): subPath swaps while siblings
//! start (CVE-2021-25741 class) and writes into the volumes the agent itself writes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::support::{phase, Agent, T};

/// The issue's attack: a sidecar keeps turning `sub` in an emptyDir into a symlink to a host
/// directory and back, while 8 containers with `subPath: sub` crash-loop. None may ever see
/// the host directory (each would leave a file in it); on the old check-then-mount code most
/// of them did within 20 s.
#[test]
fn sub_path_swaps_never_mount_a_host_directory() {
    let _guard = crate::support::shared();
    sub_path_swaps("");
}

/// The body of [`sub_path_swaps_never_mount_a_host_directory`]; `extra_spec` is added to the
/// pod's spec (`hostUsers: false` runs it again in a user namespace).
pub fn sub_path_swaps(extra_spec: &str) {
    let agent = Agent::start();
    let host = tempfile::Builder::new().prefix("outpost-host-").tempdir().unwrap();
    std::fs::write(host.path().join("host-marker"), "host").unwrap();
    let host_dir = host.path().display().to_string();

    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: swap\nspec:\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n",
    );
    let swapper = format!(
        "mkdir -p /v/sub; while :; do mv /v/sub /v/sub.d; ln -s {host_dir} /v/sub; rm /v/sub; mv /v/sub.d /v/sub; done"
    );
    write!(
        yaml,
        "  - name: swapper\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {swapper:?}]\n    volumeMounts:\n    - {{name: v, mountPath: /v}}\n"
    )
    .unwrap();
    for i in 0..8 {
        let victim = format!(
            "if [ -e /m/host-marker ]; then touch /m/escaped-c{i}-$$; echo ESCAPED; fi; exit 1"
        );
        write!(
            yaml,
            "  - name: c{i}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {victim:?}]\n    volumeMounts:\n    - {{name: v, mountPath: /m, subPath: sub}}\n"
        )
        .unwrap();
    }
    yaml.push_str("  volumes:\n  - name: v\n    emptyDir: {}\n");
    agent.apply("swap.yaml", &yaml);

    // The race must be seen both ways: victims started (mounted the subPath) and were refused
    // (saw the symlink), many times.
    let start = Instant::now();
    let (mut started, mut refused) = (0, 0);
    while !raced(start, started >= 8 && refused >= 4) {
        std::thread::sleep(Duration::from_secs(1));
        let escaped: Vec<String> = std::fs::read_dir(host.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("escaped-"))
            .collect();
        assert!(escaped.is_empty(), "containers mounted the host directory: {escaped:?}");
        let log = agent.agent_log();
        started = log.iter().filter(|l| l.contains("Started: Started container c")).count();
        refused = log.iter().filter(|l| l.contains("failed to prepare subPath")).count();
    }
    assert!(started >= 8 && refused >= 4, "{started} starts, {refused} refusals: race not run");
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1, "the host dir changed");
}

/// runc's CVE-2021-30465: a mount destination under a volume a sibling can write. A sidecar
/// keeps turning `sub` in a shared emptyDir into a symlink to `/etc` and back while 8
/// containers, with a second volume mounted at `sub`, crash-loop. Wherever the destination
/// resolves when mounted, the volume must land inside the container's root: on `sub` (which
/// the sidecar may have renamed since), or on the container's own `/etc` when the symlink was
/// followed (in the root, as runc and libcontainer resolve it). Its own mount table shows
/// each container where; a mount outside the root is missing from it.
#[test]
fn mount_destination_swaps_keep_volumes_inside_the_root() {
    let _guard = crate::support::shared();
    mount_destination_swaps("");
}

/// The body of [`mount_destination_swaps_keep_volumes_inside_the_root`], as
/// [`sub_path_swaps`].
pub fn mount_destination_swaps(extra_spec: &str) {
    let agent = Agent::start();
    let report = tempfile::Builder::new().prefix("outpost-report-").tempdir().unwrap();
    let report_dir = report.path().display().to_string();
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dest\nspec:\n  terminationGracePeriodSeconds: 1\n{extra_spec}  initContainers:\n  - name: prep\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"touch\", \"/i/inner-marker\"]\n    volumeMounts:\n    - {{name: inner, mountPath: /i}}\n  containers:\n"
    );
    // Never renames over a directory: when a victim's runtime makes `sub` while it is
    // missing, `sub.d` moves into it (overwriting it would detach that victim's mount, which
    // its mount table would then miss as after an escape). The symlink is held for a moment
    // so that both outcomes come soon, even with crash-loop back-off spacing the attempts.
    let swapper = "mkdir -p /v/sub; while :; do mv /v/sub /v/sub.d; ln -s /etc /v/sub; usleep 2000; rm /v/sub; mv /v/sub.d /v/sub; done";
    write!(
        yaml,
        "  - name: swapper\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {swapper:?}]\n    volumeMounts:\n    - {{name: v, mountPath: /v}}\n"
    )
    .unwrap();
    for i in 0..8 {
        let victim = format!(
            "at=$(grep empty-dir/inner /proc/self/mountinfo | cut -d' ' -f5); case $at in /m/*) w=dir;; /etc) w=link;; *) w=outside;; esac; cat /proc/self/mountinfo > \"/report/$w-c{i}-$$$$\"; exit 1"
        );
        write!(
            yaml,
            "  - name: c{i}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {victim:?}]\n    volumeMounts:\n    - {{name: v, mountPath: /m}}\n    - {{name: inner, mountPath: /m/sub}}\n    - {{name: report, mountPath: /report}}\n"
        )
        .unwrap();
    }
    write!(
        yaml,
        "  volumes:\n  - name: v\n    emptyDir: {{}}\n  - name: inner\n    emptyDir: {{}}\n  - name: report\n    hostPath: {{path: {report_dir}}}\n"
    )
    .unwrap();
    agent.apply("dest.yaml", &yaml);

    let named = |prefix: &str| -> Vec<String> {
        std::fs::read_dir(report.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    let start = Instant::now();
    let (mut dir, mut link) = (0, 0);
    while !raced(start, dir >= 4 && link >= 1) {
        std::thread::sleep(Duration::from_secs(1));
        let outside = named("outside-");
        let tables: Vec<String> = outside
            .iter()
            .map(|n| std::fs::read_to_string(report.path().join(n)).unwrap_or_default())
            .collect();
        assert!(
            outside.is_empty(),
            "a volume was mounted outside the container's root: {outside:?}, their mount tables:\n{}",
            tables.join("\n")
        );
        (dir, link) = (named("dir-").len(), named("link-").len());
    }
    // The race was run: volumes were mounted both on the directory and through the symlink.
    eprintln!("{dir} mounts on the directory, {link} through the link");
    assert!(dir >= 4 && link >= 1, "{dir} mounts on the directory, {link} through the link");
}

/// Whether a race test has run long enough: at least 35 s of exposure, and then until both
/// outcomes were seen (crash-loop back-off spaces the attempts, so a slow machine needs longer),
/// at most 160 s.
fn raced(start: Instant, both_seen: bool) -> bool {
    let ran = start.elapsed();
    ran >= Duration::from_secs(160) || (ran >= Duration::from_secs(35) && both_seen)
}

/// configMap (and secret, downwardAPI, projected) volumes are read-only in the container even
/// with `readOnly: false`, as the kubelet mounts them: a container that could plant a
/// `..data` symlink would steer the agent's next update of the volume to a host path.
#[test]
fn agent_written_volumes_are_read_only_inside() {
    let _guard = crate::support::shared();
    agent_written_volumes_read_only("");
}

/// The body of [`agent_written_volumes_are_read_only_inside`], as [`sub_path_swaps`].
pub fn agent_written_volumes_read_only(extra_spec: &str) {
    let agent = Agent::start();
    let yaml = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: "1"
---
apiVersion: v1
kind: Pod
metadata:
  name: ro
spec:
  terminationGracePeriodSeconds: 1
EXTRA  containers:
  - name: app
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /cfg/a; echo; if ln -sfn /etc /cfg/..data || touch /cfg/new; then echo RESULT=WRITABLE; else echo RESULT=READONLY; fi; sleep 3600"]
    volumeMounts:
    - {name: cfg, mountPath: /cfg, readOnly: false}
  volumes:
  - name: cfg
    configMap: {name: cfg}
"#;
    agent.apply("ro.yaml", &yaml.replace("EXTRA", extra_spec));
    agent.wait_pod("ro", T, |p| phase(p) == "Running");
    let logs = agent.wait_logs("ro", "app", "RESULT=", T);
    assert!(logs.contains("RESULT=READONLY"), "{logs}");
}
