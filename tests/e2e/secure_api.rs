//! `--secure-listen` through the real kubectl, as from a laptop: `outpost kubeconfig`'s
//! output used as is (the CA verified, no insecure-skip-tls-verify), tokens with the view
//! and admin roles, a client certificate, revocation while the agent runs, 401 and 403; and
//! the plain listener refusing a non-loopback address.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::*;

/// The secure listener's address, from the agent's log.
fn secure_addr(agent: &Agent) -> String {
    let start = Instant::now();
    loop {
        let found = agent.agent_log().iter().find_map(|l| {
            l.split("api: listening securely on https://").nth(1).map(str::to_string)
        });
        if let Some(addr) = found {
            return addr.trim().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no secure listener in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `outpost kubeconfig ARGS` on the agent's state, written to a file: its path.
fn kubeconfig(agent: &Agent, name: &str, args: &[&str]) -> PathBuf {
    let state = agent.state.display().to_string();
    let (code, out, err) =
        crate::runner::outpost(&[&["kubeconfig", "--state", &state], args].concat());
    assert_eq!(code, 0, "outpost kubeconfig {args:?}: {err}");
    let path = agent.dir.path().join(name);
    std::fs::write(&path, out).unwrap();
    path
}

fn kubectl_with(config: &Path, args: &[&str]) -> (i32, String, String) {
    crate::support::run_kubectl(Command::new("kubectl").arg("--kubeconfig").arg(config).args(args))
}

/// One GET over TLS, verifying the server against `ca` (PEM): status and body.
fn https_get(addr: &str, ca: &[u8], path: &str, token: Option<&str>) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

const SLEEPER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, 'echo hello from web; exec sleep 3600']\n";

#[test]
fn kubectl_from_a_laptop_with_tokens_roles_and_client_certificates() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--secure-listen", "127.0.0.1:0"]);
    agent.apply("web.yaml", SLEEPER);
    agent.wait_pod("web", T, |_| true);
    let server = format!("https://{}", secure_addr(&agent));

    let admin = kubeconfig(
        &agent,
        "admin.yaml",
        &["--server", &server, "--role", "admin", "--user", "alice"],
    );
    let text = std::fs::read_to_string(&admin).unwrap();
    assert!(text.contains("certificate-authority-data:") && !text.contains("insecure"), "{text}");
    let (code, out, err) = kubectl_with(&admin, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).is_some_and(|row| row.starts_with("web ")), "{out}");
    let (code, out, err) = kubectl_with(&admin, &["auth", "can-i", "create", "pods/exec"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) =
        kubectl_with(&admin, &["auth", "can-i", "create", "pods", "--subresource", "exec"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, _) = kubectl_with(&admin, &["auth", "can-i", "delete", "pods"]);
    assert_eq!(code, 1, "nothing writes");
    assert!(out.starts_with("no - outpost serves a read-only API"), "{out}");
    let (code, out, err) = kubectl_with(&admin, &["auth", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("admin"), "{out}");

    let view =
        kubeconfig(&agent, "view.yaml", &["--server", &server, "--role", "view", "--user", "bob"]);
    let (code, out, err) = kubectl_with(&view, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web"), "{out}");
    let (code, out, _) = kubectl_with(&view, &["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("no - pods/exec needs the admin role"), "{out}");
    let (code, out, _) =
        kubectl_with(&view, &["auth", "can-i", "create", "pods", "--subresource", "exec"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("no - "), "{out}");
    let (code, out, _) = kubectl_with(&view, &["auth", "can-i", "list", "pods"]);
    assert_eq!((code, out.trim()), (0, "yes"));
    // exec over TLS: the admin role runs it (exit code and output through), view is refused.
    agent.wait_pod("web", T, |p| p["status"]["phase"] == "Running");
    let (code, out, err) =
        kubectl_with(&admin, &["exec", "web", "--", "sh", "-c", "echo over-tls; exit 4"]);
    assert_eq!((code, out.trim()), (4, "over-tls"), "{err}");
    let (code, _, err) = kubectl_with(&view, &["exec", "web", "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");
    // Logs stream over TLS.
    let start = Instant::now();
    let logs = loop {
        let (code, out, err) = kubectl_with(&view, &["logs", "web"]);
        assert_eq!(code, 0, "{err}");
        if !out.is_empty() || start.elapsed() > T {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(logs, "hello from web\n");
    // Exec is the admin's: a view caller is refused before anything serves it.
    let exec = "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true";
    let (code, _, err) = kubectl_with(&view, &["get", "--raw", exec]);
    assert_ne!(code, 0);
    assert!(
        err.contains("Forbidden") && err.contains("User \"bob\" cannot get resource \"pods/exec\""),
        "{err}"
    );

    // No credentials (kubectl would prompt for a password: a client of our own), and a token
    // the device never made.
    let ca = std::fs::read(agent.state.join("pki/ca.crt")).unwrap();
    let addr = server.trim_start_matches("https://");
    let (status, body) = https_get(addr, &ca, "/api/v1/pods", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap();
    let bogus = agent.dir.path().join("bogus.yaml");
    std::fs::write(&bogus, text.replace(token, "outpost-bogus")).unwrap();
    let (code, _, err) = kubectl_with(&bogus, &["get", "pods"]);
    assert_ne!(code, 0);
    assert!(err.contains("error: You must be logged in to the server (Unauthorized)"), "{err}");

    // The CA is verified: another CA's data fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ours =
        text.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data: ")).unwrap();
    let theirs = base64::engine::general_purpose::STANDARD.encode(other.cert.pem());
    let forged = agent.dir.path().join("forged.yaml");
    std::fs::write(&forged, text.replace(ours, &theirs)).unwrap();
    let (code, _, err) = kubectl_with(&forged, &["get", "pods"]);
    assert_ne!(code, 0);
    assert!(err.contains("certificate signed by unknown authority"), "{err}");

    // A host the serving certificate does not name: said at once.
    let (_, _, err) = crate::runner::outpost(&[
        "kubeconfig",
        "--state",
        &agent.state.display().to_string(),
        "--server",
        "https://elsewhere.invalid:10250",
        "--role",
        "view",
    ]);
    assert!(
        err.contains("warning: elsewhere.invalid is not among the serving certificate's names"),
        "{err}"
    );

    // Revoked while the agent runs: refused at once; alice is unaffected.
    let state = agent.state.display().to_string();
    let (code, _, err) =
        crate::runner::outpost(&["kubeconfig", "--state", &state, "--revoke", "bob"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kubectl_with(&view, &["get", "pods"]);
    assert_ne!(code, 0);
    assert!(err.contains("Unauthorized"), "{err}");
    assert_eq!(kubectl_with(&admin, &["get", "pods"]).0, 0);
    let log = agent.agent_log().join("\n");
    assert!(
        log.contains("api: authentication failed from 127.0.0.1: unknown or revoked token"),
        "{log}"
    );
    assert!(!log.contains(token) && !log.contains("outpost-bogus"), "a token in the agent's log");

    // A token made to expire: works, then is refused once its time is up, and says why.
    let brief = kubeconfig(
        &agent,
        "brief.yaml",
        &["--server", &server, "--role", "view", "--user", "dave", "--expires-in", "2s"],
    );
    assert_eq!(kubectl_with(&brief, &["get", "pods"]).0, 0);
    std::thread::sleep(Duration::from_millis(2500));
    let (code, _, err) = kubectl_with(&brief, &["get", "pods", "-v", "6"]);
    assert_ne!(code, 0);
    assert!(err.contains("Unauthorized") && err.contains("token has expired"), "{err}");
    let (code, out, err) = crate::runner::outpost(&["kubeconfig", "--state", &state, "--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("dave ") && l.ends_with("expired")), "{out}");
    assert_eq!(kubectl_with(&admin, &["get", "pods"]).0, 0);

    // A client certificate the CA signed (CN = user, O = role).
    let cert = kubeconfig(
        &agent,
        "cert.yaml",
        &["--server", &server, "--role", "view", "--user", "carol", "--client-certificate"],
    );
    assert!(std::fs::read_to_string(&cert).unwrap().contains("client-certificate-data:"));
    let (code, out, err) = kubectl_with(&cert, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web"), "{out}");
    let (code, out, err) = kubectl_with(&cert, &["auth", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("carol"), "{out}");
    let (_, out, _) = kubectl_with(&cert, &["auth", "can-i", "create", "pods/exec"]);
    assert!(out.starts_with("no - "), "{out}");

    // Guessing is limited per address: a burst of failures, then 429 even for a valid token.
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 12 {
        statuses.push(https_get(addr, &ca, "/api/v1/pods", Some("outpost-guess")).0);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let (status, body) = https_get(addr, &ca, "/api/v1/pods", Some(token));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many failed authentication attempts from 127.0.0.1"), "{body}");

    // The keys on disk are root's alone.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "server.key"] {
        let mode =
            std::fs::metadata(agent.state.join("pki").join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn plain_listen_on_a_non_loopback_address_is_refused_at_start() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "0.0.0.0:0", "--manifests"])
        .arg(dir.path().join("edge.d"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent runs on 0.0.0.0:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--listen-allow-remote") && err.contains("--secure-listen 0.0.0.0:0"),
        "{err}"
    );
    assert!(!err.contains("api: listening"), "{err}");
}
