//! An in-process API server on loopback over a synthetic snapshot and synthetic log files,
//! and the clients the tests use on it: raw HTTP and the real kubectl.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use outpost::api::{ApiConfig, Published};
use outpost::manifest::DesiredState;
use outpost::store::EventRecord;

pub struct Server {
    pub addr: SocketAddr,
    pub published: Arc<Published>,
    pub state: tempfile::TempDir,
    stop: Option<smol::channel::Sender<()>>,
}

impl Server {
    pub fn start(configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let state = tempfile::Builder::new().prefix("outpost-api").tempdir().unwrap();
        let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), state.path().into());
        configure(&mut config);
        let published = Arc::new(Published::default());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let p = published.clone();
        std::thread::spawn(move || {
            smol::block_on(smol::future::or(
                async {
                    let r = outpost::api::serve(config, p, |a| bound_tx.send(a).unwrap()).await;
                    r.expect("serve");
                },
                async {
                    let _ = stopped.recv().await;
                },
            ))
        });
        let addr = bound_rx.recv_timeout(Duration::from_secs(10)).expect("server bound");
        Self { addr, published, state, stop: Some(stop) }
    }

    pub fn publish(&self, pods: Vec<Pod>, events: Vec<EventRecord>, desired: DesiredState) {
        self.published.publish(pods, Arc::new(events), Arc::new(desired));
    }

    /// Writes a CRI log file for pod `uid`, container, attempt (`suffix` e.g. "" or ".1").
    pub fn write_log(
        &self,
        uid: &str,
        container: &str,
        attempt: u32,
        suffix: &str,
        lines: &[&str],
    ) -> PathBuf {
        let dir = outpost::runtime::pod_log_dir(self.state.path(), uid).join(container);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{attempt}.log{suffix}"));
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        path
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.try_send(());
        }
    }
}

/// One HTTP/1.1 request; returns (status, headers, body) with a chunked body decoded.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, head.to_string(), body)
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else { return out };
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out += &rest[..n];
        body = &rest[n + 2..];
    }
}

pub fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (code, _, body) = http(addr, "GET", path, &[]);
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// The real kubectl with no user configuration; (exit code, stdout, stderr).
pub fn kubectl(server: &str, args: &[&str]) -> (i32, String, String) {
    assert!(
        Path::new("/usr/bin/kubectl").exists() || which("kubectl"),
        "kubectl missing: install kubernetes-client (tests/prereqs.sh does)"
    );
    let out = Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).exists()))
}

pub fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A running single-container pod created `age` seconds ago; `restarts` > 0 gives it a last
/// terminated state that finished `last_exit_ago` seconds ago.
pub fn running_pod(name: &str, age: i64, restarts: i32, last_exit_ago: i64) -> Pod {
    let now = now_secs();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), name.to_string())].into()),
            creation_timestamp: Some(Time(ts(now - age))),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("edge-1".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.88.0.7".into()),
            host_ip: Some("192.0.2.1".into()),
            start_time: Some(Time(ts(now - age))),
            conditions: Some(
                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                    .iter()
                    .map(|t| PodCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                image: "busybox".into(),
                image_id: String::new(),
                ready: true,
                started: Some(true),
                restart_count: restarts,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(ts(now - last_exit_ago))),
                    }),
                    ..Default::default()
                }),
                last_state: (restarts > 0).then(|| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        finished_at: Some(Time(ts(now - last_exit_ago))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Marks the pod's container as exited (the instance is over).
pub fn exited(mut pod: Pod) -> Pod {
    let cs = &mut pod.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0];
    cs.state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    cs.ready = false;
    pod
}

pub fn event(
    pod: &str,
    type_: &str,
    reason: &str,
    message: &str,
    ago: i64,
    count: u32,
) -> EventRecord {
    let now = now_secs();
    EventRecord {
        pod_uid: format!("uid-{pod}"),
        namespace: "default".into(),
        pod_name: pod.into(),
        container: Some("app".into()),
        type_: type_.into(),
        reason: reason.into(),
        message: message.into(),
        count,
        first_seen: now - ago - 60,
        last_seen: now - ago,
    }
}
