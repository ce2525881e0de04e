//! GET /api/v1/pods with 100 synthetic pods, through the real server on loopback (one
//! keep-alive connection, like a polling client). Prints the median and p99 of 1000 requests.
//!
//! cargo bench --bench api_list

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost::api::{ApiConfig, Published};

#[path = "support/sample_pod.rs"]
mod sample_pod;

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
    published.publish(
        (0..100).map(|i| sample_pod::pod(i, 1)).collect(),
        Default::default(),
        Default::default(),
    );
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
