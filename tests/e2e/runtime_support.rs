//! Helpers for the runtime tests: a busybox "image", container specs, event waits.
#![allow(dead_code)]

use std::future::Future;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec,
};
use outpost::runtime::{
    ContainerConfig, Event, ExecRequest, InstanceId, LogOptions, SandboxConfig, SupervisorRuntime,
};

/// Upper bound for any wait in these tests: a hang fails instead of blocking CI.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Fails with what to install when busybox-static is missing.
fn busybox() -> PathBuf {
    let installed = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false);
    let path = PathBuf::from("/bin/busybox");
    assert!(installed && path.exists(), "the runtime tests need a static busybox: apt-get install busybox-static (or run tests/prereqs.sh)");
    path
}

/// A one-layer image: /bin/busybox and a symlink per applet, plus /etc/passwd.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let busybox = busybox();
    let layer = dir.join("layer-busybox");
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(layer.join(d)).expect("create layer dir");
    }
    std::fs::copy(&busybox, layer.join("bin/busybox")).expect("copy busybox");
    let list = std::process::Command::new(&busybox)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let target = layer.join(applet);
        if applet != "bin/busybox" && !target.exists() {
            std::fs::create_dir_all(target.parent().expect("applet dir"))
                .expect("create applet dir");
            symlink("/bin/busybox", &target).expect("applet symlink");
        }
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(layer.join("etc/group"), "root:x:0:\n").expect("group");
    layer
}

/// A container spec like the spec module would build: default mounts and capabilities.
pub fn spec(args: &[&str], memory_limit: Option<i64>) -> Spec {
    let mut spec = Spec::default();
    spec.set_root(Some(
        RootBuilder::default().path("rootfs").readonly(false).build().expect("root"),
    ));
    let process = ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
        .cwd("/")
        .no_new_privileges(true)
        .build()
        .expect("process");
    spec.set_process(Some(process));
    if let Some(limit) = memory_limit {
        let memory = LinuxMemoryBuilder::default().limit(limit).build().expect("memory");
        let resources = LinuxResourcesBuilder::default().memory(memory).build().expect("resources");
        spec.linux_mut().as_mut().expect("linux").set_resources(Some(resources));
    }
    spec
}

pub fn container(name: &str, attempt: u32, layer: &Path, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        id: InstanceId::new(name, attempt),
        spec: spec(args, None),
        lower_dirs: vec![layer.to_path_buf()],
        log: LogOptions::default(),
        stdio: Default::default(),
    }
}

pub fn exec(name: &str, argv: &[&str], timeout: Duration) -> ExecRequest {
    ExecRequest {
        id: InstanceId::new(name, 0),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout,
        output_limit: 64 * 1024,
    }
}

/// A pod test environment: a state dir and a runtime using the built `outpost` binary.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub layer: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("outpost-rt").tempdir().expect("tempdir");
        let layer = busybox_layer(dir.path());
        Self { dir, layer }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn runtime(&self) -> SupervisorRuntime {
        SupervisorRuntime::with_executable(
            &self.state_dir(),
            PathBuf::from(env!("CARGO_BIN_EXE_outpost")),
        )
    }

    pub fn sandbox(&self, uid: &str, hostname: &str) -> SandboxConfig {
        let mut config = SandboxConfig::new(uid, format!("test/{hostname}"), hostname);
        config.cgroup_parent = PathBuf::from("/outpost-test");
        config
    }
}

impl Drop for Env {
    /// A failed test must not leave supervisors, mounts and cgroups behind.
    fn drop(&mut self) {
        let Ok(pods) = std::fs::read_dir(self.state_dir().join("pods")) else { return };
        for pod in pods.flatten() {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
                .args(["supervise", "--gc", "--pod-dir"])
                .arg(pod.path())
                .status();
        }
    }
}

/// Runs `fut` with the [`PATIENCE`] bound.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let timeout = async {
        smol::Timer::after(PATIENCE).await;
        panic!("timed out waiting for {what}");
    };
    smol::future::or(fut, timeout).await
}

/// The next event matching `pred`, skipping others.
pub async fn wait_event(
    events: &smol::channel::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    bounded("an event", async {
        loop {
            let event = events.recv().await.expect("event channel open");
            if pred(&event) {
                return event;
            }
        }
    })
    .await
}

/// Waits until `check` holds, re-checking every 20 ms (for facts no event announces).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    bounded(what, async {
        while !check() {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// (stream, tag, content) of each CRI log line, with the timestamp checked.
pub fn cri_lines(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).expect("read log");
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().expect("timestamp");
            assert_eq!(ts.len(), 30, "RFC 3339 with nanoseconds: {ts}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "timestamp {ts}");
            let stream = parts.next().expect("stream").to_string();
            let tag = parts.next().expect("tag").to_string();
            (stream, tag, parts.next().unwrap_or("").to_string())
        })
        .collect()
}

pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Mount points under `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Cgroup directories of the pod left in any hierarchy.
pub fn cgroups_left(cgroup: &Path) -> Vec<PathBuf> {
    let rel = cgroup.strip_prefix("/").expect("absolute cgroup");
    std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup root")
        .flatten()
        .map(|e| e.path().join(rel))
        .chain([Path::new("/sys/fs/cgroup").join(rel)])
        .filter(|p| p.exists())
        .collect()
}
