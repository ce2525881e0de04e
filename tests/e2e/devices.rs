//! The kubelet's device plugin API through a real agent: a plugin written here (a gRPC
//! server on a unix socket, hyper and outpost's own message encoding) registers over the
//! agent's `kubelet.sock` and advertises 2 devices; two pods get one each (the device node
//! inside, the env from Allocate), a third is rejected with the kubelet's message, and the
//! allocations survive an agent `kill -9`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use outpost::device::proto::{self, ContainerAllocation, Device, DeviceSpec};
use smol_hyper::rt::{FuturesIo, SmolExecutor};

use crate::support::*;

const RESOURCE: &str = "e2e.example.com/dev";
/// The devices and the host nodes their container paths get.
const DEVICES: [(&str, &str); 2] = [("dev0", "/dev/null"), ("dev1", "/dev/zero")];

/// A ListAndWatch stream's sending end.
type FrameSender = smol::channel::Sender<Result<Frame<Bytes>, Infallible>>;

struct Plugin {
    streams: Mutex<Vec<FrameSender>>,
    allocations: AtomicUsize,
}

impl Plugin {
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let mut body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
        let message = proto::split_frame(&mut body).unwrap().unwrap_or_default();
        let unary = |m: Vec<u8>| outpost::device::reply(Ok(m)).map(|b| b.boxed());
        match path.as_str() {
            proto::GET_OPTIONS => unary(proto::Options::default().encode()),
            proto::LIST_AND_WATCH => {
                let devices: Vec<Device> = DEVICES
                    .iter()
                    .map(|(id, _)| Device { id: id.to_string(), health: proto::HEALTHY.into() })
                    .collect();
                let (tx, rx) = smol::channel::unbounded();
                let frame = proto::frame(&proto::encode_devices(&devices));
                tx.try_send(Ok(Frame::data(Bytes::from(frame)))).unwrap();
                self.streams.lock().unwrap().push(tx);
                hyper::Response::new(StreamBody::new(rx).boxed())
            }
            proto::ALLOCATE => {
                self.allocations.fetch_add(1, Ordering::SeqCst);
                let answers: Vec<ContainerAllocation> = proto::decode_allocate_request(&message)
                    .unwrap()
                    .into_iter()
                    .map(|ids| ContainerAllocation {
                        envs: [("E2E_DEV_IDS".to_string(), ids.join(","))].into(),
                        devices: ids
                            .iter()
                            .map(|id| DeviceSpec {
                                container_path: format!("/dev/{id}"),
                                host_path: DEVICES.iter().find(|d| d.0 == id).unwrap().1.into(),
                                permissions: "rw".into(),
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect();
                unary(proto::encode_allocate_response(&answers))
            }
            _ => outpost::device::reply(Err((12, "unknown method".into()))).map(|b| b.boxed()),
        }
    }
}

fn executor() -> Arc<smol::Executor<'static>> {
    let ex = Arc::new(smol::Executor::new());
    let run = ex.clone();
    std::thread::spawn(move || smol::block_on(run.run(smol::future::pending::<()>())));
    ex
}

fn serve(ex: &Arc<smol::Executor<'static>>, socket: &Path, plugin: Arc<Plugin>) {
    let _ = std::fs::remove_file(socket);
    let listener = smol::net::unix::UnixListener::bind(socket).unwrap();
    let ex2 = ex.clone();
    ex.spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let p = plugin.clone();
            let service = hyper::service::service_fn(move |req| {
                let p = p.clone();
                async move { Ok::<_, Infallible>(p.handle(req).await) }
            });
            let conn = hyper::server::conn::http2::Builder::new(SmolExecutor::new(ex2.clone()))
                .serve_connection(FuturesIo::new(stream), service);
            ex2.spawn(async move {
                let _ = conn.await;
            })
            .detach();
        }
    })
    .detach();
}

/// Register over `kubelet.sock`, as a plugin does when the socket (re)appears.
fn register(ex: &Arc<smol::Executor<'static>>, dir: &Path) -> Result<(), String> {
    let request = proto::RegisterRequest {
        version: proto::VERSION.into(),
        endpoint: "e2e-dev.sock".into(),
        resource_name: RESOURCE.into(),
        options: Some(proto::Options::default()),
    };
    let socket = dir.join("kubelet.sock");
    let ex = ex.clone();
    smol::block_on(async move {
        let stream =
            smol::net::unix::UnixStream::connect(&socket).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            SmolExecutor::new(ex.clone()),
            FuturesIo::new(stream),
        )
        .await
        .map_err(|e| e.to_string())?;
        ex.spawn(async move {
            let _ = conn.await;
        })
        .detach();
        let req = hyper::Request::post(format!("http://localhost{}", proto::REGISTER))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(proto::frame(&request.encode()))))
            .unwrap();
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
        match body.trailers().and_then(|t| t.get("grpc-status")) {
            Some(s) if s == "0" => Ok(()),
            other => Err(format!("Register answered {other:?}")),
        }
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

/// The Node's capacity and allocatable of the resource.
fn node_counts(agent: &Agent) -> (String, String) {
    let (_, node) = agent.get(&format!("/api/v1/nodes/{}", hostname()));
    let get = |f: &str| node["status"][f][RESOURCE].as_str().unwrap_or_default().to_string();
    (get("capacity"), get("allocatable"))
}

fn device_pod(name: &str) -> String {
    pod(
        name,
        "ls -l /dev/dev0 /dev/dev1 2>&1; echo ids=$E2E_DEV_IDS; echo written > /dev/dev0 2>/dev/null || echo written > /dev/dev1 && echo write-ok; sleep 3600",
        &format!("    resources:\n      limits:\n        {RESOURCE}: 1\n"),
        "",
    )
}

/// The device ID pod `name` got, read from its log (after checking its node is inside).
fn device_of(agent: &Agent, name: &str) -> String {
    let log = agent.wait_logs(name, "app", "write-ok", T);
    let id = log
        .lines()
        .find_map(|l| l.strip_prefix("ids="))
        .unwrap_or_else(|| panic!("{name}: no ids line in\n{log}"))
        .to_string();
    let (host, numbers) = match id.as_str() {
        "dev0" => ("/dev/null", "1,   3"),
        "dev1" => ("/dev/zero", "1,   5"),
        other => panic!("{name}: unexpected device {other:?}\n{log}"),
    };
    let line = log
        .lines()
        .find(|l| l.ends_with(&format!("/dev/{id}")))
        .unwrap_or_else(|| panic!("{name}: no device node /dev/{id} ({host}) in\n{log}"));
    assert!(line.starts_with('c') && line.contains(numbers), "{name}: {line}");
    assert_eq!(log.matches("No such file").count(), 1, "only its own device: {log}");
    id
}

#[test]
fn device_plugin_devices_are_allocated_to_pods_and_survive_a_restart() {
    let _guard = crate::support::shared();
    // Declared before the agent: removed after it has stopped.
    let plugin_dir = tempfile::Builder::new().prefix("outpost-e2e-dp").tempdir().unwrap();
    let plugins: PathBuf = plugin_dir.path().to_path_buf();
    let mut agent = Agent::start_with(&["--device-plugin-dir", plugins.to_str().unwrap()]);
    let ex = executor();
    let plugin = Arc::new(Plugin { streams: Mutex::default(), allocations: AtomicUsize::new(0) });
    serve(&ex, &plugins.join("e2e-dev.sock"), plugin.clone());
    eventually(T, || register(&ex, &plugins));
    eventually(T, || match node_counts(&agent) {
        (c, a) if c == "2" && a == "2" => Ok(()),
        other => Err(format!("node capacity/allocatable {other:?}")),
    });

    agent.apply("dev-a.yaml", &device_pod("dev-a"));
    let a = device_of(&agent, "dev-a");
    agent.apply("dev-b.yaml", &device_pod("dev-b"));
    let b = device_of(&agent, "dev-b");
    // In ID order, as the kubelet's allocator without a preference.
    assert_eq!((a.as_str(), b.as_str()), ("dev0", "dev1"), "one device each");
    assert_eq!(plugin.allocations.load(Ordering::SeqCst), 2);

    agent.apply("dev-c.yaml", &device_pod("dev-c"));
    let c = agent.wait_pod("dev-c", T, |p| phase(p) == "Failed");
    assert_eq!(c["status"]["reason"], format!("OutOf{RESOURCE}"));
    assert_eq!(
        c["status"]["message"],
        format!("Pod was rejected: Node didn't have enough resource: {RESOURCE}, requested: 1, used: 2, capacity: 2")
    );

    // kill -9; the plugin re-registers on the new socket, as plugins watching it do.
    agent.restart();
    eventually(T, || register(&ex, &plugins));
    eventually(T, || match node_counts(&agent) {
        (c, a) if c == "2" && a == "2" => Ok(()),
        other => Err(format!("node capacity/allocatable {other:?}")),
    });
    for name in ["dev-a", "dev-b"] {
        let p = agent.wait_pod(name, T, |p| phase(p) == "Running");
        assert_eq!(container_status(&p, "app")["restartCount"], 0, "{name} kept running");
    }
    // dev-b's device is freed when it goes; dev-a's recorded allocation still holds dev0,
    // so the next pod gets dev1 (with the allocations lost it would get dev0, the lowest).
    agent.delete("dev-b.yaml");
    agent.wait_gone("dev-b", T);
    agent.apply("dev-d.yaml", &device_pod("dev-d"));
    assert_eq!(device_of(&agent, "dev-d"), "dev1", "dev-d got dev-b's device, not dev-a's");
    assert_eq!(plugin.allocations.load(Ordering::SeqCst), 3);
    drop(agent);
    let _ = std::fs::remove_dir_all(&plugins);
}
