//! What 100 open watches cost the agent: the API server (on one thread, as on the agent's)
//! over 100 synthetic pods, with either no watcher or 100 watchers (`kubectl get pods -w`:
//! Table rows, from the list's resourceVersion) in a child process. Two phases: idle (nothing
//! published), then one pod's status changing every second (a restart, a probe turning: every
//! watcher gets an event). In each, rounds alternate (0, 100, 0, 100); the server process's
//! CPU time (every thread, `getrusage`) is summed per configuration and the ratio printed.
//! First, the publish's cost with its diff: one pod of 100 changed.
//!
//! cargo bench --bench api_watch   (API_WATCH_WINDOW=seconds per round, default 10)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use outpost::api::{ApiConfig, Published};

#[path = "support/sample_pod.rs"]
mod sample_pod;
use outpost::store::EventRecord;
use sample_pod::pod;

const PODS: usize = 100;
const WATCHERS: usize = 100;
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// The pods after `step` changes: pod `step % PODS` restarted once more each time.
fn pods(step: usize) -> Vec<Pod> {
    (0..PODS).map(|i| pod(i, ((step + PODS - 1 - i) / PODS) as i32)).collect()
}

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Child mode: open the watches, say so, read them until killed.
fn clients(addr: &str, n: usize) {
    let mut readers = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect");
        let rv = list_version(addr);
        write!(
            s,
            "GET /api/v1/namespaces/default/pods?watch=1&resourceVersion={rv} HTTP/1.1\r\nHost: bench\r\nAccept: {TABLE}\r\n\r\n"
        )
        .expect("write");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).expect("status line");
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        readers.push(std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }));
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    for r in readers {
        let _ = r.join();
    }
}

fn list_version(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET /api/v1/pods HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).expect("a PodList");
    v["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

fn main() {
    if let Ok(spec) = std::env::var("API_WATCH_BENCH_CLIENTS") {
        let (addr, n) = spec.rsplit_once(',').unwrap();
        return clients(addr, n.parse().unwrap());
    }
    let window = Duration::from_secs(
        std::env::var("API_WATCH_WINDOW").ok().and_then(|s| s.parse().ok()).unwrap_or(10),
    );

    // What one pod state in the watch history holds.
    let before = unsafe { libc::mallinfo2() }.uordblks;
    let v: Vec<Box<Pod>> = (0..1000).map(|i| Box::new(pod(i, 1))).collect();
    let after = unsafe { libc::mallinfo2() }.uordblks;
    println!("one of these pods in memory: {} bytes", (after - before) / 1000);
    drop(v);
    // The diff in publish: 100 pods, one changed (what a step that changed a pod costs).
    let published = Arc::new(Published::default());
    published.publish(pods(0), Default::default(), Default::default());
    let mut times: Vec<Duration> = (1..=2000)
        .map(|step| {
            let next = pods(step);
            let start = Instant::now();
            published.publish(next, Default::default(), Default::default());
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "publish, {PODS} pods, one changed (diff included): median {:.1} µs, p99 {:.1} µs",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6
    );

    // The same with 1000 events (the agent keeps that many), one of them counted again.
    let events = |step: usize| -> Arc<Vec<EventRecord>> {
        Arc::new(
            (0..1000)
                .map(|i| EventRecord {
                    pod_uid: format!("00000000-0000-0000-0000-{:012}", i % PODS),
                    namespace: "default".into(),
                    pod_name: format!("pod-{:03}", i % PODS),
                    container: Some("c0".into()),
                    type_: "Normal".into(),
                    reason: format!("Reason{}", i / PODS),
                    message: format!("event {i} of the pod's life"),
                    count: 1 + u32::from(i == step % 1000),
                    first_seen: 1_700_000_000,
                    last_seen: 1_700_000_000,
                })
                .collect(),
        )
    };
    let with_events = Published::default();
    with_events.publish(pods(0), events(0), Default::default());
    let mut times: Vec<Duration> = (1..=500)
        .map(|step| {
            let (p, e) = (pods(0), events(step));
            let start = Instant::now();
            with_events.publish(p, e, Default::default());
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "publish, {PODS} pods unchanged and 1000 events, one counted again: median {:.1} µs",
        times[times.len() / 2].as_secs_f64() * 1e6,
    );

    // The agent's thread: the API server and a publish every second.
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), std::env::temp_dir());
    let (tx, rx) = std::sync::mpsc::channel();
    let p = published.clone();
    let changing = Arc::new(AtomicBool::new(false));
    let c = changing.clone();
    std::thread::spawn(move || {
        let publisher = async {
            let mut step = 2000;
            loop {
                smol::Timer::after(Duration::from_secs(1)).await;
                if c.load(Ordering::Relaxed) {
                    step += 1;
                    p.publish(pods(step), Default::default(), Default::default());
                }
            }
        };
        let server = outpost::api::serve(config, p.clone(), |a| tx.send(a).unwrap());
        smol::block_on(smol::future::or(async { server.await.expect("serve") }, publisher))
    });
    let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(10)).expect("bound");

    for (phase, changes) in [("idle", false), ("one pod change per second", true)] {
        changing.store(changes, Ordering::Relaxed);
        rounds(phase, window, addr, &published);
    }
}

fn rounds(phase: &str, window: Duration, addr: SocketAddr, published: &Published) {
    let mut totals = [Duration::ZERO; 2];
    for round in 0..4 {
        let watchers = if round % 2 == 0 { 0 } else { WATCHERS };
        let child = (watchers > 0).then(|| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env("API_WATCH_BENCH_CLIENTS", format!("{addr},{watchers}"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("clients");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            child
        });
        assert_eq!(published.watchers(), watchers);
        let start = cpu_time();
        std::thread::sleep(window);
        let used = cpu_time() - start;
        totals[round % 2] += used;
        println!(
            "round {round}: {watchers:3} watchers, {:.1} ms CPU in {window:?}",
            used.as_secs_f64() * 1e3
        );
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
            let start = Instant::now();
            while published.watchers() > 0 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / (2.0 * window.as_secs_f64());
    println!(
        "agent CPU, {phase}: {:.2} ms/s with 0 watchers, {:.2} ms/s with {WATCHERS}; ratio {:.2}",
        per(totals[0]),
        per(totals[1]),
        totals[1].as_secs_f64() / totals[0].as_secs_f64().max(1e-9)
    );
}
