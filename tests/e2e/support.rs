//! End-to-end harness: a real `outpost run` on a temporary manifest directory and state
//! directory, with the busybox test image imported, watched through its HTTP API; and the
//! guard every test of the root tier (`tests/e2e`) starts with.
//!
//! Needs root (namespaces, mounts, cgroups) and the packages tests/prereqs.sh installs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// Held while a test runs: the root tier's topics share one binary, so its tests run side by
/// side (`--test-threads`). Most tolerate neighbours (their own agents, state, pods and
/// addresses; leak checks look only at what they made); the few that load the whole machine
/// or time it run alone.
static RUNNING: RwLock<()> = RwLock::new(());

/// The start of every root-tier test that tolerates neighbours: checks the prerequisites.
#[track_caller]
pub fn shared() -> RwLockReadGuard<'static, ()> {
    require_prerequisites();
    RUNNING.read().unwrap_or_else(PoisonError::into_inner)
}

/// The start of a root-tier test that must run alone (a fork bomb, 100 pods of churn): it
/// waits for the running tests and keeps others from starting.
#[track_caller]
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    require_prerequisites();
    RUNNING.write().unwrap_or_else(PoisonError::into_inner)
}

/// Panics, naming what is missing and how to get it, unless the tests run as root with
/// every package tests/prereqs.sh installs. Checked once per run.
#[track_caller]
pub fn require_prerequisites() {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    if let Some(message) = MISSING.get_or_init(missing_prerequisites) {
        panic!("{message}");
    }
}

fn missing_prerequisites() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(
            "the root tier (tests/e2e) needs root (namespaces, mounts, cgroups): run \
             `sudo -E cargo test --test e2e`, after `sudo tests/prereqs.sh`; as a normal user \
             run the other tiers: `cargo test --lib --bins --test cli --test manifest --test spec \
             --test volume`"
                .into(),
        );
    }
    let cni = ["/usr/lib/cni/bridge", "/opt/cni/bin/bridge"];
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let missing: Vec<&str> = [
        (Path::new("/bin/busybox").exists(), "busybox-static"),
        (cni.iter().any(|p| Path::new(p).exists()), "containernetworking-plugins"),
        (on_path("iptables-save"), "iptables"),
        (on_path("nft"), "nftables"),
        (on_path("ip"), "iproute2"),
        (Path::new("/usr/bin/docker-registry").exists(), "docker-registry"),
        (on_path("kubectl"), "kubernetes-client (kubectl)"),
        (on_path("chromium"), "chromium (the status page's headless-browser test)"),
    ]
    .into_iter()
    .filter_map(|(present, package)| (!present).then_some(package))
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the root tier (tests/e2e) needs {}: run `sudo tests/prereqs.sh`, which installs them",
            missing.join(", ")
        )
    })
}

pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Extra `outpost run` arguments.
    args: Vec<String>,
}

impl Agent {
    /// Starts an agent with the busybox image in its store.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts an agent with extra `outpost run` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        require_prerequisites();
        let dir = tempfile::Builder::new().prefix("outpost-e2e").tempdir().expect("tempdir");
        // Searchable (not readable) by others, as /var/lib is: the root of a pod with
        // hostUsers: false is nobody on the host and must reach the state directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let manifests = dir.path().join("edge.d");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&manifests).unwrap();
        let archive = dir.path().join("busybox.tar");
        run_ok(Command::new(BIN).args(["image", "build-busybox"]).arg(&archive));
        run_ok(Command::new(BIN).args(["image", "import", "--state"]).arg(&state).arg(&archive));
        let mut agent = Self {
            child: None,
            dir,
            manifests,
            state,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: Default::default(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        agent.spawn();
        agent
    }

    /// (Re)starts the agent process on the same directories.
    pub fn spawn(&mut self) {
        // Benchmarks compare builds: `OUTPOST_AGENT_BIN` runs the agent from another binary.
        let bin = std::env::var_os("OUTPOST_AGENT_BIN").unwrap_or_else(|| BIN.into());
        // A relative `--state`, as an operator may type it: the agent must resolve it once.
        let state = self.state.strip_prefix(self.dir.path()).unwrap_or(&self.state);
        let mut child = Command::new(bin)
            .current_dir(self.dir.path())
            .args(["run", "--listen", "127.0.0.1:0", "--manifests"])
            .arg(&self.manifests)
            .arg("--state")
            .arg(state)
            .args(&self.args)
            .args(self.default_thresholds())
            .args(self.default_device_plugin_dir())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outpost run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("api: listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                eprintln!("agent| {line}");
                log.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the agent did not start its API within 30 s");
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    /// The kubelet's default disk thresholds are percentages of the host's disk, which a
    /// build machine may well be under (a shared disk 90 % full): tests that do not test
    /// eviction must not be evicted for it. Memory keeps the kubelet's default.
    fn default_thresholds(&self) -> Vec<&'static str> {
        if self.args.iter().any(|a| a == "--eviction-hard") {
            return vec![];
        }
        vec!["--eviction-hard", "memory.available<100Mi"]
    }

    /// Agents of parallel tests must not take turns on the kubelet's `kubelet.sock`: each
    /// gets a device plugin directory of its own unless the test gives one.
    fn default_device_plugin_dir(&self) -> Vec<String> {
        if self.args.iter().any(|a| a == "--device-plugin-dir") {
            return vec![];
        }
        let dir = self.dir.path().join("device-plugins");
        vec!["--device-plugin-dir".into(), dir.display().to_string()]
    }

    /// `kill -9` of the agent, then a new one on the same directories; pods keep running.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A power cycle: the agent and every process of its pods die at once, and what the
    /// kernel held goes with them (the pods' cgroups, their mounts and namespace pins, the
    /// bridge and its nftables table); the state directory, on disk, stays. Then the agent
    /// starts again, as systemd would at boot.
    pub fn reboot(&mut self) {
        self.kill();
        let uids: Vec<String> = std::fs::read_dir(self.state.join("pods"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let cgroups = pod_cgroups(&uids);
        let start = Instant::now();
        loop {
            let mut pids: Vec<i32> = self.supervisors();
            for dir in &cgroups {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.parse::<i32>().ok()));
            }
            if pids.is_empty() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "pod processes survive SIGKILL");
            for pid in pids {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Deepest first: a cgroup with children cannot be removed.
        for dir in cgroups.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        self.remove_bridge();
        self.spawn();
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the agent process only (pods keep running), as `kill -9` would, and waits until
    /// its state lock is free: a child the agent had forked but not yet exec'd (a CNI plugin,
    /// `supervise --gc`) shares the lock until its `execve`, which a loaded machine may
    /// delay past the next `spawn` (seen once in `churn`: "lock held").
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.wait_unlocked();
        }
    }

    #[track_caller]
    fn wait_unlocked(&self) {
        use nix::fcntl::{Flock, FlockArg};
        let Ok(mut file) = std::fs::File::open(self.state.join("outpost.lock")) else { return };
        let start = Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(_unlocked_on_drop) => return,
                Err((f, _)) => file = f,
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the killed agent's state lock is still held after 10 s (a leaked process?)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn apply(&self, file: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    pub fn delete(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).unwrap();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.addr, path)
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let (code, body) = self.get(&format!("/api/v1/namespaces/default/pods/{name}"));
        (code == 200).then_some(body)
    }

    /// Polls the pod until `pred` holds; panics with the last status after `timeout`.
    #[track_caller]
    pub fn wait_pod(&self, name: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let pod = self.pod(name);
            if let Some(p) = &pod {
                if pred(p) {
                    return p.clone();
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "pod {name}: condition not met within {timeout:?}; last status:\n{}",
                    pod.map(|p| serde_json::to_string_pretty(&p["status"]).unwrap())
                        .unwrap_or("(no pod)".into())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[track_caller]
    pub fn wait_gone(&self, name: &str, timeout: Duration) {
        let start = Instant::now();
        while self.pod(name).is_some() {
            assert!(start.elapsed() < timeout, "pod {name} still present after {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CRI log of a container instance, message parts only.
    pub fn logs(&self, pod: &str, container: &str, attempt: u32) -> String {
        let Some(p) = self.pod(pod) else { return String::new() };
        let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let path = outpost::runtime::log_path(&self.state, &uid, container, attempt);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[track_caller]
    pub fn wait_logs(&self, pod: &str, container: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let logs = self.logs(pod, container, 0);
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                start.elapsed() < timeout,
                "pod {pod}/{container}: {needle:?} not in logs within {timeout:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn agent_log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Pids of this agent's supervisors.
    pub fn supervisors(&self) -> Vec<i32> {
        let needle = self.state.join("pods").display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(" supervise ") && cmd.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Mount points under the state directory.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.state.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Agent {
    /// Stops the pods the way a user would (manifests removed), then the agent; whatever a
    /// failed test left behind is killed and unmounted.
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Ok(entries) = std::fs::read_dir(&self.manifests) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                let (_, list) = self.get("/api/v1/pods");
                if list["items"].as_array().is_none_or(|a| a.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
        for pid in self.supervisors() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        self.remove_bridge();
    }
}

impl Agent {
    /// A failed test leaves its agent's bridge and nftables table: removed when this agent
    /// owns them (the bridge's alias names its state directory).
    fn remove_bridge(&self) {
        let Ok(text) = std::fs::read_to_string(self.state.join("cni").join("builtin")) else {
            return;
        };
        let Some((_, bridge)) = text.trim().split_once(' ') else { return };
        let alias = std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias"));
        if alias.unwrap_or_default().trim_end() == format!("outpost:{}", self.state.display()) {
            let _ = Command::new("nft").args(["delete", "table", "ip", bridge]).output();
            if let Ok(rtnl) = outpost::network::rtnl::Rtnl::open() {
                let _ = rtnl.delete_link(bridge);
            }
        }
    }
}

/// The cgroups (in every hierarchy) of the pods with these UIDs and all their descendants,
/// parents before children: the pod cgroups are `<hierarchy>/outpost/[qos/]<uid>`.
fn pod_cgroups(uids: &[String]) -> Vec<PathBuf> {
    fn walk(dir: &Path, inside: bool, uids: &[String], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let name = e.file_name().to_string_lossy().into_owned();
            let inside = inside || uids.contains(&name);
            if inside {
                out.push(e.path());
            }
            walk(&e.path(), inside, uids, out);
        }
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/outpost")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path().join("outpost")));
    }
    let mut out = Vec::new();
    for root in roots.iter().filter(|r| r.is_dir()) {
        walk(root, false, uids, &mut out);
    }
    out
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run outpost");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The real kubectl against the agent's API, with no user configuration; (exit code, stdout,
/// stderr).
pub fn kubectl(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", "/dev/null").arg("--server").arg(format!("http://{}", agent.addr));
    run_kubectl(cmd.args(args))
}

/// Runs a kubectl command line; (exit code, stdout, stderr).
pub fn run_kubectl(cmd: &mut Command) -> (i32, String, String) {
    let out =
        cmd.output().expect("kubectl missing: install kubernetes-client (tests/prereqs.sh does)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal HTTP/1.1 GET, enough for the agent's API.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Value::Null);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A pod manifest with one busybox container running `script`. Unless `extra_spec` sets one,
/// the grace period is 2 s: a shell as PID 1 ignores SIGTERM, so stops take the whole grace.
pub fn pod(name: &str, script: &str, extra_container: &str, extra_spec: &str) -> String {
    let grace = if extra_spec.contains("terminationGracePeriodSeconds") {
        ""
    } else {
        "  terminationGracePeriodSeconds: 2\n"
    };
    let extra_spec = format!("{grace}{extra_spec}");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n{extra_container}"
    )
}

pub fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

pub const T: Duration = Duration::from_secs(30);

/// Retries `f` until it returns `Ok`; panics with the last error after `timeout`.
#[track_caller]
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => panic!("not within {timeout:?}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
