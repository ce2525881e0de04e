//! The manager against a device plugin written here: a gRPC server on a unix socket that
//! registers over the real `kubelet.sock`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use smol_hyper::rt::{FuturesIo, SmolExecutor};

use super::proto::{self, ContainerAllocation, Device, DeviceSpec};
use super::*;

const RESOURCE: &str = "example.com/dev";

/// A plugin: its devices (sent to every ListAndWatch stream when changed) and how many
/// Allocate calls it answered.
/// A ListAndWatch stream's sending end.
type FrameSender = smol::channel::Sender<Result<Frame<Bytes>, Infallible>>;

struct Plugin {
    options: proto::Options,
    /// PreStartContainer calls' device IDs.
    pre_starts: Mutex<Vec<Vec<String>>>,
    devices: Mutex<Vec<Device>>,
    streams: Mutex<Vec<FrameSender>>,
    allocations: AtomicUsize,
}

impl Plugin {
    fn set(&self, devices: Vec<Device>) {
        *self.devices.lock().unwrap() = devices.clone();
        let frame = Bytes::from(proto::frame(&proto::encode_devices(&devices)));
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.try_send(Ok(Frame::data(frame.clone())));
        }
    }

    /// Ends every ListAndWatch stream, as a plugin that exits.
    fn stop_streams(&self) {
        self.streams.lock().unwrap().clear();
    }

    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let mut body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
        let message = proto::split_frame(&mut body).unwrap().unwrap_or_default();
        match path.as_str() {
            proto::GET_OPTIONS => reply(Ok(self.options.encode())).map(|b| b.boxed()),
            proto::PRE_START => {
                self.pre_starts.lock().unwrap().push(proto::decode_ids(&message).unwrap());
                reply(Ok(Vec::new())).map(|b| b.boxed())
            }
            // Prefers the last devices offered.
            proto::GET_PREFERRED => {
                let answers: Vec<Vec<String>> = proto::decode_preferred_request(&message)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.available[r.available.len() - r.size as usize..].to_vec())
                    .collect();
                reply(Ok(proto::encode_allocate_request(&answers))).map(|b| b.boxed())
            }
            proto::LIST_AND_WATCH => {
                let (tx, rx) = smol::channel::unbounded();
                let list = proto::encode_devices(&self.devices.lock().unwrap());
                tx.try_send(Ok(Frame::data(Bytes::from(proto::frame(&list))))).unwrap();
                self.streams.lock().unwrap().push(tx);
                hyper::Response::new(StreamBody::new(rx).boxed())
            }
            proto::ALLOCATE => {
                self.allocations.fetch_add(1, Ordering::SeqCst);
                let containers = proto::decode_allocate_request(&message).unwrap();
                let answers: Vec<ContainerAllocation> = containers
                    .iter()
                    .map(|ids| ContainerAllocation {
                        envs: [("DEV_IDS".to_string(), ids.join(","))].into(),
                        devices: ids
                            .iter()
                            .map(|id| DeviceSpec {
                                container_path: format!("/dev/{id}"),
                                host_path: "/dev/null".into(),
                                permissions: "rw".into(),
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect();
                reply(Ok(proto::encode_allocate_response(&answers))).map(|b| b.boxed())
            }
            _ => reply(Err((12, "unknown".into()))).map(|b| b.boxed()),
        }
    }
}

fn executor() -> Arc<smol::Executor<'static>> {
    let ex = Arc::new(smol::Executor::new());
    let run = ex.clone();
    std::thread::spawn(move || smol::block_on(run.run(smol::future::pending::<()>())));
    ex
}

/// Serves `plugin` on `dir/name`.
fn serve_plugin(ex: &Arc<smol::Executor<'static>>, socket: PathBuf, plugin: Arc<Plugin>) {
    let listener = smol::net::unix::UnixListener::bind(&socket).unwrap();
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

fn healthy(ids: &[&str]) -> Vec<Device> {
    ids.iter().map(|id| Device { id: id.to_string(), health: proto::HEALTHY.into() }).collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ex: Arc<smol::Executor<'static>>,
    devices: Arc<Devices>,
    plugin: Arc<Plugin>,
    counts: Arc<Mutex<BTreeMap<String, DeviceCount>>>,
}

fn setup(store: Option<Allocations>) -> Setup {
    setup_with(store, proto::Options::default())
}

fn setup_with(store: Option<Allocations>, options: proto::Options) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ex = executor();
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let c = counts.clone();
    let devices =
        Devices::new(&dir, ex.clone(), store, Box::new(move |n| *c.lock().unwrap() = n)).unwrap();
    devices.serve().unwrap();
    let plugin = Arc::new(Plugin {
        options,
        pre_starts: Mutex::default(),
        devices: Mutex::new(healthy(&["dev0", "dev1"])),
        streams: Mutex::default(),
        allocations: AtomicUsize::new(0),
    });
    serve_plugin(&ex, dir.join("test.sock"), plugin.clone());
    Setup { _dir: tmp, dir, ex, devices, plugin, counts }
}

fn register(ex: &Arc<smol::Executor<'static>>, dir: &Path, version: &str) -> Result<(), String> {
    let request = proto::RegisterRequest {
        version: version.into(),
        endpoint: "test.sock".into(),
        resource_name: RESOURCE.into(),
        options: None,
    };
    let socket = dir.join(KUBELET_SOCKET);
    smol::block_on(client::unary(ex, &socket, proto::REGISTER, &request.encode())).map(|_| ())
}

fn wait_for(counts: &Mutex<BTreeMap<String, DeviceCount>>, capacity: u64, allocatable: u64) {
    let want = DeviceCount { capacity, allocatable };
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts.lock().unwrap().get(RESOURCE) != Some(&want) {
        assert!(Instant::now() < deadline, "counts {:?}, want {want:?}", counts.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn one() -> BTreeMap<String, usize> {
    [(RESOURCE.to_string(), 1)].into()
}

#[test]
fn a_registered_plugin_feeds_counts_and_allocations() {
    let s = setup(None);
    register(&s.ex, &s.dir, "v1beta1").unwrap();
    wait_for(&s.counts, 2, 2);
    let a = smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap();
    assert_eq!(a[0].envs["DEV_IDS"], "dev0");
    assert_eq!(a[0].devices[0].container_path, "/dev/dev0");
    let b = smol::block_on(s.devices.allocate("pod-b", "app", &[], &one())).unwrap();
    assert_eq!(b[0].envs["DEV_IDS"], "dev1");
    let err = smol::block_on(s.devices.allocate("pod-c", "app", &[], &one())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested number of devices unavailable for example.com/dev. Requested: 1, Available: 0"
    );
    // A restarted container keeps its devices without asking the plugin again.
    let again = smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap();
    assert_eq!(again, a);
    assert_eq!(s.plugin.allocations.load(Ordering::SeqCst), 2);
    s.devices.release("pod-a");
    let c = smol::block_on(s.devices.allocate("pod-c", "app", &[], &one())).unwrap();
    assert_eq!(c[0].envs["DEV_IDS"], "dev0");
    // Unhealthy devices leave allocatable; a plugin that goes away leaves none.
    s.plugin.set(vec![
        Device { id: "dev0".into(), health: proto::HEALTHY.into() },
        Device { id: "dev1".into(), health: proto::UNHEALTHY.into() },
    ]);
    wait_for(&s.counts, 2, 1);
    s.plugin.stop_streams();
    wait_for(&s.counts, 2, 0);
}

/// App containers may get the devices of the pod's init containers (done by then), never
/// those of another pod or of a sibling app container.
#[test]
fn init_containers_devices_are_reused_by_the_pods_app_containers() {
    let s = setup(None);
    register(&s.ex, &s.dir, "v1beta1").unwrap();
    wait_for(&s.counts, 2, 2);
    let two: BTreeMap<String, usize> = [(RESOURCE.to_string(), 2)].into();
    let init = smol::block_on(s.devices.allocate("pod-a", "init", &[], &two)).unwrap();
    assert_eq!(init[0].envs["DEV_IDS"], "dev0,dev1");
    let reusable = ["init".to_string()];
    let app = smol::block_on(s.devices.allocate("pod-a", "app", &reusable, &one())).unwrap();
    assert_eq!(app[0].envs["DEV_IDS"], "dev0");
    let err = smol::block_on(s.devices.allocate("pod-b", "app", &reusable, &one())).unwrap_err();
    assert!(matches!(err, DeviceError::Unavailable { available: 0, .. }), "{err}");
    let side = smol::block_on(s.devices.allocate("pod-a", "side", &reusable, &one())).unwrap();
    assert_eq!(side[0].envs["DEV_IDS"], "dev1", "not the app container's");
}

/// A plugin that offers a preference gets asked (only when there is a choice), and one that
/// requires PreStartContainer gets it before every start of the container.
#[test]
fn preferred_allocation_and_pre_start_when_the_plugin_asks() {
    let options =
        proto::Options { pre_start_required: true, get_preferred_allocation_available: true };
    let s = setup_with(None, options);
    register(&s.ex, &s.dir, "v1beta1").unwrap();
    wait_for(&s.counts, 2, 2);
    let a = smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap();
    assert_eq!(a[0].envs["DEV_IDS"], "dev1", "the plugin's preference");
    let b = smol::block_on(s.devices.allocate("pod-b", "app", &[], &one())).unwrap();
    assert_eq!(b[0].envs["DEV_IDS"], "dev0");
    smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap();
    assert_eq!(*s.plugin.pre_starts.lock().unwrap(), [["dev1"], ["dev0"], ["dev1"]]);
}

#[test]
fn registration_is_refused_with_the_kubelets_messages() {
    let s = setup(None);
    let err = register(&s.ex, &s.dir, "v1alpha").unwrap_err();
    assert!(
        err.ends_with(
            "requested API version \"v1alpha\" is not supported by kubelet. Supported versions are [\"v1beta1\"]"
        ),
        "{err}"
    );
    assert!(s.counts.lock().unwrap().is_empty());
    let err = smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap_err();
    assert_eq!(err.to_string(), "can't allocate unregistered device example.com/dev");
}

#[test]
fn recorded_allocations_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("outpost.db");
    let _store = crate::store::Store::open(&path).unwrap();
    let s = setup(Some(Allocations::open(&path).unwrap()));
    register(&s.ex, &s.dir, "v1beta1").unwrap();
    wait_for(&s.counts, 2, 2);
    smol::block_on(s.devices.allocate("pod-a", "app", &[], &one())).unwrap();
    // A new manager (the agent restarted) on the same database and plugin.
    let restarted = Devices::new(
        &s.dir,
        s.ex.clone(),
        Some(Allocations::open(&path).unwrap()),
        Box::new(|_| {}),
    )
    .unwrap();
    restarted.register(RESOURCE, s.dir.join("test.sock"), proto::Options::default());
    let generation = restarted.state().plugins[RESOURCE].generation;
    restarted.update(RESOURCE, generation, [("dev0".into(), true), ("dev1".into(), true)].into());
    let b = smol::block_on(restarted.allocate("pod-b", "app", &[], &one())).unwrap();
    assert_eq!(b[0].envs["DEV_IDS"], "dev1", "dev0 is still pod-a's");
    let a = smol::block_on(restarted.allocate("pod-a", "app", &[], &one())).unwrap();
    assert_eq!(a[0].envs["DEV_IDS"], "dev0");
    assert_eq!(s.plugin.allocations.load(Ordering::SeqCst), 2, "pod-a's answer was recorded");
}

#[test]
fn an_answer_applies_to_the_oci_spec() {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_env(Some(vec!["KEEP=mine".into()]));
    spec.set_process(Some(process));
    let a = ContainerAllocation {
        envs: [("KEEP".to_string(), "plugin".to_string()), ("DEV".to_string(), "0".to_string())]
            .into(),
        mounts: vec![proto::Mount {
            container_path: "/lib/dev".into(),
            host_path: "/usr/lib".into(),
            read_only: true,
        }],
        devices: vec![DeviceSpec {
            container_path: "/dev/dev0".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }],
        annotations: [("vendor/a".to_string(), "b".to_string())].into(),
        cdi_devices: vec![],
    };
    apply(&mut spec, &a).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let dev = linux.devices().as_ref().unwrap().last().unwrap();
    assert_eq!(dev.path(), Path::new("/dev/dev0"));
    assert_eq!((dev.major(), dev.minor()), (1, 3), "/dev/null's numbers");
    assert_eq!(dev.file_mode(), Some(0o666));
    let rule = linux.resources().as_ref().unwrap().devices().as_ref().unwrap().last().unwrap();
    assert!(rule.allow());
    assert_eq!(
        (rule.major(), rule.minor(), rule.access().as_deref()),
        (Some(1), Some(3), Some("rw"))
    );
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(env, ["KEEP=mine", "DEV=0"]);
    let mount = spec.mounts().as_ref().unwrap().last().unwrap();
    assert_eq!(mount.destination(), Path::new("/lib/dev"));
    assert!(mount.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert_eq!(spec.annotations().as_ref().unwrap()["vendor/a"], "b");
    let bad = ContainerAllocation {
        devices: vec![DeviceSpec {
            container_path: "/dev/x".into(),
            host_path: "/etc/hostname".into(),
            permissions: String::new(),
        }],
        ..Default::default()
    };
    assert_eq!(
        apply(&mut spec, &bad).unwrap_err().to_string(),
        "device /etc/hostname for /dev/x: not a device node"
    );
}

/// The attacker's set-up: an emptyDir at /dev/bus shared with a sibling that swaps its
/// directories for symlinks to host paths while the device node for /dev/bus/usb/001/002 is made.
#[test]
fn device_paths_inside_a_volume_or_outside_dev_are_refused() {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut volume = oci_spec::runtime::Mount::default();
    volume.set_destination("/dev/bus".into());
    volume.set_typ(Some("bind".into()));
    volume.set_source(Some("/var/lib/outpost/pods/x/volumes/empty-dir/bus".into()));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(volume);
    spec.set_mounts(Some(mounts));
    let device = |path: &str| ContainerAllocation {
        devices: vec![DeviceSpec {
            container_path: path.into(),
            host_path: "/dev/null".into(),
            permissions: String::new(),
        }],
        ..Default::default()
    };
    let err = apply(&mut spec.clone(), &device("/dev/bus/usb/001/002")).unwrap_err().to_string();
    assert!(err.contains("inside the volume mounted at /dev/bus"), "{err}");
    for path in ["/etc/passwd", "/dev/../etc/x", "/dev", "dev/x", "/devices/x"] {
        let err = apply(&mut spec.clone(), &device(path)).unwrap_err().to_string();
        assert!(err.contains("a plain path under /dev"), "{path}: {err}");
    }
    // /dev's own tmpfs (not a bind) and a sibling path of the volume are fine.
    apply(&mut spec.clone(), &device("/dev/ttyUSB0")).unwrap();
    apply(&mut spec.clone(), &device("/dev/bus2/x")).unwrap();
}

/// k3s's kubelet uses the same default directory: a `kubelet.sock` that still answers is left
/// alone (registration is off, with the reason), a stale one is replaced.
#[test]
fn a_live_kubelet_socket_is_never_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("kubelet.sock");
    let other = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let devices = Devices::new(tmp.path(), executor(), None, Box::new(|_| {})).unwrap();
    let err = devices.serve().unwrap_err();
    assert!(matches!(&err, DeviceError::InUse { socket: s } if *s == socket), "{err}");
    assert!(err.to_string().ends_with("give it a directory of its own with --device-plugin-dir"));
    std::os::unix::net::UnixStream::connect(&socket).expect("the other kubelet's socket stays");
    drop(other);
    // Its owner gone, the file is stale: replaced, and served by outpost now.
    devices.serve().unwrap();
    std::os::unix::net::UnixStream::connect(&socket).expect("outpost's socket");
}
