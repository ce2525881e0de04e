//! Watches through the real kubectl: `get -w` on pods and events as pod files are dropped,
//! changed and removed, and `kubectl wait`, which watches the pod it waits for.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::support::*;

/// A kubectl left running (`get -w`), its stdout lines on a channel; killed on drop.
struct Watching {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(agent: &Agent, args: &[&str]) -> Self {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", "/dev/null")
            .args(["--server", &format!("http://{}", agent.addr)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let (tx, lines) = std::sync::mpsc::channel();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a line whose words start with `words` (after any earlier ones).
    #[track_caller]
    fn expect(&mut self, words: &[&str]) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    assert!(!line.starts_with("stderr: "), "kubectl complained: {:#?}", self.seen);
                    let have: Vec<&str> = line.split_whitespace().collect();
                    if have.starts_with(words) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no line starting with {words:?} within {T:?}; saw {:#?}", self.seen)
                }
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_get_watch_sees_pods_added_modified_and_deleted() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let mut pods = Watching::start(&agent, &["get", "pods", "-w", "--output-watch-events"]);
    // Once the watch is open (the empty list prints nothing), the pod appears.
    let start = Instant::now();
    while agent.get("/healthz").0 != 200 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    agent.apply("w1.yaml", &pod("w1", "sleep 3600", "", ""));
    pods.expect(&["ADDED", "w1"]);
    let running = pods.expect(&["MODIFIED", "w1", "1/1", "Running"]);
    assert!(
        running.split_whitespace().count() >= 6,
        "EVENT NAME READY STATUS RESTARTS AGE: {running}"
    );
    // One pod (`fieldSelector=metadata.name=w1` after a GET of it), in the same columns.
    let mut one = Watching::start(&agent, &["get", "pod", "w1", "-w", "--output-watch-events"]);
    one.expect(&["EVENT", "NAME", "READY", "STATUS"]);
    one.expect(&["ADDED", "w1", "1/1", "Running"]);
    // A changed file: a new pod (its UID follows its content) replaces the old one.
    agent.apply("w1.yaml", &pod("w1", "sleep 3601", "", ""));
    pods.expect(&["ADDED", "w1"]);
    pods.expect(&["DELETED", "w1"]);
    pods.expect(&["MODIFIED", "w1", "1/1", "Running"]);
    agent.delete("w1.yaml");
    pods.expect(&["DELETED", "w1"]);
    one.expect(&["DELETED", "w1"]);
    assert!(
        pods.seen
            .iter()
            .any(|l| l.starts_with("EVENT") && l.contains("NAME") && l.contains("STATUS")),
        "no header: {:#?}",
        pods.seen
    );
}

#[test]
fn kubectl_get_events_watch_and_kubectl_wait() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("w2.yaml", &pod("w2", "sleep 3600", "", ""));
    let mut events = Watching::start(&agent, &["get", "events", "-w"]);
    // `kubectl wait` lists the pod, then watches it until its Ready condition is True.
    let (code, out, err) =
        kubectl(&agent, &["wait", "--for=condition=Ready", "pod/w2", "--timeout=60s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "pod/w2 condition met");
    assert_eq!(err, "", "kubectl wait should need no fallback");
    events.expect(&["LAST", "SEEN"]);
    // Events that happen after the watch started are streamed.
    agent.apply("w3.yaml", &pod("w3", "sleep 3600", "", ""));
    let started = loop {
        let l = events.expect(&[]);
        if l.contains("pod/w3") && l.contains("Started") {
            break l;
        }
    };
    assert!(started.contains("Normal"), "{started}");
    // A condition that is not met times out as against a cluster.
    let (code, _, err) =
        kubectl(&agent, &["wait", "--for=condition=Ready=false", "pod/w2", "--timeout=2s"]);
    assert_ne!(code, 0);
    assert!(err.contains("timed out waiting for the condition"), "{err}");
}

#[test]
fn kubectl_get_nodes_watch() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let (code, nodes) = agent.get("/api/v1/nodes");
    assert_eq!(code, 200, "{nodes}");
    let name = nodes["items"][0]["metadata"]["name"].as_str().expect("a node").to_string();
    // The list, then the watch from its version (`?watch=1&resourceVersion=…`).
    let mut all = Watching::start(&agent, &["get", "nodes", "-w"]);
    all.expect(&["NAME", "STATUS"]);
    all.expect(&[name.as_str(), "Ready"]);
    // One node: a GET of it, then a watch with `fieldSelector=metadata.name=NAME`.
    let mut one = Watching::start(&agent, &["get", "node", &name, "-w", "--output-watch-events"]);
    one.expect(&["EVENT", "NAME", "STATUS"]);
    one.expect(&["ADDED", name.as_str(), "Ready"]);
    // Both stay open (a 404 or a decoding error would end kubectl with a complaint).
    std::thread::sleep(Duration::from_secs(2));
    for w in [&mut all, &mut one] {
        assert!(w.child.try_wait().unwrap().is_none(), "kubectl ended: {:#?}", w.seen);
        while let Ok(line) = w.lines.try_recv() {
            assert!(!line.starts_with("stderr: "), "kubectl complained: {line}");
        }
    }
}
