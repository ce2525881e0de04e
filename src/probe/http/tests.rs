use super::*;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::sync::{Arc, Mutex};

type Seen = Arc<Mutex<Vec<String>>>;

async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    answer: &(dyn Fn(&str) -> String + Send + Sync),
    seen: &Seen,
) {
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]).to_string();
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(req);
    let _ = s.write_all(answer(&path).as_bytes()).await;
    let _ = s.close().await;
}

/// A server answering each connection's request from `answer(path)`, over TLS with a
/// self-signed certificate when `tls`; it records the requests.
fn server(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
    tls: bool,
) -> (SocketAddr, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let acceptor = tls.then(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["example.invalid".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        futures_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            smol::block_on(async {
                let mut s = smol::Async::new(stream).unwrap();
                match &acceptor {
                    Some(a) => {
                        if let Ok(mut t) = a.accept(s).await {
                            answer_one(&mut t, &answer, &log).await;
                        }
                    }
                    None => answer_one(&mut s, &answer, &log).await,
                }
            });
        }
    });
    (addr, seen)
}

fn probe(addr: SocketAddr, path: &str) -> HttpGet {
    HttpGet {
        addr,
        url_host: addr.ip().to_string(),
        host_header: None,
        path: path.into(),
        scheme: "HTTP".into(),
        headers: vec![],
        netns: None,
    }
}

fn reply(status: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n{extra}\r\nok")
}

fn answers(path: &str) -> String {
    match path {
        "/ok" => reply("200 OK", ""),
        "/moved" => reply("302 Found", "location: /ok\r\n"),
        "/relative/x" => reply("301 Moved Permanently", "location: y\r\n"),
        "/relative/y" => reply("204 No Content", ""),
        "/away" => reply("302 Found", "location: http://192.0.2.1/x\r\n"),
        "/loop" => reply("302 Found", "location: /loop\r\n"),
        "/teapot" => reply("399 Whatever", ""),
        "/error" => reply("500 Internal Server Error", ""),
        _ => reply("404 Not Found", ""),
    }
}

/// Sockets in TIME_WAIT whose local port is `port` (IPv4, /proc/net/tcp).
fn time_waits_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
        })
        .count()
}

/// One connection accepted on a fresh listener; `serve` runs on it in a thread.
fn one_connection<T: Send + 'static>(
    serve: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, std::thread::spawn(move || serve(listener.accept().unwrap().0)))
}

#[test]
fn a_server_that_closed_first_is_reset_and_keeps_no_time_wait() {
    use std::io::{Read, Write};
    let (addr, server) = one_connection(|mut s| {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        // No length: the body ends where the server closes, so the probe sees the EOF.
        s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok").unwrap();
    });
    let t = Duration::from_secs(2);
    assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/"), t)), Ok(None));
    server.join().unwrap();
    // An ordinary close would leave the server's side in TIME_WAIT for a minute.
    assert_eq!(time_waits_on(addr.port()), 0, "the server's socket was released");
}

#[test]
fn a_server_still_open_gets_an_orderly_close() {
    use std::io::{Read, Write};
    let (addr, server) = one_connection(|mut s| {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        // Keeps its side open and waits for the client's end: EOF, not a reset.
        s.read(&mut buf).map_err(|e| e.kind())
    });
    let t = Duration::from_secs(2);
    assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/"), t)), Ok(None));
    assert_eq!(server.join().unwrap(), Ok(0));
}

#[test]
fn status_codes_decide_like_the_kubelet() {
    let (addr, seen) = server(answers, false);
    let t = Duration::from_secs(2);
    crate::probe::tests_support::run(async {
        assert_eq!(http_get(&probe(addr, "/ok"), t).await, Ok(None));
        assert_eq!(http_get(&probe(addr, "/moved"), t).await, Ok(None));
        assert_eq!(http_get(&probe(addr, "relative/x"), t).await, Ok(None));
        // The kubelet's DoHTTPProbe: a 3xx it did not follow is a success with a warning.
        let warning = Some("Probe terminated redirects, Response body: ok".to_string());
        assert_eq!(
            http_get(&probe(addr, "/away"), t).await,
            Ok(warning.clone()),
            "a redirect elsewhere is not followed: the 3xx counts as success"
        );
        assert_eq!(http_get(&probe(addr, "/teapot"), t).await, Ok(warning));
        assert_eq!(
            http_get(&probe(addr, "/missing"), t).await,
            Err("HTTP probe failed with statuscode: 404".into())
        );
        let err = http_get(&probe(addr, "/loop"), t).await.unwrap_err();
        assert_eq!(err, format!("Get \"http://{addr}/loop\": stopped after 10 redirects"));
    });
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap().to_string())
        .take(6)
        .collect();
    assert_eq!(paths, ["/ok", "/moved", "/ok", "/relative/x", "/relative/y", "/away"]);
}

/// Same host, other port: followed (Go compares host names only).
#[test]
fn redirect_to_another_port_of_the_same_host_is_followed() {
    let (target, _) = server(answers, false);
    let port = target.port();
    let (addr, seen) = server(
        move |_| {
            let to = format!("location: http://127.0.0.1:{port}/error\r\n");
            reply("307 Temporary Redirect", &to)
        },
        false,
    );
    let err = crate::probe::tests_support::run(http_get(&probe(addr, "/"), Duration::from_secs(2)));
    assert_eq!(err, Err("HTTP probe failed with statuscode: 500".into()));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn handler_headers_replace_the_defaults() {
    let (addr, seen) = server(answers, false);
    let mut p = probe(addr, "/ok");
    p.headers = vec![
        ("User-Agent".into(), "mine".into()),
        ("X-Two".into(), "a".into()),
        ("X-Two".into(), "b".into()),
    ];
    assert_eq!(crate::probe::tests_support::run(http_get(&p, Duration::from_secs(2))), Ok(None));
    p.host_header = Some("example.test".into());
    assert_eq!(crate::probe::tests_support::run(http_get(&p, Duration::from_secs(2))), Ok(None));
    let seen = seen.lock().unwrap();
    let lines = |r: &str| -> Vec<String> {
        let mut l: Vec<String> =
            r.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.to_lowercase()).collect();
        l.sort();
        l
    };
    assert_eq!(
        lines(&seen[0]),
        [
            "accept: */*".to_string(),
            "connection: close".into(),
            format!("host: {addr}"),
            "user-agent: mine".into(),
            "x-two: a".into(),
            "x-two: b".into(),
        ]
    );
    assert!(lines(&seen[1]).contains(&"host: example.test".to_string()), "{:?}", seen[1]);
}

/// HTTPS without certificate verification, as the kubelet's prober does.
#[test]
fn https_accepts_a_self_signed_certificate() {
    let (addr, seen) = server(answers, true);
    let t = Duration::from_secs(5);
    let mut p = probe(addr, "/ok");
    p.scheme = "HTTPS".into();
    assert_eq!(crate::probe::tests_support::run(http_get(&p, t)), Ok(None));
    p.path = "/error".into();
    assert_eq!(
        crate::probe::tests_support::run(http_get(&p, t)),
        Err("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn https_to_a_plain_server_fails() {
    let (addr, _) = server(answers, false);
    let mut p = probe(addr, "/ok");
    p.scheme = "HTTPS".into();
    let err = crate::probe::tests_support::run(http_get(&p, Duration::from_secs(5))).unwrap_err();
    assert!(err.starts_with(&format!("Get \"https://{addr}/ok\": tls: ")), "{err}");
}

/// Hooks succeed on any answer; only transport errors fail them.
#[test]
fn hooks_accept_any_status() {
    let (addr, _) = server(answers, false);
    let t = Duration::from_secs(2);
    assert_eq!(crate::probe::tests_support::run(http_get_any(&probe(addr, "/error"), t)), Ok(()));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = crate::probe::tests_support::run(http_get_any(&probe(closed, "/"), t)).unwrap_err();
    assert_eq!(
        err,
        format!("Get \"http://{closed}/\": dial tcp {closed}: connect: connection refused")
    );
}

#[test]
fn unknown_scheme_is_refused() {
    let mut p = probe("127.0.0.1:1".parse().unwrap(), "/");
    p.scheme = "FTP".into();
    let err = crate::probe::tests_support::run(http_get(&p, Duration::from_secs(1))).unwrap_err();
    assert_eq!(err, "Get \"ftp://127.0.0.1:1/\": unsupported protocol scheme \"ftp\"");
}

/// Interim 1xx answers are skipped as Go's client does; the final answer decides.
#[test]
fn interim_answers_are_skipped() {
    let (addr, _) = server(
        |path| match path {
            "/continue" => format!("HTTP/1.1 100 Continue\r\n\r\n{}", reply("503 No", "")),
            _ => {
                format!("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n{}", reply("200 OK", ""))
            }
        },
        false,
    );
    let t = Duration::from_secs(2);
    assert_eq!(
        crate::probe::tests_support::run(http_get(&probe(addr, "/continue"), t)),
        Err("HTTP probe failed with statuscode: 503".into())
    );
    assert_eq!(crate::probe::tests_support::run(http_get(&probe(addr, "/hints"), t)), Ok(None));
}

/// The warning carries the body as Go's client hands it over: decoded, at most 10 KiB.
#[test]
fn a_redirect_to_another_host_warns_with_the_body() {
    let (addr, _) = server(
        |path| {
            match path {
            // Go's http.Redirect, chunked.
            "/chunked" => "HTTP/1.1 302 Found\r\nlocation: http://0.0.0.0/\r\ntransfer-encoding: chunked\r\n\r\n1a\r\n<a href=\"http://0.0.0.0/\">\r\n8;x=y\r\nFound</a\r\n3\r\n>.\n\r\n0\r\n\r\n".into(),
            "/empty" => "HTTP/1.1 308 Permanent Redirect\r\nlocation: https://example.test/\r\ncontent-length: 0\r\n\r\n".into(),
            _ => format!(
                "HTTP/1.1 301 Moved\r\nlocation: http://192.0.2.1/\r\ncontent-length: 20000\r\n\r\n{}",
                "z".repeat(20_000)
            ),
        }
        },
        false,
    );
    let t = Duration::from_secs(2);
    let get = |path| crate::probe::tests_support::run(http_get(&probe(addr, path), t));
    let prefix = "Probe terminated redirects, Response body: ";
    assert_eq!(
        get("/chunked"),
        Ok(Some(format!("{prefix}<a href=\"http://0.0.0.0/\">Found</a>.\n")))
    );
    assert_eq!(get("/empty"), Ok(Some(prefix.to_string())));
    assert_eq!(get("/long"), Ok(Some(format!("{prefix}{}", "z".repeat(MAX_BODY)))));
}

#[test]
fn dechunk_stops_at_what_is_missing() {
    assert_eq!(dechunk(b"2\r\nok\r\n0\r\n\r\n"), b"ok");
    assert_eq!(dechunk(b"5\r\nhel"), b"hel");
    assert_eq!(dechunk(b"zz\r\nok"), b"");
    assert_eq!(dechunk(b""), b"");
}

/// Bodies without a length (chunked, or until close) and larger than the kubelet reads
/// do not hold the probe.
#[test]
fn bodies_of_any_framing_are_read_bounded() {
    let (addr, _) = server(
        |path| match path {
            "/chunked" => {
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".into()
            }
            "/close" => format!("HTTP/1.1 201 Created\r\n\r\n{}", "x".repeat(50_000)),
            _ => format!("HTTP/1.1 202 OK\r\ncontent-length: 50000\r\n\r\n{}", "y".repeat(50_000)),
        },
        false,
    );
    let t = Duration::from_secs(2);
    for path in ["/chunked", "/close", "/long"] {
        assert_eq!(
            crate::probe::tests_support::run(http_get(&probe(addr, path), t)),
            Ok(None),
            "{path}"
        );
    }
}

/// Go's messages for a server that closes early or answers garbage.
#[test]
fn broken_answers_fail_with_gos_messages() {
    let (addr, _) = server(
        |path| match path {
            "/nothing" => String::new(),
            "/half" => "HTTP/1.1 200 OK\r\ncontent-".into(),
            _ => "SSH-2.0-OpenSSH_9.2\r\n\r\n".into(),
        },
        false,
    );
    let t = Duration::from_secs(2);
    let get =
        |path: &str| crate::probe::tests_support::run(http_get(&probe(addr, path), t)).unwrap_err();
    assert_eq!(get("/nothing"), format!("Get \"http://{addr}/nothing\": EOF"));
    assert_eq!(get("/half"), format!("Get \"http://{addr}/half\": unexpected EOF"));
    assert!(get("/ssh").contains("malformed HTTP response"), "{}", get("/ssh"));
    let long = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let long_addr = long.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = long.accept().unwrap();
        let _ = s.read(&mut [0; 4096]);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        let _ = s.write_all(format!("x: {}\r\n", "a".repeat(100_000)).as_bytes());
    });
    let err = crate::probe::tests_support::run(http_get(&probe(long_addr, "/"), t)).unwrap_err();
    assert!(err.ends_with("server response headers exceeded 65536 bytes; aborted"), "{err}");
}

#[test]
fn a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let err =
        crate::probe::tests_support::run(http_get(&probe(addr, "/"), Duration::from_millis(200)))
            .unwrap_err();
    assert_eq!(err, format!("Get \"http://{addr}/\": context deadline exceeded (timeout 0.2s)"));
    drop(listener);
}
