//! Registries on loopback for the pull tests: test images in memory, Debian's
//! `docker-registry` run on a free port (plain http, htpasswd basic auth, TLS with a test CA),
//! a pusher speaking the registry API, and a small fake registry for what the real one cannot
//! do (token auth, tampered blobs, redirects).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::image_support::*;
use base64::Engine as _;
use outpost::image::build::{ArchiveFormat, LayerBuilder};
use outpost::image::pull::{PullOptions, DOCKER_MANIFEST, OCI_MANIFEST};
use outpost::image::{platform, ImageStore};
use serde_json::json;

pub(crate) const REGISTRY: &str = "/usr/bin/docker-registry";
pub(crate) const REPO: &str = "test/busybox";

// ---------------------------------------------------------------------------------------
// Test images: blobs and manifests in memory.

#[derive(Clone)]
pub(crate) struct TestImage {
    pub(crate) manifest: Vec<u8>,
    pub(crate) media_type: &'static str,
    pub(crate) digest: String,
    /// Config and layer blobs.
    pub(crate) blobs: Vec<(String, Vec<u8>)>,
}

/// busybox:latest as the OCI archive of `tests/support` holds it.
pub(crate) fn busybox() -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let file = busybox_archive(dir.path(), ArchiveFormat::Oci, false);
    let mut archive = tar::Archive::new(std::fs::File::open(file).unwrap());
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest = files[&format!("blobs/sha256/{}", &digest[7..])].clone();
    let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = Vec::new();
    for d in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().unwrap()) {
        let d = d["digest"].as_str().unwrap().to_string();
        let data = files[&format!("blobs/sha256/{}", &d[7..])].clone();
        blobs.push((d, data));
    }
    TestImage { manifest, media_type: OCI_MANIFEST, digest, blobs }
}

pub(crate) fn image_from(config: &[u8], layers: &[Vec<u8>], docker: bool) -> TestImage {
    let (mt, config_mt, layer_mt) = if docker {
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar",
        )
    } else {
        (
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": layer_mt, "digest": sha256(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": config_mt, "digest": sha256(config), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let mut blobs = vec![(sha256(config), config.to_vec())];
    blobs.extend(layers.iter().map(|l| (sha256(l), l.clone())));
    TestImage { digest: sha256(&manifest), manifest, media_type: mt, blobs }
}

/// busybox with its config changed (another image, same layer).
pub(crate) fn busybox_variant(base: &TestImage, docker: bool) -> TestImage {
    let mut config: serde_json::Value = serde_json::from_slice(&base.blobs[0].1).unwrap();
    if !docker {
        config["config"]["Env"].as_array_mut().unwrap().push(json!("VARIANT=1"));
    }
    let layers: Vec<Vec<u8>> = base.blobs[1..].iter().map(|(_, b)| b.clone()).collect();
    image_from(&serde_json::to_vec(&config).unwrap(), &layers, docker)
}

/// Some architecture that is not this host's.
pub(crate) fn other_arch() -> &'static str {
    if platform::host().0 == "s390x" {
        "amd64"
    } else {
        "s390x"
    }
}

pub(crate) fn other_platform_image() -> TestImage {
    let mut layer = LayerBuilder::new();
    layer.file("other-platform", 0o644, b"not for this host").unwrap();
    let layer = layer.finish().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": other_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]}
    }))
    .unwrap();
    image_from(&config, &[layer], false)
}

pub(crate) fn index_of(images: &[(&TestImage, &str)], media_type: &str) -> Vec<u8> {
    let manifests: Vec<_> = images
        .iter()
        .map(|(i, arch)| {
            json!({"mediaType": i.media_type, "digest": i.digest, "size": i.manifest.len(),
                   "platform": {"architecture": arch, "os": "linux"}})
        })
        .collect();
    serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Blocking HTTP for pushing (the code under test never uses it).

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the registry");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

pub(crate) struct Pusher {
    pub(crate) port: u16,
    pub(crate) auth: Vec<(&'static str, String)>,
}

impl Pusher {
    pub(crate) fn blob(&self, repo: &str, digest: &str, data: &[u8]) {
        let r = http(self.port, "POST", &format!("/v2/{repo}/blobs/uploads/"), &self.auth, b"");
        assert_eq!(r.status, 202, "start upload: {}", String::from_utf8_lossy(&r.body));
        let location = &r.headers["location"];
        let path = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => panic!("upload location {location}"),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut headers = self.auth.clone();
        headers.push(("Content-Type", "application/octet-stream".into()));
        let r = http(self.port, "PUT", &format!("{path}{sep}digest={digest}"), &headers, data);
        assert_eq!(r.status, 201, "upload {digest}: {}", String::from_utf8_lossy(&r.body));
    }

    pub(crate) fn manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) {
        let mut headers = self.auth.clone();
        headers.push(("Content-Type", media_type.to_string()));
        let r =
            http(self.port, "PUT", &format!("/v2/{repo}/manifests/{reference}"), &headers, data);
        assert_eq!(r.status, 201, "put manifest {reference}: {}", String::from_utf8_lossy(&r.body));
    }

    pub(crate) fn image(&self, repo: &str, tag: &str, image: &TestImage) {
        for (digest, data) in &image.blobs {
            self.blob(repo, digest, data);
        }
        self.manifest(repo, tag, image.media_type, &image.manifest);
    }
}

// ---------------------------------------------------------------------------------------
// docker-registry, started per test on a free port.

pub(crate) struct LocalRegistry {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) log: PathBuf,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

impl LocalRegistry {
    /// Serves `storage` on `ip`; `htpasswd` and `tls` (cert, key files) when given.
    pub(crate) fn start(
        dir: &Path,
        storage: &Path,
        ip: &str,
        htpasswd: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
    ) -> LocalRegistry {
        if !Path::new(REGISTRY).exists() {
            panic!("{REGISTRY} is missing: install docker-registry (tests/prereqs.sh does)");
        }
        let port = free_port(ip);
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {ip}:{port}\n  secret: outpost-test\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = htpasswd {
            let file = dir.join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: outpost-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join(format!("registry-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_file)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let mut registry = LocalRegistry { child, port, log };
        // Readiness, not a timing assertion: a registry that never listens fails the test.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((ip, port)).is_err() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", registry.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening: {}",
                registry.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub(crate) fn plain(dir: &Path) -> LocalRegistry {
        let storage = dir.join("storage");
        LocalRegistry::start(dir, &storage, "127.0.0.1", None, None)
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn pusher(&self) -> Pusher {
        Pusher { port: self.port, auth: Vec::new() }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// A fake registry for token auth and tampered content.

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum FakeAuth {
    None,
    /// Bearer tokens from `/token`, anonymous.
    AnonymousToken,
    /// Bearer tokens from `/token` for `user:pw` only.
    TokenWithCredentials,
}

pub(crate) struct Fake {
    pub(crate) port: u16,
    /// (request path, Authorization header) of every request.
    pub(crate) requests: Arc<Mutex<Vec<(String, String)>>>,
}

pub(crate) const TOKEN: &str = "tok-7f3a";

/// `tamper` flips a byte of each layer; `redirect` sends blobs to `localhost:<port>/cdn/`
/// (another origin) with a signed-looking query, as Docker Hub sends them to its CDN.
pub(crate) fn fake_registry(
    image: &TestImage,
    auth: FakeAuth,
    tamper: bool,
    redirect: bool,
) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let image = image.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (image, log) = (image.clone(), log.clone());
            std::thread::spawn(move || {
                fake_answer(stream, &image, (auth, tamper, redirect), port, &log)
            });
        }
    });
    Fake { port, requests }
}

pub(crate) fn fake_answer(
    mut stream: TcpStream,
    image: &TestImage,
    (auth, tamper, redirect): (FakeAuth, bool, bool),
    port: u16,
    log: &Mutex<Vec<(String, String)>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let authorization = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))
        })
        .unwrap_or("")
        .to_string();
    log.lock().unwrap().push((path.clone(), authorization.clone()));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("user:pw"));
    let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path.starts_with("/token") {
        if auth == FakeAuth::TokenWithCredentials && authorization != basic {
            ("401 Unauthorized", vec![], br#"{"details":"bad credentials"}"#.to_vec())
        } else {
            ("200 OK", vec![], format!(r#"{{"token":"{TOKEN}"}}"#).into_bytes())
        }
    } else if let Some(d) = path.strip_prefix("/cdn/") {
        let d = d.split('?').next().unwrap_or(d);
        match image.blobs.iter().find(|(digest, _)| digest == d) {
            Some((_, data)) => ("200 OK", vec![], data.clone()),
            None => ("404 Not Found", vec![], Vec::new()),
        }
    } else if auth != FakeAuth::None && authorization != format!("Bearer {TOKEN}") {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:{REPO}:pull\""
        );
        (
            "401 Unauthorized",
            vec![challenge],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#.to_vec(),
        )
    } else if let Some(r) = path.strip_prefix(&format!("/v2/{REPO}/manifests/")) {
        if r == "latest" || r == image.digest {
            let h = vec![
                format!("Content-Type: {}", image.media_type),
                format!("Docker-Content-Digest: {}", image.digest),
            ];
            ("200 OK", h, image.manifest.clone())
        } else {
            ("404 Not Found", vec![], br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.to_vec())
        }
    } else if let (Some(d), true) = (path.strip_prefix(&format!("/v2/{REPO}/blobs/")), redirect) {
        let location = format!("Location: http://localhost:{port}/cdn/{d}?sig=s3cr3t");
        ("307 Temporary Redirect", vec![location], Vec::new())
    } else if let Some(d) = path.strip_prefix(&format!("/v2/{REPO}/blobs/")) {
        match image.blobs.iter().find(|(digest, _)| digest == d) {
            Some((_, data)) => {
                let mut data = data.clone();
                if tamper && d != image.blobs[0].0 {
                    let last = data.len() - 1;
                    data[last] ^= 0xff;
                }
                ("200 OK", vec![], data)
            }
            None => ("404 Not Found", vec![], Vec::new()),
        }
    } else {
        ("404 Not Found", vec![], Vec::new())
    };
    let mut out =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for h in headers {
        out.push_str(&h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&body);
}

// ---------------------------------------------------------------------------------------

pub(crate) fn store(dir: &Path) -> Arc<ImageStore> {
    Arc::new(ImageStore::open(dir).expect("open store"))
}

pub(crate) fn options(dir: &Path) -> PullOptions {
    let mut o = PullOptions::for_state(dir);
    // Only files the test writes: never the machine's /root/.docker/config.json.
    o.auth_files = vec![dir.join("auth.json")];
    o.timeout = Duration::from_secs(20);
    o
}

pub(crate) fn write_auth(dir: &Path, host: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("auth.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

pub(crate) fn check_busybox_layer(image: &outpost::image::Image) {
    assert_eq!(image.layers.len(), 1);
    assert_eq!(
        std::fs::read(image.layers[0].join("bin/busybox")).expect("unpacked bin/busybox"),
        std::fs::read("/bin/busybox").unwrap()
    );
}

pub(crate) fn blob_path(store: &ImageStore, digest: &str) -> PathBuf {
    store.root().join("blobs/sha256").join(&digest[7..])
}
