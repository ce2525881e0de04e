//! `outpost run` as a user runs it: it logs every desired-state change of the directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(manifests: &std::path::Path, state: &std::path::Path) -> Self {
        Self::start_with(manifests, state, |_| {})
    }

    fn start_with(
        manifests: &std::path::Path,
        state: &std::path::Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_outpost"));
        command
            .args(["run", "--manifests"])
            .arg(manifests)
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        prepare(&mut command);
        let mut child = command.spawn().expect("start outpost run");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits (generously) for a log line containing `needle`.
    #[track_caller]
    fn expect(&self, needle: &str) -> String {
        self.expect_within(needle, Duration::from_secs(20))
    }

    /// Waits (generously) for a log line containing each needle, in any order (the watcher
    /// starts before the API, the image import beside them); the lines in needle order.
    #[track_caller]
    fn expect_all<const N: usize>(&self, needles: [&str; N]) -> [String; N] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                let missing: Vec<_> =
                    needles.iter().zip(&found).filter(|(_, f)| f.is_none()).collect();
                panic!("no log lines containing {missing:?} within 20 s: {e}")
            });
            for (needle, slot) in needles.iter().zip(found.iter_mut()) {
                if slot.is_none() && line.contains(needle) {
                    *slot = Some(line.clone());
                }
            }
        }
        found.map(Option::unwrap_or_default)
    }

    /// Waits for a log line containing `needle`, `timeout` in all.
    #[track_caller]
    fn expect_within(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line containing {needle:?} within {timeout:?}: {e}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n";

#[test]
fn run_logs_adds_edits_removals_and_errors() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge.d");
    let agent = Agent::start(&dir, &tmp.path().join("state"));
    let api = agent.expect("api: listening on http://");
    let api = api.rsplit("http://").next().unwrap().trim().to_string();
    agent.expect("watching");
    std::fs::write(dir.join("web.yaml"), POD).unwrap();
    let added = agent.expect("pod default/web added");
    assert!(added.contains("web.yaml"), "{added}");
    std::fs::write(dir.join("web.yaml"), POD.replace("busybox", "busybox:1.36")).unwrap();
    agent.expect("pod default/web replaced");
    std::fs::write(dir.join("bad.yaml"), POD.replace("image:", "imagee:")).unwrap();
    let err = agent.expect("bad.yaml:8:5");
    assert!(err.contains("unknown field \"imagee\""), "{err}");
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    agent.expect("pod default/web removed");
    // Pods outlive the agent by design: let it finish removing them (a pod being removed is
    // listed until its sandbox is gone) before it is killed.
    let start = std::time::Instant::now();
    while !pods_json(&api).contains("\"items\":[]") {
        assert!(start.elapsed() < Duration::from_secs(60), "pods left: {}", pods_json(&api));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pods_json(api: &str) -> String {
    get(api, "/api/v1/pods")
}

fn get(api: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(api).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nAccept: application/json\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// Polls `path` until `done` holds for its answer (the snapshot follows the log line).
#[track_caller]
fn wait_for(api: &str, path: &str, what: &str, done: impl Fn(&str) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let answer = get(api, path);
        if done(&answer) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {path} answered {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

/// A directory with only ConfigMaps (no pod file) reaches the API.
#[test]
fn config_maps_without_pods_are_served() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("at-start.yaml"), config_map("at-start")).unwrap();
    let agent = Agent::start(&dir, &tmp.path().join("state"));
    let api = agent.expect("api: listening on http://");
    let api = api.rsplit("http://").next().unwrap().trim().to_string();
    agent.expect("watching");
    let has = |name: &str| {
        let needle = format!("\"name\":\"{name}\"");
        move |answer: &str| answer.contains(&needle)
    };
    wait_for(&api, "/api/v1/configmaps", "the ConfigMap present at start", has("at-start"));

    std::fs::write(dir.join("app.yaml"), config_map("app-config")).unwrap();
    agent.expect("ConfigMap default/app-config added");
    wait_for(&api, "/api/v1/configmaps", "the added ConfigMap", has("app-config"));
    let namespaced = "/api/v1/namespaces/default/configmaps";
    wait_for(&api, namespaced, "the added ConfigMap", has("app-config"));
    wait_for(
        &api,
        "/api/v1/namespaces/default/configmaps/app-config",
        "by name",
        has("app-config"),
    );

    std::fs::remove_file(dir.join("app.yaml")).unwrap();
    agent.expect("ConfigMap default/app-config removed");
    wait_for(&api, namespaced, "the removal", |a| !has("app-config")(a) && has("at-start")(a));
}

/// Writes `text` to `path` with raw syscalls: safe between fork and exec.
fn write_file(path: &std::ffi::CStr, text: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, text.as_ptr().cast(), text.len());
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if n != text.len() as isize {
            return Err(e);
        }
    }
    Ok(())
}

/// Runs the agent in a user namespace of its own (root mapped to root) whose inotify limit
/// `sysctl` (under /proc/sys/user) is 0. See below why.
fn exhausted(sysctl: &'static std::ffi::CStr) -> impl FnOnce(&mut Command) {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test maps uid 0 into a user namespace: run it as root"
    );
    move |command| {
        use std::os::unix::process::CommandExt;
        let setup = move || -> std::io::Result<()> {
            // SAFETY: the child is single-threaded between fork and exec.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", b"0 0 1")?;
            write_file(c"/proc/self/gid_map", b"0 0 1")?;
            write_file(sysctl, b"0")
        };
        // SAFETY: `setup` only makes syscalls.
        unsafe { command.pre_exec(setup) };
    }
}

/// With inotify's limits exhausted the agent must not exit ("cannot watch manifest
/// directory: Too many open files"): it must name the limit, run on the periodic rescan and
/// retry the watch.
///
/// How the limit is exhausted for the agent alone: inotify instances are counted per user in
/// every user namespace up to the initial one, each with its own maximum
/// (`/proc/sys/user/max_inotify_instances`; the initial namespace's is
/// `fs.inotify.max_user_instances`). The agent runs in a user namespace of its own (root mapped
/// to root) whose maximum is 0, so its inotify_init fails with EMFILE as at the host limit,
/// while the host's sysctl, and every other test, is untouched: nothing to restore, even after a
/// panic. Raising that namespace's maximum then lets the retry succeed. Needs root (the
/// mapping of uid 0); no pod is started (the late pod asks for more CPU than the node has, so
/// admission rejects it without a sandbox).
#[test]
fn exhausted_inotify_instances_leave_the_agent_on_the_rescan() {
    let _guard = crate::support::shared();
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test maps uid 0 into a user namespace: run it as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge.d");
    std::fs::create_dir(&dir).unwrap();
    let agent = Agent::start_with(
        &dir,
        &tmp.path().join("state"),
        exhausted(c"/proc/sys/user/max_inotify_instances"),
    );
    let [api, error] =
        agent.expect_all(["api: listening on http://", "cannot watch manifest directory"]);
    let api = api.rsplit("http://").next().unwrap().trim().to_string();
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("fs.inotify.max_user_instances"), "{error}");
    assert!(error.contains("sysctl -w fs.inotify.max_user_instances="), "{error}");
    assert!(!error.contains("Too many open files"), "{error}");
    agent.expect("watching");

    // Picked up by the periodic rescan (every 20 s).
    let pod = POD.replace("name: web", "name: late").replace(
        "    image: busybox\n",
        "    image: busybox\n    resources: {requests: {cpu: \"4096\"}}\n",
    );
    std::fs::write(dir.join("late.yaml"), &pod).unwrap();
    agent.expect_within("pod default/late added", Duration::from_secs(30));
    wait_for(&api, "/api/v1/namespaces/default/pods/late", "the late pod", |a| {
        // Rejected at admission: OutOfcpu, or Evicted on a host short of disk.
        a.contains("\"phase\":\"Failed\"")
    });

    // The limit raised: a retry (1 s doubling to 20 s) restores the watch.
    let ns = std::ffi::CString::new(format!("/proc/{}/ns/user", agent.child.id())).unwrap();
    let mut raise = Command::new("sh");
    raise.args(["-c", "echo 128 > /proc/sys/user/max_inotify_instances"]);
    let join = move || -> std::io::Result<()> {
        // SAFETY: syscalls only, in the single-threaded child.
        unsafe {
            let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: `join` only makes syscalls.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut raise, join) };
    assert!(raise.status().unwrap().success(), "raising the user namespace's limit");
    let back = agent.expect_within("watching manifest directory", Duration::from_secs(30));
    assert!(back.ends_with("again"), "{back}");
    // The next rescan is 20 s away: a file seen within 5 s came through inotify.
    std::fs::write(dir.join("cfg.yaml"), config_map("soon")).unwrap();
    agent.expect_within("ConfigMap default/soon added", Duration::from_secs(5));
}

/// The other inotify limit: the instance is there, adding the watch fails (ENOSPC). The image
/// auto-import still imports what is in its directory at start.
#[test]
fn exhausted_inotify_watches_are_named_and_the_agent_runs() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge.d");
    let state = tmp.path().join("state");
    // An image tarball waiting for auto-import, which cannot watch either.
    let import = state.join("images/import");
    std::fs::create_dir_all(&import).unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["image", "build-busybox"])
        .arg(import.join("busybox.tar"))
        .output()
        .unwrap();
    assert!(built.status.success(), "outpost image build-busybox (needs /bin/busybox): {built:?}");
    let agent = Agent::start_with(&dir, &state, exhausted(c"/proc/sys/user/max_inotify_watches"));
    let [imported, disabled, api, error] = agent.expect_all([
        "images: imported",
        "images: auto-import of new files disabled",
        "api: listening on http://",
        "cannot watch manifest directory",
    ]);
    assert!(imported.contains("busybox.tar"), "{imported}");
    assert!(disabled.contains("sysctl -w fs.inotify.max_user_watches="), "{disabled}");
    let api = api.rsplit("http://").next().unwrap().trim().to_string();
    assert!(error.contains("sysctl -w fs.inotify.max_user_watches="), "{error}");
    agent.expect("watching");
    wait_for(&api, "/healthz", "the agent", |a| a.contains(" 200 OK"));
}
