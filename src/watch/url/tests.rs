use std::time::Duration;

use super::*;
use crate::watch::{WatchOptions, Watcher};

const URL: &str = "https://user:pw@fleet.example:8443/site/a.yaml?X-Amz-Signature=secret";

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
    )
}

fn body(bytes: &str, etag: Option<&str>) -> Fetched {
    Fetched::Body {
        bytes: bytes.as_bytes().to_vec(),
        etag: etag.map(String::from),
        last_modified: None,
    }
}

fn options(urls: &[&str]) -> UrlOptions {
    UrlOptions { urls: urls.iter().map(|u| u.to_string()).collect(), ..UrlOptions::default() }
}

fn source(state: &Path) -> (Source, Vec<SourceUpdate>) {
    let (mut sources, initial) = UrlSources::load(&options(&[URL]), state).unwrap();
    (sources.sources.remove(0), initial)
}

fn names(update: &SourceUpdate) -> Vec<String> {
    let docs = update.documents.as_ref().expect("documents");
    docs.iter().map(|d| d.object.key().name).collect()
}

#[test]
fn a_bad_url_or_ca_file_fails_the_start_naming_it() {
    let state = tempfile::tempdir().unwrap();
    let err = UrlSources::load(&options(&["ftp://fleet/a.yaml"]), state.path()).err().unwrap();
    assert_eq!(err.to_string(), "--manifest-url ftp://fleet/a.yaml: scheme must be http or https");
    let ca = state.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
        .unwrap();
    let bad_ca = UrlOptions { ca_files: vec![ca.clone()], ..options(&[URL]) };
    let err = UrlSources::load(&bad_ca, state.path()).err().unwrap().to_string();
    assert!(err.starts_with(&format!("--manifest-url-ca: {}", ca.display())), "{err}");
}

#[test]
fn names_hide_credentials_and_queries() {
    assert_eq!(display_name(URL), "https://fleet.example:8443/site/a.yaml?…");
    assert_eq!(display_name("http://10.0.0.1/pods.yaml"), "http://10.0.0.1/pods.yaml");
    assert_eq!(display_name("ftp://u:pw@h/a.yaml?sig=1"), "ftp://h/a.yaml");
    assert_eq!(cache_name(URL).len(), 64);
    assert_ne!(cache_name(URL), cache_name("http://10.0.0.1/pods.yaml"));
}

#[test]
fn headers_are_parsed_and_never_shown() {
    let (name, value) = parse_header("Authorization:  Bearer abc ").unwrap();
    assert_eq!((name.as_str(), value.as_str()), ("authorization", "Bearer abc"));
    assert!(parse_header("no colon").is_err());
    assert!(parse_header("Bad Name: x").is_err());
    assert!(parse_header("X-Empty: ").is_err());
    let h = UrlHeader { name, value: HeaderValue::Literal(value) };
    assert!(!format!("{h:?}").contains("abc"), "{h:?}");
}

#[test]
fn back_off_doubles_from_the_interval_to_its_cap_with_jitter() {
    let s = Duration::from_secs;
    assert_eq!(backoff(s(20), 1, 1.0), s(20));
    assert_eq!(backoff(s(20), 2, 1.0), s(40));
    assert_eq!(backoff(s(20), 4, 1.0), s(160));
    assert_eq!(backoff(s(20), 5, 1.0), MAX_BACKOFF);
    assert_eq!(backoff(s(20), 500, 1.0), MAX_BACKOFF);
    // An interval longer than the cap is never shortened.
    assert_eq!(backoff(s(600), 3, 1.0), s(600));
    assert_eq!(backoff(s(20), 1, 0.8), s(16));
    assert_eq!(backoff(s(20), 1, 9.0), s(24));
    for _ in 0..100 {
        let j = jitter();
        assert!((0.8..1.2).contains(&j), "{j}");
    }
}

#[test]
fn a_body_is_parsed_like_a_file_and_the_last_valid_one_stays() {
    let state = tempfile::tempdir().unwrap();
    let (mut s, initial) = source(state.path());
    assert!(initial.is_empty());
    let interval = Duration::from_secs(20);

    let two = format!("{}---\n{}", pod("web"), pod("api"));
    let u = s.apply(body(&two, Some("\"v1\"")), interval, 100).expect("first body");
    assert_eq!(names(&u), ["web", "api"]);
    assert_eq!(u.documents.as_ref().unwrap()[1].path, Path::new(&s.name));
    assert_eq!(s.status.last_success, Some(100));
    assert_eq!(s.status.etag.as_deref(), Some("\"v1\""));
    assert_eq!(s.etag.as_deref(), Some("\"v1\""));

    // Unchanged (304), then unreachable: nothing new for the watcher.
    assert!(s.apply(Fetched::NotModified, interval, 120).is_none());
    assert_eq!(s.status.last_success, Some(120));
    assert!(s.apply(Fetched::Failed("dial tcp: refused".into()), interval, 140).is_none());
    assert_eq!(s.status.last_error.as_deref(), Some("dial tcp: refused"));
    assert_eq!((s.status.errors_total, s.status.fetches_total), (1, 3));
    assert_eq!(s.failures, 1);

    // Invalid: errors name the URL (no query) and line, once; the documents stay.
    let bad = format!("{}---\n{}", pod("web"), pod("api").replace("busybox", "''"));
    let u = s.apply(body(&bad, Some("\"v2\"")), interval, 160).expect("errors");
    assert!(u.documents.is_none());
    let e = u.errors[0].to_string();
    assert!(e.starts_with("https://fleet.example:8443/site/a.yaml?…:"), "{e}");
    assert!(!e.contains("secret") && !e.contains("pw"), "{e}");
    assert_eq!(u.errors[0].line, 17, "{e}");
    assert!(s.status.last_error.as_deref().unwrap().starts_with("invalid body"));
    // A bad body's validators are not kept: the next poll gets it in full again.
    assert_eq!(s.etag.as_deref(), Some("\"v1\""));
    assert!(s.apply(body(&bad, Some("\"v2\"")), interval, 180).is_none(), "reported once");

    // Emptied: invalid as long as the source had objects.
    let u = s.apply(body("", None), interval, 200).expect("empty body");
    assert!(u.documents.is_none() && u.errors[0].message.contains("empty"), "{:?}", u.errors);

    // Valid again: the new set, back-off reset.
    let u = s.apply(body(&pod("web"), Some("\"v3\"")), interval, 220).expect("resync");
    assert_eq!(names(&u), ["web"]);
    assert_eq!(s.failures, 0);
    // A comment alone removes every object.
    let u = s.apply(body("# nothing here\n", None), interval, 240).expect("emptied");
    assert_eq!(names(&u), Vec::<String>::new());
}

#[test]
fn the_last_valid_body_is_cached_and_loaded_before_any_fetch() {
    let state = tempfile::tempdir().unwrap();
    let (mut s, _) = source(state.path());
    let interval = Duration::from_secs(20);
    s.apply(body(&pod("web"), Some("\"v1\"")), interval, 100).unwrap();
    s.cache_write().expect("a valid body is cached")();
    // Neither an invalid body nor a failure replaces the cache.
    s.apply(body("kind: [", Some("\"v2\"")), interval, 120).unwrap();
    s.apply(Fetched::Failed("status 500".into()), interval, 140);
    assert!(s.cache_write().is_none());
    let file = state.path().join(CACHE_DIR).join(cache_name(URL));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    let cached = std::fs::read_to_string(&file).unwrap();
    assert!(!cached.contains("secret"), "{cached}");

    let (again, initial) = source(state.path());
    assert_eq!(initial.len(), 1);
    assert_eq!(names(&initial[0]), ["web"]);
    assert_eq!(again.etag.as_deref(), Some("\"v1\""), "the next GET is conditional");
    assert!(again.status.from_cache);

    // A damaged cache is ignored, not fatal.
    std::fs::write(&file, "not json\nkind: Pod").unwrap();
    let (_, initial) = source(state.path());
    assert!(initial.is_empty());
}

#[test]
fn sources_merge_with_the_directory_and_the_first_definition_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), pod("web")).unwrap();
    let name = display_name(URL);
    let docs =
        crate::manifest::parse_str(Path::new(&name), &format!("{}---\n{}", pod("web"), pod("api")))
            .unwrap();
    let cached = SourceUpdate { name: name.clone(), documents: Some(docs), errors: Vec::new() };
    let (watcher, updates) =
        Watcher::start_with_sources(dir.path(), WatchOptions::default(), vec![cached]).unwrap();
    let first = smol::block_on(updates.recv()).unwrap();
    let web = &first.state.pods[&crate::manifest::ObjectKey::new("default", "web")];
    assert_eq!(web.source, dir.path().join("web.yaml"));
    let api = &first.state.pods[&crate::manifest::ObjectKey::new("default", "api")];
    assert_eq!(api.source, Path::new(&name));
    let dup = first.errors.iter().map(ToString::to_string).find(|e| e.contains("already defined"));
    let dup = dup.expect("duplicate reported");
    assert!(dup.contains(&name) && dup.contains("web.yaml"), "{dup}");

    // A new body replaces the source's objects only.
    let docs = crate::manifest::parse_str(Path::new(&name), &pod("db")).unwrap();
    assert!(watcher.source_sender().send(SourceUpdate {
        name: name.clone(),
        documents: Some(docs),
        errors: Vec::new(),
    }));
    let next = smol::block_on(updates.recv()).unwrap();
    let pods: Vec<_> = next.state.pods.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(pods, ["db", "web"]);
}

/// A loopback server answering each connection with the next canned response; returns the
/// request heads.
fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/fleet.yaml", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for response in responses {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            heads.push(head);
            let _ = conn.write_all(&response);
        }
        heads
    });
    (url, thread)
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn fetches_are_conditional_and_errors_say_what_to_fix() {
    let state = tempfile::tempdir().unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "Bearer t0k\n").unwrap();
    let big = vec![b'#'; MAX_FILE_BYTES as usize + 1];
    let (url, server) = serve(vec![
        response(
            "200 OK",
            "ETag: \"e1\"\r\nLast-Modified: Mon, 07 Dec 2026 10:00:00 GMT\r\n",
            pod("web").as_bytes(),
        ),
        response("304 Not Modified", "", b""),
        response("500 Internal Server Error", "", b"oops"),
        response("302 Found", "Location: https://elsewhere/x?sig=1\r\n", b""),
        response("200 OK", "", &big),
    ]);
    let headers = vec![
        UrlHeader {
            name: HeaderName::from_static("x-site"),
            value: HeaderValue::Literal("s1".into()),
        },
        UrlHeader { name: header::AUTHORIZATION, value: HeaderValue::File(token.clone()) },
    ];
    let (mut sources, _) =
        UrlSources::load(&UrlOptions { headers, ..options(&[&url]) }, state.path()).unwrap();
    let interval = Duration::from_secs(1);
    let fetch = |sources: &mut UrlSources| {
        let fetched = smol::block_on(sources.fetch(0));
        let shown = format!("{fetched:?}");
        sources.sources[0].apply(fetched, interval, 0);
        shown
    };
    assert!(fetch(&mut sources).starts_with("Body"));
    assert_eq!(fetch(&mut sources), "NotModified");
    assert_eq!(fetch(&mut sources), "Failed(\"status 500\")");
    let redirect = fetch(&mut sources);
    assert!(
        redirect.contains("redirects are not followed") && !redirect.contains("sig"),
        "{redirect}"
    );
    let big = fetch(&mut sources);
    assert!(big.contains("larger than 1024 KiB"), "{big}");
    let heads = server.join().unwrap();
    assert!(
        heads[0].contains("x-site: s1\r\n") && heads[0].contains("authorization: bearer t0k\r\n")
    );
    assert!(!heads[0].contains("if-none-match"), "{}", heads[0]);
    assert!(heads[1].contains("if-none-match: \"e1\"\r\n"), "{}", heads[1]);
    assert!(heads[1].contains("if-modified-since: mon, 07 dec 2026 10:00:00 gmt\r\n"));

    // An unreadable header file fails the poll, naming the header and the file only.
    std::fs::remove_file(&token).unwrap();
    let failed = fetch(&mut sources);
    assert!(failed.contains("header authorization from") && failed.contains("token"), "{failed}");
    assert!(!failed.contains("t0k"));
}

#[test]
fn a_server_that_never_finishes_fails_the_fetch_at_its_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/slow.yaml", listener.local_addr().unwrap());
    // Accepts and says nothing: every wait of the client is within its own timeout.
    let hold = std::thread::spawn(move || listener.accept().map(|(c, _)| c));
    let state = tempfile::tempdir().unwrap();
    let (sources, _) = UrlSources::load(&options(&[&url]), state.path()).unwrap();
    let started = Instant::now();
    let fetched = smol::block_on(sources.fetch_within(0, Duration::from_millis(300)));
    assert_eq!(format!("{fetched:?}"), "Failed(\"no complete answer within 300ms\")");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    drop(hold.join());
}

/// HTTPS with a private CA: refused without `--manifest-url-ca`, fetched with it.
#[test]
fn https_trusts_the_system_store_and_the_given_ca_files() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
        .unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("https://localhost:{}/fleet.yaml", listener.local_addr().unwrap().port());
    let body = pod("web");
    let server = smol::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
            let mut buf = [0u8; 4096];
            let _ = smol::io::AsyncReadExt::read(&mut tls, &mut buf).await;
            let reply = response("200 OK", "", body.as_bytes());
            let _ = smol::io::AsyncWriteExt::write_all(&mut tls, &reply).await;
            let _ = smol::io::AsyncWriteExt::close(&mut tls).await;
        }
    });
    let state = tempfile::tempdir().unwrap();
    let (untrusted, _) = UrlSources::load(&options(&[&url]), state.path()).unwrap();
    let refused = format!("{:?}", smol::block_on(untrusted.fetch(0)));
    assert!(refused.contains("tls handshake with localhost"), "{refused}");
    let ca = state.path().join("fleet-ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let trusted = UrlOptions { ca_files: vec![ca], ..options(&[&url]) };
    let (sources, _) = UrlSources::load(&trusted, state.path()).unwrap();
    match smol::block_on(sources.fetch(0)) {
        Fetched::Body { bytes, .. } => assert_eq!(bytes, pod("web").as_bytes()),
        other => panic!("{other:?}"),
    }
    drop(server);
}
