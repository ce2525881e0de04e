//! The status page in a real headless browser (Debian's chromium): the overview lists the
//! pods with their states and the failing pod's reason, a pod page shows its log, and its
//! follow button makes the log grow in real time (chromium driven over the DevTools protocol);
//! and on the secure listener the login form's cookie opens the pages and nothing else.
//!
//! `OUTPOST_SCREENSHOTS=DIR` keeps the screenshots (docs/status-*.png are made so).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const GOOD: &str = "statuspage-good";
const BAD: &str = "statuspage-crash";

fn pods(agent: &Agent) {
    let ticker = "i=0; while true; do echo \"statuspage tick $i <b>not bold</b>\"; i=$((i+1)); sleep 0.3; done";
    agent.apply(
        "good.yaml",
        &pod(
            GOOD,
            ticker,
            "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n",
            "",
        ),
    );
    agent.apply("bad.yaml", &pod(BAD, "echo statuspage cannot find its config; exit 3", "", ""));
    agent.wait_pod(GOOD, T, |p| {
        p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    agent.wait_pod(BAD, Duration::from_secs(60), |p| {
        let cs = container_status(p, "app");
        cs["restartCount"].as_i64().unwrap_or(0) >= 1
            && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
}

/// Headless, and nothing to reach on the network of its own accord (this machine's network is
/// closed: Google's hosts, component updates and sync would only fail, many at a time).
const QUIET: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// chromium with a profile of its own (tests run side by side); its stdout.
fn chromium(dir: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out = Command::new("chromium")
        .args(QUIET)
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium missing: install it (tests/prereqs.sh does: apt-get install chromium)");
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(agent: &Agent, url: &str, file: &str, height: u32) {
    let dir = std::env::var_os("OUTPOST_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| agent.dir.path().to_path_buf());
    let path = dir.join(file);
    let _ = std::fs::remove_file(&path);
    chromium(
        agent.dir.path(),
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size=1000,{height}"),
            url,
        ],
    );
    let png = std::fs::read(&path).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}

/// Headless chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// JSON messages ending in NUL, commands on fd 3, answers on fd 4), so a page is read after real
/// seconds: `--dump-dom` snapshots right after the load, and its virtual time runs ahead.
struct Browser {
    child: std::process::Child,
    commands: std::fs::File,
    answers: std::sync::mpsc::Receiver<serde_json::Value>,
    session: String,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromium with `url` open and loaded.
    fn open(dir: &Path, url: &str) -> Browser {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir_in(dir).unwrap();
        // Both ends above 4 (close-on-exec), so the child's dup2 onto 3 and 4 overwrites
        // nothing it still needs; the dup2'd copies are the only ones it inherits.
        let high = |fd: OwnedFd| {
            let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10));
            unsafe { OwnedFd::from_raw_fd(raw.unwrap()) }
        };
        let (to_read, to_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (from_read, from_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (to_read, to_write) = (high(to_read), high(to_write));
        let (from_read, from_write) = (high(from_read), high(from_write));
        let (child_in, child_out) = (to_read.as_raw_fd(), from_write.as_raw_fd());
        let mut command = Command::new("chromium");
        command
            .args(QUIET)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: dup2 is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for (from, to) in [(child_in, 3), (child_out, 4)] {
                    if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect(
            "chromium missing: install it (tests/prereqs.sh does: apt-get install chromium)",
        );
        drop((to_read, from_write));
        let (tx, answers) = std::sync::mpsc::channel();
        let mut from = std::io::BufReader::new(std::fs::File::from(from_read));
        std::thread::spawn(move || loop {
            let mut message = Vec::new();
            match std::io::BufRead::read_until(&mut from, 0, &mut message) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    message.pop();
                    let Ok(value) = serde_json::from_slice(&message) else { return };
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands: std::fs::File::from(to_write),
            answers,
            session: String::new(),
            next: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", serde_json::json!({ "url": url }));
        let target = target["targetId"].clone();
        let attached = browser.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        // The new tab shows about:blank (complete at once) before the navigation commits.
        let loaded = "document.readyState + ' ' + location.href";
        eventually(T, || match browser.eval(loaded).as_str() {
            Some(state) if state == format!("complete {url}") => Ok(()),
            other => Err(format!("{url} still loading: {other:?}")),
        });
        browser
    }

    /// One command (to the page once attached); its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let mut message =
            serde_json::json!({ "id": self.next, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("chromium's command pipe");
        loop {
            let answer = self
                .answers
                .recv_timeout(T)
                .unwrap_or_else(|e| panic!("no answer from chromium to {method}: {e}"));
            if answer["id"] == self.next {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// An expression evaluated in the page; its value.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session.clear();
        self.next += 1;
        let close = serde_json::json!({ "id": self.next, "method": "Browser.close" });
        let _ = self.commands.write_all(format!("{close}\0").as_bytes());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn status_page_in_a_browser_shows_pods_reasons_and_growing_logs() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    pods(&agent);
    let base = format!("http://{}", agent.addr);

    // The overview: both pods with their states, the failing one first and with its reason.
    let dom = eventually(T, || {
        let dom = chromium(agent.dir.path(), &["--dump-dom", &format!("{base}/")]);
        if dom.contains("CrashLoopBackOff") && dom.contains(GOOD) {
            Ok(dom)
        } else {
            Err(dom)
        }
    });
    let (good, bad) = (dom.find(&format!(">{GOOD}<")), dom.find(&format!(">{BAD}<")));
    assert!(bad.is_some() && good.is_some() && bad < good, "problems first: {dom}");
    let bad_row = &dom[dom[..bad.unwrap()].rfind("<tr").unwrap()..good.unwrap()];
    assert!(bad_row.contains("Problem"), "a text label, not only colour: {bad_row}");
    assert!(bad_row.contains("exit code 3"), "the failing pod's reason: {bad_row}");
    let good_row = &dom[dom[..good.unwrap()].rfind("<tr").unwrap()..];
    assert!(good_row.contains(">OK<") && good_row.contains("Running"), "{good_row}");
    assert!(dom.contains("Pods: 2 (1 with problems)"), "{dom}");
    screenshot(&agent, &format!("{base}/"), "status-overview.png", 560);

    // The pod page: containers, probes, the log (escaped: the markup is text).
    let page = format!("{base}/ui/pods/default/{GOOD}");
    let dom = chromium(agent.dir.path(), &["--dump-dom", &page]);
    assert!(dom.contains("statuspage tick"), "{dom}");
    assert!(dom.contains("&lt;b&gt;not bold&lt;/b&gt;"), "log markup shown as text: {dom}");
    assert!(dom.contains("readiness") && dom.contains("good.yaml"), "{dom}");
    let dom = chromium(agent.dir.path(), &["--dump-dom", &format!("{base}/ui/pods/default/{BAD}")]);
    assert!(dom.contains("Waiting: CrashLoopBackOff") && dom.contains("(exit code 3)"), "{dom}");
    assert!(dom.contains("statuspage cannot find its config"), "the last instance's log: {dom}");
    screenshot(&agent, &page, "status-pod.png", 900);

    // Following in a browser, in real time: the page's script runs under the page's
    // Content-Security-Policy, and its log grows while the page stays open.
    let mut browser = Browser::open(agent.dir.path(), &page);
    // The number of the last tick the page shows (the ticker prints one every 0.3 s).
    let last_tick = |b: &mut Browser| {
        let text = b.eval("document.getElementById('log-0').textContent");
        let text = text.as_str().unwrap_or_default().to_string();
        text.rsplit("statuspage tick ")
            .next()
            .and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
    };
    let loaded = last_tick(&mut browser).expect("the page's log before following");
    let label = browser.eval(
        "(() => { const b = document.querySelector('button[data-log]'); b.click(); return b.textContent; })()",
    );
    assert_eq!(label, "Following\u{2026}", "the follow button ran");
    // 4 s give about 13 ticks; the page shows them without a reload.
    std::thread::sleep(Duration::from_secs(4));
    let later = last_tick(&mut browser);
    assert!(
        later.is_some_and(|t| t >= loaded + 5),
        "the log grows while followed: tick {loaded} at load, then {later:?}"
    );
    drop(browser);

    // Follow mode's stream: the log keeps growing while it is read.
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let path = format!("/ui/pods/default/{GOOD}/log?container=app&follow=true&tailLines=1");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").unwrap();
    let (mut got, start) = (Vec::new(), Instant::now());
    let ticks = |got: &[u8]| String::from_utf8_lossy(got).matches("statuspage tick").count();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(4) {
        let mut buf = [0; 4096];
        if let Ok(n @ 1..) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        seen.push(ticks(&got));
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_lowercase().contains("x-content-type-options: nosniff"), "{text}");
    assert!(seen[0] <= 1 && *seen.last().unwrap() >= 5, "grows while followed: {seen:?} {text}");
}

/// `outpost kubeconfig`'s token for a new user with `role`.
fn token(agent: &Agent, role: &str, user: &str) -> String {
    let state = agent.state.display().to_string();
    let (code, out, err) = crate::runner::outpost(&[
        "kubeconfig",
        "--state",
        &state,
        "--server",
        "https://127.0.0.1:1",
        "--role",
        role,
        "--user",
        user,
    ]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the kubeconfig")
        .trim()
        .to_string()
}

/// One HTTPS request (the certificate is not checked: the cookie is the subject here);
/// the whole response.
fn https(addr: &str, request: &str) -> String {
    #[derive(Debug)]
    struct AnyServer;
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn secure_addr(agent: &Agent) -> String {
    eventually(Duration::from_secs(10), || {
        agent
            .agent_log()
            .iter()
            .find_map(|l| l.split("api: listening securely on https://").nth(1))
            .map(|a| a.trim().to_string())
            .ok_or_else(|| "no secure listener in the log".to_string())
    })
}

#[test]
fn status_page_login_cookie_opens_the_pages_and_nothing_else() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--secure-listen", "127.0.0.1:0"]);
    agent.apply("solo.yaml", &pod("statuspage-login", "exec sleep 3600", "", ""));
    agent.wait_pod("statuspage-login", T, |p| phase(p) == "Running");
    let addr = secure_addr(&agent);
    let get = |path: &str, extra: &str| {
        https(
            &addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    let post = |path: &str, origin: &str, body: &str| {
        https(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // Not logged in: a browser is sent to the form; the form itself is open.
    let r = get("/", "");
    assert!(r.starts_with("HTTP/1.1 303") && r.contains("location: /ui/login"), "{r}");
    let r = get("/ui/login", "");
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("type=\"password\""), "{r}");

    let view = token(&agent, "view", "kiosk");
    let own = format!("https://{addr}");
    let r = post("/ui/login", "https://evil.example", &format!("token={view}"));
    assert!(r.starts_with("HTTP/1.1 403") && !r.contains("set-cookie"), "login CSRF: {r}");
    let r = post("/ui/login", &own, "token=outpost-wrong");
    assert!(r.starts_with("HTTP/1.1 401") && !r.contains("set-cookie"), "{r}");
    let r = post("/ui/login", &own, &format!("token={view}"));
    assert!(r.starts_with("HTTP/1.1 303") && r.contains("location: /\r\n"), "{r}");
    let set = r.lines().find(|l| l.starts_with("set-cookie: ")).expect("a cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.trim_start_matches("set-cookie: ").split(';').next().unwrap().to_string();
    let with = format!("Cookie: {cookie}\r\n");

    let r = get("/", &with);
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("statuspage-login"), "{r}");
    assert!(r.contains("Log out"), "a login offers to log out: {r}");
    assert!(r.contains("content-security-policy: default-src 'none'"), "{r}");
    let r = get("/ui/pods/default/statuspage-login", &with);
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("Running"), "{r}");
    // Anything but the pages: the cookie counts for nothing.
    for path in [
        "/api/v1/pods",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/pods/statuspage-login/exec?command=true&stdout=true",
    ] {
        let r = get(path, &with);
        assert!(r.starts_with("HTTP/1.1 401"), "{path}: {r}");
    }
    // An admin's token through the cookie still only reads the pages.
    let admin = token(&agent, "admin", "ops");
    let r = post("/ui/login", &own, &format!("token={admin}"));
    let cookie = r.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let r = get(
        "/api/v1/namespaces/default/pods/statuspage-login/exec?command=true&stdout=true",
        &format!("Cookie: {cookie}\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // Logging out clears the cookie.
    let r = post("/ui/logout", &own, "");
    assert!(r.starts_with("HTTP/1.1 303") && r.contains("Max-Age=0"), "{r}");
}
