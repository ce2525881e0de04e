//! Watches over HTTP on the in-process server: chunked JSON lines, a closed connection ends
//! its watch without any publish, and a client that stops reading is cut off with 410 once
//! the ring has moved past it, while publishing never waits for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api_support::*;

/// Sends a GET and reads the head; the reader is left at the body.
fn open(server: &Server, path: &str) -> (String, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            return (head, r);
        }
    }
}

/// The next chunk of a chunked body; `None` at its end.
fn chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data).unwrap();
    data.truncate(n);
    (n > 0).then_some(data)
}

fn event(r: &mut BufReader<TcpStream>) -> Value {
    serde_json::from_slice(&chunk(r).expect("an event")).unwrap()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_watch_is_a_chunked_stream_of_json_lines_ended_by_the_client() {
    let server = Server::start(|_| {});
    server.publish(vec![running_pod("web", 60, 0, 0)], vec![], Default::default());
    let (head, mut r) = open(&server, "/api/v1/pods?watch=1");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json\r\n"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    let added = chunk(&mut r).unwrap();
    assert_eq!(added.last(), Some(&b'\n'), "one JSON object per line");
    let added: Value = serde_json::from_slice(&added).unwrap();
    assert_eq!(
        (added["type"].as_str(), added["object"]["kind"].as_str()),
        (Some("ADDED"), Some("Pod"))
    );
    server.publish(vec![running_pod("web", 60, 1, 5)], vec![], Default::default());
    let modified = event(&mut r);
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["metadata"]["resourceVersion"], "2");
    assert_eq!(server.published.watchers(), 1);
    // The client goes away: the watch is gone without waiting for another change.
    drop(r);
    wait_until("the closed watch is still open", || server.published.watchers() == 0);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_with_410_and_never_holds_up_publishing() {
    let server = Server::start(|_| {});
    // Big objects, so the socket's buffers fill long before the ring turns over.
    let pod = |i: usize| {
        let mut p = running_pod("web", 60, 0, 0);
        p.metadata.annotations =
            Some([("blob".to_string(), format!("{i}{}", "x".repeat(64 * 1024)))].into());
        p
    };
    server.publish(vec![pod(0)], vec![], Default::default());
    let (_, mut r) = open(&server, "/api/v1/pods?watch=1&resourceVersion=1");
    let start = Instant::now();
    for i in 1..=400 {
        server.publish(vec![pod(i)], vec![], Default::default());
    }
    assert!(start.elapsed() < Duration::from_secs(5), "publishing waited: {:?}", start.elapsed());
    let mut types = Vec::new();
    while let Some(line) = chunk(&mut r) {
        let e: Value = serde_json::from_slice(&line).unwrap();
        types.push(e["type"].as_str().unwrap().to_string());
        if e["type"] == "ERROR" {
            assert_eq!(
                (e["object"]["code"].as_u64(), e["object"]["reason"].as_str()),
                (Some(410), Some("Expired"))
            );
        }
    }
    assert_eq!(types.last().map(String::as_str), Some("ERROR"), "{types:?}");
    assert!(types.len() < 400, "the watcher got everything: {}", types.len());
    wait_until("the expired watch is still open", || server.published.watchers() == 0);
}
