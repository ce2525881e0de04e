//! Manifests from a URL (`--manifest-url`): served by a tiny HTTP server on loopback, applied
//! within an interval, kept while the server is down, back from the cache after `kill -9`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{container_status, eventually, phase, pod, Agent, T};

/// What the server answers: a body with its ETag; a request whose `If-None-Match` names the
/// ETag gets 304.
#[derive(Default)]
struct Served {
    body: String,
    etag: String,
    /// Every request's head, lowercased.
    requests: Vec<String>,
}

/// A static file server for one path, std::net only; stopping it closes the port.
struct Server {
    addr: SocketAddr,
    served: Arc<Mutex<Served>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(addr: SocketAddr, served: Arc<Mutex<Served>>) -> Server {
        let listener = TcpListener::bind(addr).expect("bind the manifest server");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, flag) = (served.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    answer(conn, &s);
                }
            }
        });
        Server { addr, served, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/site/pods.yaml", self.addr)
    }

    fn serve(&self, body: &str, etag: &str) {
        let mut s = self.served.lock().unwrap();
        s.body = body.to_string();
        s.etag = format!("\"{etag}\"");
    }

    fn requests(&self) -> Vec<String> {
        self.served.lock().unwrap().requests.clone()
    }

    /// Stops accepting and closes the listening socket: connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut conn: TcpStream, served: &Mutex<Served>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = String::new();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let mut s = served.lock().unwrap();
    s.requests.push(head.clone());
    let reply = if head.contains(&format!("if-none-match: {}\r\n", s.etag.to_ascii_lowercase())) {
        format!("HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n", s.etag)
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/yaml\r\nETag: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            s.etag,
            s.body.len(),
            s.body
        )
    };
    let _ = conn.write_all(reply.as_bytes());
}

fn sleeper(name: &str) -> String {
    pod(name, "sleep 3600", "", "")
}

fn source(agent: &Agent) -> Value {
    let (code, list) = agent.get("/outpost/v1/sources");
    assert_eq!(code, 200, "{list}");
    list["items"][0].clone()
}

/// `/metrics` as text.
fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    text
}

fn started_at(agent: &Agent, name: &str) -> Value {
    let p = agent.pod(name).unwrap();
    container_status(&p, "app")["state"]["running"]["startedAt"].clone()
}

#[test]
fn pods_from_a_url_run_follow_changes_and_survive_the_server_and_the_agent_going_down() {
    let _guard = crate::support::shared();
    let mut server = Server::start("127.0.0.1:0".parse().unwrap(), Arc::default());
    server.serve(&sleeper("fleet-a"), "1");
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "Bearer s3cret-token\n").unwrap();
    let header_file = format!("Authorization: {}", token.display());
    let url = server.url();
    let mut agent = Agent::start_with(&[
        "--manifest-url",
        &url,
        "--manifest-url-interval",
        "1s",
        "--manifest-url-header",
        "X-Site: depot-7",
        "--manifest-url-header-file",
        &header_file,
    ]);

    // Pods from the server run, next to the directory's.
    agent.apply("local.yaml", &sleeper("local"));
    let a = agent.wait_pod("fleet-a", T, |p| phase(p) == "Running");
    assert_eq!(a["metadata"]["annotations"]["kubernetes.io/config.source"], "http");
    agent.wait_pod("local", T, |p| phase(p) == "Running");
    let first = server.requests()[0].clone();
    assert!(first.contains("x-site: depot-7\r\n"), "{first}");
    assert!(first.contains("authorization: bearer s3cret-token\r\n"), "{first}");
    // Conditional GETs once the ETag is known; the source is listed with it.
    eventually(T, || {
        let r = server.requests();
        r.iter().any(|h| h.contains("if-none-match: \"1\"")).then_some(()).ok_or(format!("{r:?}"))
    });
    let s = source(&agent);
    assert_eq!(s["url"], url.as_str());
    assert_eq!(s["etag"], "\"1\"");
    assert!(s["lastSuccess"].as_i64().is_some(), "{s}");
    let metrics = metrics(agent.addr);
    assert!(
        metrics.contains(&format!("outpost_manifest_source_errors_total{{url=\"{url}\"}} 0")),
        "{metrics}"
    );
    let server_flag = format!("http://{}", agent.addr);
    let (code, table, err) = crate::runner::outpost(&["get", "sources", "--server", &server_flag]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.starts_with("URL ") && table.contains(&url) && table.contains("\"1\""),
        "{table}"
    );
    assert!(!agent.agent_log().iter().any(|l| l.contains("s3cret")), "a header value was logged");

    // A change is applied within one interval (1 s; the pod object appears before it runs).
    server.serve(&format!("{}---\n{}", sleeper("fleet-a"), sleeper("fleet-b")), "2");
    let changed = Instant::now();
    eventually(T, || agent.pod("fleet-b").map(|_| ()).ok_or("no fleet-b yet".to_string()));
    assert!(changed.elapsed() < Duration::from_secs(3), "took {:?}", changed.elapsed());
    agent.wait_pod("fleet-b", T, |p| phase(p) == "Running");
    let (a_started, b_started) = (started_at(&agent, "fleet-a"), started_at(&agent, "fleet-b"));

    // A bad body keeps the last good one, with a log line naming the URL and line, and an
    // event.
    let bad = format!("{}---\n{}", sleeper("fleet-a"), sleeper("fleet-b").replace("busybox", "''"));
    server.serve(&bad, "3");
    eventually(T, || {
        let s = source(&agent);
        let e = s["lastError"].as_str().unwrap_or_default().to_string();
        e.starts_with("invalid body").then_some(()).ok_or(format!("{s}"))
    });
    eventually(T, || {
        let log = agent.agent_log();
        let named = log.iter().any(|l| l.contains(&format!("{url}:21:")) && l.contains("image"));
        named
            .then_some(())
            .ok_or_else(|| format!("no error naming the URL and line in:\n{}", log.join("\n")))
    });
    eventually(T, || {
        let (_, events) = agent.get("/api/v1/events");
        let reasons: Vec<String> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["reason"].as_str().map(String::from))
            .collect();
        reasons
            .iter()
            .any(|r| r == "ManifestSourceInvalid")
            .then_some(())
            .ok_or(format!("{reasons:?}"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(started_at(&agent, "fleet-b"), b_started, "the bad body touched fleet-b");

    // Server down: the pods keep running, and the error is shown.
    server.serve(&format!("{}---\n{}", sleeper("fleet-a"), sleeper("fleet-b")), "2");
    eventually(T, || {
        let s = source(&agent);
        (s["etag"] == "\"2\"" && s["lastError"].as_str().is_some_and(|e| e.starts_with("invalid")))
            .then_some(())
            .ok_or(format!("{s}"))
    });
    server.stop();
    eventually(T, || {
        let s = source(&agent);
        let e = s["lastError"].as_str().unwrap_or_default().to_string();
        e.contains("dial tcp").then_some(()).ok_or(format!("{s}"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(started_at(&agent, "fleet-a"), a_started);

    // kill -9 of the agent, restarted with the server still down: the pods come back from the
    // cache, adopted (not restarted).
    agent.kill();
    agent.spawn();
    let a = agent.wait_pod("fleet-a", T, |p| phase(p) == "Running");
    assert_eq!(container_status(&a, "app")["state"]["running"]["startedAt"], a_started);
    let b = agent.wait_pod("fleet-b", T, |p| phase(p) == "Running");
    assert_eq!(container_status(&b, "app")["state"]["running"]["startedAt"], b_started);
    assert_eq!(container_status(&b, "app")["restartCount"], 0);
    assert_eq!(source(&agent)["fromCache"], true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.pod("fleet-b").is_some(), "an unreachable server stopped a pod");

    // The server back with another set: resynced.
    let server = Server::start(server.addr, Arc::default());
    server.serve(&sleeper("fleet-a"), "4");
    agent.wait_gone("fleet-b", T);
    assert_eq!(started_at(&agent, "fleet-a"), a_started);
    eventually(T, || {
        let s = source(&agent);
        (s["etag"] == "\"4\"" && s["fromCache"] == false).then_some(()).ok_or(format!("{s}"))
    });

    // A body of only a comment removes the source's pods (and the directory's stay).
    server.serve("# nothing for this site\n", "5");
    agent.wait_gone("fleet-a", T);
    assert!(agent.pod("local").is_some());
}
