//! GET /api/v1/pods with 100 synthetic pods, through the real server on loopback (one
//! keep-alive connection, like a polling client). Prints the median and p99 of 1000 requests.
//!
//! cargo bench --bench api_list

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use outpost::api::{ApiConfig, Published};

fn pod(i: usize) -> Pod {
    let t = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let container = |n: usize| Container {
        name: format!("c{n}"),
        image: Some("registry.local/app:1.2.3".into()),
        command: Some(vec!["sh".into(), "-c".into(), "exec app --serve".into()]),
        ..Default::default()
    };
    let status = |n: usize| ContainerStatus {
        name: format!("c{n}"),
        image: "registry.local/app:1.2.3".into(),
        image_id: "sha256:0123456789abcdef".into(),
        container_id: Some(format!("outpost://pod-{i}/c{n}")),
        ready: true,
        started: Some(true),
        restart_count: 1,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(t.clone()) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:03}")),
            namespace: Some("default".into()),
            uid: Some(format!("00000000-0000-0000-0000-{i:012}")),
            labels: Some([("app".to_string(), format!("app-{}", i % 10))].into()),
            creation_timestamp: Some(t.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec { containers: vec![container(0), container(1)], ..Default::default() }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(format!("10.88.0.{}", i + 2)),
            conditions: Some(
                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                    .iter()
                    .map(|c| PodCondition {
                        type_: c.to_string(),
                        status: "True".into(),
                        last_transition_time: Some(t.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            container_statuses: Some(vec![status(0), status(1)]),
            ..Default::default()
        }),
    }
}

/// One request on a keep-alive connection; returns the body length.
fn get(stream: &mut BufReader<TcpStream>, path: &str) -> usize {
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream.get_mut().write_all(req.as_bytes()).expect("write");
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).expect("read header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).expect("body");
    len
}

fn main() {
    let published = Arc::new(Published::default());
    published.publish((0..100).map(pod).collect(), Default::default(), Default::default());
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), std::env::temp_dir());
    let (tx, rx) = std::sync::mpsc::channel();
    let p = published.clone();
    std::thread::spawn(move || {
        smol::block_on(outpost::api::serve(config, p, |a| tx.send(a).unwrap())).expect("serve")
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("bound");
    let mut stream = BufReader::new(TcpStream::connect(addr).expect("connect"));
    let size = get(&mut stream, "/api/v1/pods");
    for _ in 0..50 {
        get(&mut stream, "/api/v1/pods");
    }
    let mut times: Vec<Duration> = (0..1000)
        .map(|_| {
            let start = Instant::now();
            get(&mut stream, "/api/v1/pods");
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "GET /api/v1/pods, 100 pods ({size} bytes): median {:.2} ms, p99 {:.2} ms over {} requests",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 99 / 100].as_secs_f64() * 1e3,
        times.len()
    );
}
