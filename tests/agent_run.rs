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
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["run", "--manifests"])
            .arg(manifests)
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outpost run");
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
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
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

/// Issue #28: a directory with only ConfigMaps (no pod file) never reached the API.
#[test]
fn config_maps_without_pods_are_served() {
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
