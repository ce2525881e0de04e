//! Carrying out the engine's actions with the runtime, the image store, volumes, the network
//! and the probes. Each action runs as its own task and answers with one [`Outcome`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, LifecycleHandler, Pod, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sys::signal::Signal as NixSignal;

use crate::engine::{
    ContainerRef, Observed, PullFailure, PullStats, Signal, StartFailure, Timestamp,
};
use crate::image::pull::PullError;
use crate::image::ImageStore;
use crate::manifest::DesiredState;
use crate::network::cni::CniError;
use crate::network::Network;
use crate::probe;
use crate::runtime::spec::{self, ContainerInput, NodeInfo, PodFiles};
use crate::runtime::{
    ContainerConfig, ExecRequest, InstanceId, LogOptions, Runtime, RuntimeError, SandboxConfig,
};
use crate::volume::{self, Mounter, VolumeContext};

use super::pod_files;

/// Bytes of exec output kept for probe and hook messages (the kubelet keeps 10 KiB).
const EXEC_OUTPUT: usize = 10 * 1024;

/// What the action tasks share; built once by the agent.
pub struct Deps<R> {
    pub runtime: Arc<R>,
    pub images: Arc<ImageStore>,
    pub pull_options: crate::image::pull::PullOptions,
    pub network: Option<Arc<Network>>,
    pub node: NodeInfo,
    pub data_dir: PathBuf,
    pub mounter: Arc<dyn Mounter + Send + Sync>,
    pub host_resolv: String,
    /// `--pod-max-pids`, `None` when unlimited.
    pub pod_max_pids: Option<u64>,
}

impl<R> Deps<R> {
    /// `<state>/pod-data/<uid>`: volumes and the pod's files, outside the runtime's pod dir so
    /// they can be prepared before the sandbox exists, as the kubelet does.
    pub fn pod_data(&self, uid: &str) -> PathBuf {
        self.data_dir.join(uid)
    }

    /// `<pod data>/sandbox-ready`: written once the sandbox is fully set up (network attached,
    /// pod files written). A sandbox without it was cut short by an agent crash.
    pub fn setup_marker(&self, uid: &str) -> PathBuf {
        self.pod_data(uid).join("sandbox-ready")
    }
}

/// What the agent keeps per running sandbox, handed to the tasks that need it.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    pub pod_ips: Vec<String>,
    /// The sandbox's network namespace (probes reach the pod's loopback through it when the
    /// pod has no IP); `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    pub volumes: BTreeMap<String, PathBuf>,
    pub files: PodFiles,
    pub host_network: bool,
    /// Each container's stop signal (image STOPSIGNAL or lifecycle.stopSignal).
    pub stop_signals: BTreeMap<String, NixSignal>,
}

/// One action's answer: the fact for the engine and what the agent must remember.
pub struct Outcome {
    pub fact: Option<Observed>,
    pub update: Option<Update>,
}

pub enum Update {
    Sandbox { uid: String, context: Box<PodContext> },
    StopSignal { uid: String, container: String, signal: NixSignal },
    SandboxGone { uid: String },
}

impl Outcome {
    fn fact(fact: Observed) -> Self {
        Self { fact: Some(fact), update: None }
    }
}

fn instance(c: &ContainerRef) -> InstanceId {
    InstanceId::new(c.name.clone(), c.attempt)
}

/// Sandboxes made at once; the rest wait their turn, in order. It bounds what a burst of pod
/// files (110 at once in `benches/burst_memory.rs`, whose figures are measured with it) holds
/// in flight: volumes, network setups, supervisor spawns. It is not what kept the burst's
/// peak down (that was sharing the desired pods and reading one pod's CNI cache entries).
const SANDBOX_CREATIONS: usize = 4;

pub async fn create_sandbox<R: Runtime>(
    deps: &Deps<R>,
    pod: &Pod,
    desired: &DesiredState,
) -> Outcome {
    static SLOTS: smol::lock::Semaphore = smol::lock::Semaphore::new(SANDBOX_CREATIONS);
    let _slot = SLOTS.acquire().await;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match try_create_sandbox(deps, pod, desired, &uid).await {
        Ok(context) => Outcome {
            fact: Some(Observed::SandboxReady { pod_uid: uid.clone() }),
            update: Some(Update::Sandbox { uid, context: Box::new(context) }),
        },
        Err(message) => {
            // Leave nothing half-made behind; the engine retries from scratch.
            cleanup_sandbox(deps, &uid).await;
            Outcome::fact(Observed::SandboxFailed { pod_uid: uid, message })
        }
    }
}

async fn try_create_sandbox<R: Runtime>(
    deps: &Deps<R>,
    pod: &Pod,
    desired: &DesiredState,
    uid: &str,
) -> Result<PodContext, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let data = deps.pod_data(uid);
    let volumes = {
        let dir = data.join("volumes");
        volume::prepare(&volume_context(deps, pod, desired, &dir)).map_err(|e| e.event_message())?
    };
    let hostname = spec::pod_hostname(pod, &deps.node.name);
    let meta = &pod.metadata;
    let mut config = SandboxConfig::new(
        uid,
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        ),
        hostname.clone(),
    );
    config.host_network = spec.host_network.unwrap_or(false);
    config.host_ipc = spec.host_ipc.unwrap_or(false);
    config.host_pid = spec.host_pid.unwrap_or(false);
    config.share_process_namespace = spec.share_process_namespace.unwrap_or(false);
    config.cgroup_parent = crate::runtime::usage::qos_cgroup_parent(pod);
    config.pids_max = deps.pod_max_pids;
    config.termination_grace_period_seconds =
        spec.termination_grace_period_seconds.map(|s| s.max(0) as u64);
    // Admission allowed them (engine::sysctl), in either spelling.
    let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_ref());
    config.sysctls = sysctls
        .into_iter()
        .flatten()
        .map(|s| (crate::engine::to_dots(&s.name), s.value.clone()))
        .collect();
    let net_error = |e: CniError| format!("failed to set up network for sandbox: {e}");
    // The network namespace comes first, so the CNI ADD runs while the pause is being made.
    let attaching = match (&deps.network, config.host_network) {
        (Some(net), false) => Some((net, net.prepare(pod).await.map_err(net_error)?)),
        _ => None,
    };
    config.netns = attaching.as_ref().map(|(_, a)| a.netns().to_path_buf());
    let network = async {
        match &attaching {
            Some((net, a)) => net.add(a).await.map(Some),
            None => Ok(None),
        }
    };
    let (info, ips) = smol::future::zip(deps.runtime.create_sandbox(config.clone()), network).await;
    // Only now, with the pause done joining the namespace, may a failed ADD release it. The
    // network's error comes first: a sandbox failure may only be its consequence.
    let ips = match (ips, attaching) {
        (Err(e), Some((net, a))) => {
            net.undo(a).await;
            return Err(net_error(e));
        }
        (ips, _) => ips.map_err(net_error)?,
    };
    let info = info.map_err(|e| e.to_string())?;
    let pod_ips = match ips {
        Some(ips) => ips,
        None if config.host_network => deps.node.host_ips.iter().take(1).cloned().collect(),
        None => Vec::new(),
    };
    let files =
        pod_files::write(&data, pod, &hostname, &pod_ips, &deps.host_resolv, deps.mounter.as_ref())
            .map_err(|e| e.to_string())?;
    let marker = deps.setup_marker(uid);
    std::fs::write(&marker, b"").map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(PodContext {
        pod_ips,
        netns: info.netns,
        volumes,
        files,
        host_network: config.host_network,
        stop_signals: BTreeMap::new(),
    })
}

/// Network, sandbox and volumes of a pod, in the kubelet's order (network first, while the
/// namespace still exists). Failures are logged: the state left behind is retried next time.
async fn cleanup_sandbox<R: Runtime>(deps: &Deps<R>, uid: &str) {
    if let Some(net) = &deps.network {
        if let Err(e) = net.detach(uid).await {
            log::warn!("pod {uid}: network teardown: {e}");
        }
    }
    if let Err(e) = deps.runtime.remove_sandbox(uid, None).await {
        log::debug!("pod {uid}: remove sandbox: {e}");
    }
    // Everything under it is unmounted first (volumes, the shared /dev/shm, subPath binds of
    // a hostPath, say): deleting through a mount would delete what it shows. On a failure
    // nothing is removed and the next cleanup retries.
    let data = deps.pod_data(uid);
    if let Err(e) = volume::teardown(&data, deps.mounter.as_ref()) {
        log::warn!("pod {uid}: removing {}: {e}", data.display());
    }
}

fn volume_context<'a, R>(
    deps: &'a Deps<R>,
    pod: &'a Pod,
    desired: &'a DesiredState,
    dir: &'a std::path::Path,
) -> VolumeContext<'a> {
    VolumeContext {
        pod,
        desired,
        pod_dir: dir,
        allocatable: &deps.node.allocatable,
        mounter: deps.mounter.as_ref(),
        now: std::time::SystemTime::now(),
    }
}

/// Re-renders a running pod's configMap, secret, downwardAPI and projected volumes (the
/// kubelet's AtomicWriter swap: containers see the new files at once, no restart).
pub async fn update_volumes<R: Runtime>(deps: &Deps<R>, pod: &Pod, desired: &DesiredState) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = deps.pod_data(&uid).join("volumes");
    let report = volume::update(&volume_context(deps, pod, desired, &dir));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for v in &report.changed {
        log::info!("pod {name}: volume {v} updated");
    }
    for e in &report.errors {
        log::warn!("pod {name}: {}", e.event_message());
    }
}

/// A sandbox found after an agent restart that neither a record nor a manifest wants (a pod
/// deleted while its record was lost): stopped as the kubelet stops a deleted pod's
/// containers, SIGTERM and SIGKILL after `grace`, then removed with its network, data and
/// logs. Never SIGKILL at once: the pod may be mid-write.
pub async fn stop_unknown<R: Runtime>(deps: &Deps<R>, uid: &str, grace: Duration) {
    if let Err(e) = deps.runtime.remove_sandbox(uid, Some(grace)).await {
        log::warn!("pod {uid}: stopping a sandbox nobody wants: {e}");
    }
    cleanup_sandbox(deps, uid).await;
    let logs = crate::runtime::pod_log_dir(deps.state_dir(), uid);
    if let Err(e) = std::fs::remove_dir_all(&logs) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("pod {uid}: removing logs {}: {e}", logs.display());
        }
    }
    log::info!("pod {uid}: sandbox nobody wants stopped and removed");
}

pub async fn remove_sandbox<R: Runtime>(deps: &Deps<R>, uid: &str) -> Outcome {
    cleanup_sandbox(deps, uid).await;
    Outcome {
        fact: Some(Observed::SandboxRemoved { pod_uid: uid.to_string() }),
        update: Some(Update::SandboxGone { uid: uid.to_string() }),
    }
}

/// Makes the image available per its pull policy: from the store, else from its registry.
/// Sends `ImagePulling` on `early` when a registry pull begins, ahead of the answer.
pub async fn pull_image<R>(
    deps: &Deps<R>,
    c: ContainerRef,
    image: &str,
    policy: &str,
    early: &smol::channel::Sender<Outcome>,
) -> Outcome {
    let start = Instant::now();
    let pulling = || {
        // Unbounded, so never full.
        let _ = early.try_send(Outcome::fact(Observed::ImagePulling { c: c.clone() }));
    };
    let result =
        crate::image::pull::ensure(&deps.images, image, policy, &deps.pull_options, pulling).await;
    Outcome::fact(match result {
        Ok(done) => {
            let size = done.image.size;
            let pull = done.pulled.map(|took| PullStats { took, total: start.elapsed(), size });
            Observed::ImagePulled { c, pull }
        }
        Err(e) => {
            let reason = match e {
                PullError::NeverPull { .. } => PullFailure::NeverPull,
                _ => PullFailure::Pull,
            };
            Observed::ImagePullFailed { c, reason, message: e.to_string() }
        }
    })
}

pub async fn start_container<R: Runtime>(
    deps: &Deps<R>,
    c: ContainerRef,
    pod: &Pod,
    container: &Container,
    desired: &DesiredState,
    context: &PodContext,
) -> Outcome {
    match try_start(deps, &c, pod, container, desired, context).await {
        Ok((at, signal)) => Outcome {
            fact: Some(Observed::ContainerStarted { c: c.clone(), at }),
            update: Some(Update::StopSignal {
                uid: c.pod_uid.clone(),
                container: c.name.clone(),
                signal,
            }),
        },
        Err((reason, message)) => Outcome::fact(Observed::StartFailed { c, reason, message }),
    }
}

async fn try_start<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    pod: &Pod,
    container: &Container,
    desired: &DesiredState,
    context: &PodContext,
) -> Result<(Timestamp, NixSignal), (StartFailure, String)> {
    let create = |m: String| (StartFailure::Create, m);
    let reference = container.image.clone().unwrap_or_default();
    let images = deps.images.clone();
    let image = smol::unblock(move || images.resolve(&reference))
        .await
        .map_err(|e| create(e.to_string()))?
        .ok_or_else(|| {
            create(format!("image {:?} is no longer in the image store", container.image))
        })?;
    let image_config = image.config.config().clone().unwrap_or_default();
    let mut files = context.files.clone();
    files.termination_log = Some(
        pod_files::termination_log(&deps.pod_data(&c.pod_uid), &c.name, c.attempt)
            .map_err(|e| create(format!("termination log: {e}")))?,
    );
    let init = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.init_containers.iter().flatten().any(|i| i.name == c.name));
    // Not held across an await: the mounter is shared with other tasks.
    let mut built = {
        let sub_paths = volume::subpath::BindSubPaths {
            dir: deps.pod_data(&c.pod_uid).join("volume-subpaths"),
            mounter: deps.mounter.as_ref(),
        };
        let input = ContainerInput {
            pod,
            container,
            init,
            image: &image_config,
            desired,
            volumes: &context.volumes,
            files: &files,
            pod_ips: &context.pod_ips,
            node: &deps.node,
            sub_paths: &sub_paths,
        };
        spec::container_spec(&input).map_err(|e| {
            if let spec::SpecError::SubPath { mount, problem, .. } = &e {
                // The user sees the kubelet's terse message; the cause goes to the log.
                log::warn!(
                    "pod {}: container {}: subPath of {mount}: {problem}",
                    c.pod_uid,
                    c.name
                );
            }
            spec_failure(e)
        })?
    };
    for w in &built.warnings {
        log::warn!(
            "pod {}: container {}: {w}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            c.name
        );
    }
    let passwd = read_from_layers(&image.layers, "etc/passwd");
    let group = read_from_layers(&image.layers, "etc/group");
    built.resolve_user(passwd.as_deref(), group.as_deref()).map_err(spec_failure)?;
    let config = ContainerConfig {
        id: instance(c),
        spec: built.spec,
        lower_dirs: image.layers,
        log: LogOptions::default(),
    };
    let status = deps.runtime.start_container(&c.pod_uid, config).await.map_err(|e| match e {
        RuntimeError::RunFailed { .. } => (StartFailure::Run, e.to_string()),
        e => (StartFailure::Create, e.to_string()),
    })?;
    let at = super::clock::timestamp(status.started_at);
    Ok((at, built.stop_signal))
}

/// A spec error as the kubelet reports it: its config errors (`runAsNonRoot`, volumes, ...)
/// as `CreateContainerConfigError`, the runtime's (no command, unknown user) as
/// `CreateContainerError`.
fn spec_failure(e: spec::SpecError) -> (StartFailure, String) {
    let reason = match e.reason() {
        "CreateContainerConfigError" => StartFailure::Config,
        _ => StartFailure::Create,
    };
    (reason, e.to_string())
}

/// A file of the image, from the topmost layer that has it (a whiteout hides it below).
fn read_from_layers(layers: &[PathBuf], rel: &str) -> Option<String> {
    for layer in layers.iter().rev() {
        let path = layer.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => return std::fs::read_to_string(&path).ok(),
            // A char device is an overlay whiteout: the file was deleted in this layer.
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

pub async fn kill_container<R: Runtime>(
    deps: &Deps<R>,
    c: ContainerRef,
    signal: Signal,
    stop: Option<NixSignal>,
) -> Outcome {
    let sig = match signal {
        Signal::Term => stop.unwrap_or(NixSignal::SIGTERM),
        Signal::Kill => NixSignal::SIGKILL,
    };
    if let Err(e) = deps.runtime.kill_container(&c.pod_uid, &instance(&c), sig).await {
        // An instance that already exited answers with its exit event; nothing else to do.
        log::debug!("pod {}: kill {} with {sig}: {e}", c.pod_uid, c.name);
    }
    Outcome { fact: None, update: None }
}

pub async fn remove_container<R: Runtime>(deps: &Deps<R>, c: ContainerRef) -> Outcome {
    if let Err(e) = deps.runtime.remove_container(&c.pod_uid, &instance(&c)).await {
        log::debug!("pod {}: remove {}#{}: {e}", c.pod_uid, c.name, c.attempt);
    }
    Outcome { fact: None, update: None }
}

/// Runs one probe; the result is the kubelet's success (with its warning, if any) or its failure
/// message (for exec probes the command's output, as `Liveness probe failed: <output>` shows it).
pub async fn run_probe<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    probe: &Probe,
    timeout: Duration,
    ports: &[ContainerPort],
    context: &PodContext,
) -> Result<Option<String>, String> {
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match run_exec(deps, c, argv, timeout).await? {
            Exec::Exited { code: 0, .. } => Ok(None),
            Exec::Exited { output, .. } => Err(output),
            Exec::TimedOut { what } => Err(what),
        };
    }
    if let Some(get) = &probe.http_get {
        let target = http_target(get, ports, context).await?;
        return probe::http_get(&target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, ports)?;
        let ip = target_ip(tcp.host.as_deref(), context).await?;
        let netns = netns_for_loopback(context, tcp.host.as_deref());
        let addr = SocketAddr::new(ip, port);
        return probe::tcp_socket(addr, netns.as_deref(), timeout).await.map(|()| None);
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
        let ip = target_ip(None, context).await?;
        let service = grpc.service.clone().unwrap_or_default();
        let netns = netns_for_loopback(context, None);
        let addr = SocketAddr::new(ip, port);
        return probe::grpc(addr, &service, netns.as_deref(), timeout).await.map(|()| None);
    }
    Err("unknown probe handler".into())
}

/// Runs one lifecycle hook. The error is the kubelet's message (`Exec lifecycle hook ([cmd])
/// for Container "c" in Pod "name_ns(uid)" failed - error: ..., message: "output"`), shown in
/// the container's status for postStart and logged; events carry no output, as in the kubelet.
#[allow(clippy::too_many_arguments)]
pub async fn run_hook<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    pod: &str,
    handler: &LifecycleHandler,
    timeout: Option<Duration>,
    ports: &[ContainerPort],
    context: &PodContext,
) -> Result<(), String> {
    // preStop is bounded by the grace period, postStart by nothing (as in the kubelet); keep a
    // cap so a stuck hook cannot hold a task forever.
    let timeout = timeout.unwrap_or(Duration::from_secs(3600));
    let container = &c.name;
    if let Some(exec) = &handler.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let error = match run_exec(deps, c, argv.clone(), timeout).await {
            Ok(Exec::Exited { code: 0, .. }) => return Ok(()),
            Ok(Exec::Exited { code, stderr, output }) => {
                let (cmd, output) =
                    (argv.join(" "), crate::runtime::spec::downward::go_quote(&output));
                format!("command '{cmd}' exited with {code}: {stderr}, message: {output}")
            }
            Ok(Exec::TimedOut { what }) => format!("{what}, message: \"\""),
            Err(e) => format!("{e}, message: \"\""),
        };
        let argv = format!("[{}]", argv.join(" "));
        return Err(format!(
            "Exec lifecycle hook ({argv}) for Container \"{container}\" in Pod \"{pod}\" failed - error: {error}"
        ));
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        let result = match http_target(get, ports, context).await {
            // Any answer will do: the kubelet fails HTTP hooks only on transport errors.
            Ok(target) => probe::http_get_any(&target, timeout).await,
            Err(e) => Err(e),
        };
        return result.map_err(|e| {
            format!(
                "HTTP lifecycle hook ({path}) for Container \"{container}\" in Pod \"{pod}\" failed - error: {e}"
            )
        });
    }
    if let Some(sleep) = &handler.sleep {
        smol::Timer::after(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    // tcpSocket is accepted by validation for compatibility but never run by the kubelet.
    Err("Cannot run handler: invalid handler: tcpSocket is not supported as a lifecycle handler"
        .into())
}

/// How an exec ended, in the terms probes and hooks report.
enum Exec {
    /// `output` is stdout then stderr, as the kubelet's `RunInContainer` returns them.
    Exited { code: i32, stderr: String, output: String },
    /// The kubelet's timeout message, `command "a b" timed out`.
    TimedOut { what: String },
}

/// How long past an exec's own timeout the agent waits for the supervisor's answer.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

async fn run_exec<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    argv: Vec<String>,
    timeout: Duration,
) -> Result<Exec, String> {
    let what = format!("command \"{}\" timed out", argv.join(" "));
    let request = ExecRequest { id: instance(c), argv, timeout, output_limit: EXEC_OUTPUT };
    // The supervisor enforces the timeout; this deadline only covers a supervisor that does
    // not answer, so a stuck exec cannot hold the probe (never re-run while in flight) forever.
    let answer = async { deps.runtime.exec(&c.pod_uid, request).await.map_err(|e| e.to_string()) };
    let deadline = async {
        crate::tasks::sleep(timeout + SUPERVISOR_GRACE).await;
        Err(format!(
            "the pod supervisor did not answer within {}s",
            (timeout + SUPERVISOR_GRACE).as_secs()
        ))
    };
    let result = smol::future::or(answer, deadline).await?;
    if result.timed_out {
        return Ok(Exec::TimedOut { what });
    }
    let mut output = result.stdout;
    output.push_str(&result.stderr);
    output.truncate(floor_char_boundary(&output, EXEC_OUTPUT));
    Ok(Exec::Exited { code: result.exit_code.unwrap_or(-1), stderr: result.stderr, output })
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len())).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

async fn http_target(
    get: &HTTPGetAction,
    ports: &[ContainerPort],
    context: &PodContext,
) -> Result<probe::HttpGet, String> {
    let port = resolve_port(&get.port, ports)?;
    let ip = target_ip(get.host.as_deref(), context).await?;
    let addr = SocketAddr::new(ip, port);
    let mut headers: Vec<(String, String)> =
        get.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
    // A Host header sets the request's host, as Go's `req.Host`.
    let host_header = headers
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|i| headers.remove(i).1);
    let url_host = get.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
    Ok(probe::HttpGet {
        addr,
        url_host,
        host_header,
        path: get.path.clone().unwrap_or_default(),
        scheme: get.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        headers,
        netns: netns_for_loopback(context, get.host.as_deref()),
    })
}

/// A number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .ok_or_else(|| format!("port {name:?} not found in the container's ports")),
    }
}

/// Where probes connect: the handler's host (an IP or a name resolved on the host), else the
/// pod IP; hostNetwork pods and pods without a network are reached on their loopback.
async fn target_ip(host: Option<&str>, context: &PodContext) -> Result<IpAddr, String> {
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        if let Ok(ip) = h.parse() {
            return Ok(ip);
        }
        let addrs = smol::net::resolve((h, 0)).await.map_err(|e| format!("lookup {h}: {e}"))?;
        return addrs
            .first()
            .map(SocketAddr::ip)
            .ok_or_else(|| format!("lookup {h}: no such host"));
    }
    if context.host_network {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match context.pod_ips.first().and_then(|ip| ip.parse().ok()) {
        Some(ip) => Ok(ip),
        None if context.netns.is_some() => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => Err("the pod has no IP address and no network namespace".to_string()),
    }
}

/// The pod's network namespace when the probe must connect to its loopback from inside it
/// (no CNI network: the pod has no IP the host can reach).
fn netns_for_loopback(context: &PodContext, host: Option<&str>) -> Option<PathBuf> {
    let no_host = host.is_none_or(str::is_empty);
    (no_host && !context.host_network && context.pod_ips.is_empty())
        .then(|| context.netns.clone())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::NonRootProblem;

    /// runAsNonRoot is the kubelet's CreateContainerConfigError; an unknown user is the
    /// runtime's CreateContainerError.
    #[test]
    fn spec_errors_keep_the_kubelets_reason() {
        let e = spec::SpecError::RunAsNonRoot {
            pod: "web_default(u)".into(),
            container: "app".into(),
            problem: NonRootProblem::ImageRoot,
        };
        assert_eq!(
            spec_failure(e),
            (
                StartFailure::Config,
                "container has runAsNonRoot and image will run as root (pod: \"web_default(u)\", container: app)".into()
            )
        );
        let e = spec::SpecError::UserNotFound { user: "www".into() };
        assert_eq!(spec_failure(e).0, StartFailure::Create);
    }
}
