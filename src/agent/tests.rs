//! The agent against a fake runtime, a fake mounter and a store in a temp dir: dispatch,
//! outcomes, runtime events, publishing, commits and adoption, without root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use smol::channel::Receiver;

use crate::api::Published;
use crate::engine::Observed;
use crate::image::build::{write_archive, ArchiveFormat, ImageSpec, LayerBuilder};
use crate::image::ImageStore;
use crate::manifest::{DesiredState, ObjectKey};
use crate::quantity::Quantity;
use crate::runtime::fake::{Call, Op};
use crate::runtime::spec::seccomp::SeccompNode;
use crate::runtime::spec::{Allocatable, NodeInfo};
use crate::runtime::{ExecResult, FakeRuntime, InstanceId, Runtime, RuntimeError};
use crate::store::Store;
use crate::volume::FakeMounter;
use crate::watch::{Change, Update};

use super::adopt;
use super::deps::Deps;
use super::housekeeping::{Housekeeping, Settings};
use super::outcome::Outcome;
use super::state::Agent;

const IMAGE: &str = "example.com/app:1";

fn pod_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n{extra}"
    )
}

fn desired(yaml: &str) -> Arc<DesiredState> {
    let docs = crate::manifest::parse_str(Path::new("/m/pods.yaml"), yaml).expect("valid");
    let (state, errors) = DesiredState::build([docs.as_slice()], &DesiredState::default());
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(state)
}

fn update(state: Arc<DesiredState>, changes: Vec<Change>) -> Update {
    Update { state, changes, objects: Vec::new(), errors: Vec::new() }
}

struct Fixture {
    dir: tempfile::TempDir,
    ex: Arc<smol::Executor<'static>>,
    runtime: Arc<FakeRuntime>,
    agent: Agent<FakeRuntime>,
    outcomes: Receiver<Outcome>,
    events: Receiver<crate::runtime::Event>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_runtime(tempfile::tempdir().unwrap(), Arc::new(FakeRuntime::new()))
    }

    fn with_runtime(dir: tempfile::TempDir, runtime: Arc<FakeRuntime>) -> Self {
        let state = dir.path().to_path_buf();
        let images = Arc::new(ImageStore::open(state.join("images")).unwrap());
        if images.resolve(IMAGE).unwrap().is_none() {
            import_image(&images, dir.path());
        }
        let deps = Arc::new(deps(&state, runtime.clone(), images.clone()));
        let store = Store::open(&state.join("outpost.db")).unwrap();
        let ex = Arc::new(smol::Executor::new());
        let (tx, outcomes) = smol::channel::unbounded();
        let settings = Settings {
            state: state.clone(),
            meminfo: "/proc/meminfo".into(),
            interval: Duration::from_secs(3600),
            thresholds: Vec::new(),
            images: None,
        };
        let published = Arc::new(Published::default());
        let agent = Agent::new(ex.clone(), deps, store, published, tx, Housekeeping::new(settings));
        let events = runtime.events();
        Self { dir, ex, runtime, agent, outcomes, events }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Steps and feeds outcomes and runtime events back until `done` holds (or 10 s pass).
    fn run_until(&mut self, what: &str, done: impl Fn(&Agent<FakeRuntime>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.agent) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.agent.step();
            let (ex, outcomes, events) =
                (self.ex.clone(), self.outcomes.clone(), self.events.clone());
            let input = crate::tasks::block_on(ex.run(async move {
                let outcome = async { outcomes.recv().await.ok().map(Ok) };
                let event = async { events.recv().await.ok().map(Err) };
                let idle = async {
                    crate::tasks::sleep(Duration::from_millis(20)).await;
                    None
                };
                smol::future::or(smol::future::or(outcome, event), idle).await
            }))
            .unwrap();
            match input {
                Some(Ok(outcome)) => {
                    self.agent.changed = true;
                    self.agent.on_outcome(outcome);
                }
                Some(Err(event)) => {
                    self.agent.changed = true;
                    self.agent.on_runtime_event(event);
                }
                None => {}
            }
        }
        self.agent.step();
    }

    /// A pod of one container from [`pod_yaml`], run until its container started.
    fn start_pod(&mut self, name: &str) -> String {
        let state = desired(&pod_yaml(name, ""));
        let uid = uid_of(&state, name);
        self.agent.on_desired(update(state, Vec::new()));
        self.run_until("the container to start", |a| a.tags.len() == 1);
        uid
    }

    fn phase(&self, name: &str) -> Option<String> {
        let snapshot = self.agent.published.current();
        let pod = snapshot.pods.iter().find(|p| p.metadata.name.as_deref() == Some(name))?;
        pod.status.as_ref()?.phase.clone()
    }

    fn started(&self) -> usize {
        self.runtime.calls().iter().filter(|c| matches!(c, Call::StartContainer { .. })).count()
    }
}

fn deps(state: &Path, runtime: Arc<FakeRuntime>, images: Arc<ImageStore>) -> Deps<FakeRuntime> {
    Deps {
        devices: None,
        userns: None,
        runtime,
        images,
        pull_options: crate::image::pull::PullOptions::for_state(state),
        network: None,
        node: NodeInfo {
            name: "edge-1".into(),
            host_ips: vec!["192.0.2.10".into()],
            allocatable: Allocatable {
                cpu: Quantity::from_units(2),
                memory: Quantity::from_units(1 << 30),
                ephemeral_storage: Quantity::from_units(1 << 34),
            },
            memory_capacity: 1 << 30,
            seccomp: SeccompNode::new(false, state),
        },
        data_dir: state.join("pod-data"),
        mounter: Arc::new(FakeMounter::default()),
        host_resolv: "nameserver 192.0.2.53\n".into(),
        pod_max_pids: Some(4096),
    }
}

fn import_image(images: &ImageStore, dir: &Path) {
    let mut layer = LayerBuilder::new();
    layer.file("bin/app", 0o755, b"#!/bin/sh\n").unwrap();
    let spec = ImageSpec {
        reference: IMAGE.into(),
        config: serde_json::json!({"Cmd": ["/bin/app"]}),
        layers: vec![layer.finish().unwrap()],
    };
    let archive = dir.join("app.tar");
    write_archive(&archive, &[spec], ArchiveFormat::Oci, false).unwrap();
    images.import(&archive).unwrap();
}

fn node_config() -> crate::engine::NodeConfig {
    crate::engine::NodeConfig {
        capacity: crate::engine::ResourceList {
            cpu_milli: 2000,
            memory: 1 << 30,
            ephemeral_storage: 1 << 34,
        },
        system_reserved: Default::default(),
        kube_reserved: Default::default(),
        eviction_hard: Vec::new(),
        max_pods: 110,
        pressure_transition: Duration::from_secs(300),
        sysctls: crate::engine::SysctlAllowlist::new(None, &Default::default()),
        name: "edge-1".into(),
        labels: Default::default(),
    }
}

fn uid_of(state: &DesiredState, name: &str) -> String {
    state.pods[&ObjectKey::new("default", name)].uid().to_string()
}

#[test]
fn a_desired_pod_gets_a_sandbox_and_its_container_started() {
    let mut f = Fixture::new();
    let state = desired(&pod_yaml("web", ""));
    let uid = uid_of(&state, "web");
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the container to run", |a| {
        a.engine.pod_status(&uid).is_some_and(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
    });
    let calls = f.runtime.calls();
    let Some(Call::CreateSandbox(config)) = calls.first() else { panic!("{calls:?}") };
    assert_eq!(config.pod_uid, uid);
    assert_eq!(config.pids_max, Some(4096));
    assert_eq!(f.started(), 1);
    assert!(f.agent.contexts.contains_key(&uid), "the sandbox's context is kept");
    assert!(f.agent.deps.setup_marker(&uid).exists());
    assert_eq!(f.phase("web").as_deref(), Some("Running"));
}

#[test]
fn a_failed_sandbox_leaves_no_context_and_is_retried() {
    let mut f = Fixture::new();
    f.runtime.fail_next(Op::CreateSandbox, RuntimeError::NoSandbox { pod_uid: "x".into() });
    let state = desired(&pod_yaml("web", ""));
    let uid = uid_of(&state, "web");
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the first attempt's failure", |a| {
        a.recent_events.iter().any(|e| e.reason == "FailedCreatePodSandBox")
    });
    assert!(!f.agent.contexts.contains_key(&uid));
    let sandboxes = |f: &Fixture| {
        f.runtime.calls().iter().filter(|c| matches!(c, Call::CreateSandbox(_))).count()
    };
    assert_eq!(sandboxes(&f), 1);
    // The kubelet retries a failed sandbox with back-off; nothing half-made stays behind.
    assert!(!f.agent.deps.setup_marker(&uid).exists());
}

#[test]
fn a_container_exit_reaches_the_engine_through_its_sandbox_tag() {
    let mut f = Fixture::new();
    let uid = f.start_pod("job");
    f.runtime.exit_container(&uid, &InstanceId::new("app", 0), 0, SystemTime::now());
    f.run_until("the pod to succeed", |a| {
        a.engine.pod_status(&uid).and_then(|s| s.phase).as_deref() == Some("Succeeded")
    });
    assert_eq!(f.phase("job").as_deref(), Some("Succeeded"));
}

#[test]
fn an_exit_of_an_instance_the_agent_never_started_is_ignored() {
    let mut f = Fixture::new();
    let uid = f.start_pod("web");
    let exit = crate::runtime::ExitInfo {
        exit_code: 1,
        signal: None,
        oom_killed: false,
        lost: false,
        finished_at: SystemTime::now(),
    };
    let id = InstanceId::new("app", 7);
    f.agent.on_runtime_event(crate::runtime::Event::ContainerExited {
        pod_uid: uid.clone(),
        id,
        exit,
    });
    f.agent.step();
    assert_eq!(f.phase("web").as_deref(), Some("Running"));
}

#[test]
fn commits_write_pod_records_and_events_once() {
    let mut f = Fixture::new();
    let uid = f.start_pod("web");
    let records = f.agent.store.pods().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].uid.as_str(), records[0].name.as_str()), (uid.as_str(), "web"));
    assert_eq!(f.agent.persisted.get(&uid), Some(&records[0].engine_state));
    let events = f.agent.store.events(None).unwrap();
    assert!(events.iter().any(|e| e.reason == "Started" && e.pod_uid == uid), "{events:?}");
    // Nothing new: the next commit writes nothing (the event count stays).
    let before = f.agent.store.events(None).unwrap().len();
    f.agent.changed = true;
    f.agent.step();
    assert_eq!(f.agent.store.events(None).unwrap().len(), before);
}

#[test]
fn a_deleted_pod_is_removed_with_its_record_context_and_logs() {
    let mut f = Fixture::new();
    let uid = f.start_pod("web");
    let logs = crate::runtime::pod_log_dir(&f.state(), &uid);
    std::fs::create_dir_all(&logs).unwrap();
    f.agent.on_desired(update(Arc::new(DesiredState::default()), Vec::new()));
    // The fake answers the TERM with an exit, as a container that stops would.
    let rt = f.runtime.clone();
    let uid2 = uid.clone();
    f.run_until("the pod to be gone", move |a| {
        if rt.calls().iter().any(|c| matches!(c, Call::KillContainer { .. })) && a.tags.len() == 1 {
            rt.exit_container(&uid2, &InstanceId::new("app", 0), 0, SystemTime::now());
        }
        a.engine.pod(&uid2).is_none()
    });
    assert!(!f.agent.contexts.contains_key(&uid));
    assert!(f.agent.store.pods().unwrap().is_empty());
    assert!(!logs.exists(), "the pod's logs go with it");
    assert!(f.runtime.calls().iter().any(|c| matches!(c, Call::RemoveSandbox { .. })));
}

#[test]
fn a_changed_config_map_rerenders_a_running_pods_volume() {
    let mut f = Fixture::new();
    let volume = "    volumeMounts:\n    - {name: cfg, mountPath: /cfg}\n  volumes:\n  - name: cfg\n    configMap: {name: settings}\n";
    let cm = |v: &str| {
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: {v}}}\n")
    };
    let state = desired(&format!("{}{}", pod_yaml("web", volume), cm("fast")));
    let uid = uid_of(&state, "web");
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the container to start", |a| a.tags.len() == 1);
    let file = f.agent.deps.pod_data(&uid).join("volumes/kubernetes.io~configmap/cfg/mode");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "fast");
    let state = desired(&format!("{}{}", pod_yaml("web", volume), cm("slow")));
    assert_eq!(uid_of(&state, "web"), uid, "a ConfigMap change keeps the pod");
    let key = ObjectKey::new("default", "web");
    let change =
        Change::PodConfigChanged { key, uid: uid.clone(), reference: "ConfigMap settings".into() };
    f.agent.on_desired(update(state, vec![change]));
    let file2 = file.clone();
    f.run_until("the volume to show the new value", move |_| {
        std::fs::read_to_string(&file2).is_ok_and(|s| s == "slow")
    });
    assert_eq!(f.started(), 1, "no restart for a volume update");
}

#[test]
fn exec_probe_results_are_observed_and_a_passing_one_is_quiet() {
    let mut f = Fixture::new();
    let probe = "    readinessProbe:\n      exec: {command: [check]}\n      periodSeconds: 1\n";
    let state = desired(&pod_yaml("web", probe));
    let uid = uid_of(&state, "web");
    f.runtime.push_exec_result(ExecResult {
        exit_code: Some(0),
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
    });
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the pod to be ready", |a| {
        a.engine.pod_status(&uid).is_some_and(|s| {
            s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
        })
    });
    let exec = f.runtime.calls().into_iter().find_map(|c| match c {
        Call::Exec { request, .. } => Some(request.argv),
        _ => None,
    });
    assert_eq!(exec, Some(vec!["check".to_string()]));
    // Another pass changes nothing: the agent may defer its step.
    let c = crate::engine::ContainerRef {
        pod_uid: uid.clone(),
        name: "app".into(),
        attempt: 0,
        sandbox: 1,
    };
    let fact = Observed::ProbeResult {
        c,
        kind: crate::engine::ProbeKind::Readiness,
        seq: 0,
        result: Ok(None),
    };
    assert!(f.agent.on_outcome(Outcome { fact: Some(fact), update: None }));
}

#[test]
fn events_fold_repeats_and_reach_the_api_and_the_store() {
    let mut f = Fixture::new();
    for _ in 0..3 {
        f.agent.record_event(
            "u1".into(),
            Some("app".into()),
            crate::engine::EventType::Warning,
            "BackOff".into(),
            "Back-off restarting failed container".into(),
        );
    }
    f.agent.commit();
    f.agent.publish();
    let recent: Vec<_> = f.agent.recent_events.iter().filter(|e| e.reason == "BackOff").collect();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].count, 3);
    assert_eq!(f.agent.published.current().events.len(), 1);
    let stored = f.agent.store.events(None).unwrap();
    assert_eq!(stored.iter().filter(|e| e.reason == "BackOff").map(|e| e.count).sum::<u32>(), 3);
}

#[test]
fn a_recovered_database_is_a_warning_event_on_the_node() {
    let mut f = Fixture::new();
    f.agent.database_recovered(None, &[]);
    assert!(f.agent.pending_events.is_empty(), "nothing to say when nothing was lost");
    f.agent.database_recovered(None, &["default/web".into()]);
    f.agent.commit();
    let e = f.agent.store.events(None).unwrap().pop().unwrap();
    assert_eq!((e.type_.as_str(), e.reason.as_str()), ("Warning", "StateDatabaseRecovered"));
    assert_eq!(e.pod_name, "edge-1");
    assert!(e.message.contains("default/web"), "{}", e.message);
}

#[test]
fn a_restarted_agent_adopts_the_running_pod_without_restarting_it() {
    let mut f = Fixture::new();
    let state = desired(&pod_yaml("web", ""));
    let uid = uid_of(&state, "web");
    f.agent.on_desired(update(state.clone(), Vec::new()));
    f.run_until("the container to start", |a| a.tags.len() == 1);
    let (runtime, dir) = (f.runtime.clone(), f.dir);
    drop(f.agent);
    runtime.take_calls();
    // A new agent on the same state directory and runtime.
    let mut g = Fixture::with_runtime(dir, runtime.clone());
    let adoption =
        crate::tasks::block_on(adopt::adopt(&g.agent.deps, &g.agent.store, &state)).unwrap();
    assert!(adoption.unrecorded.is_empty(), "the store had the pod: {:?}", adoption.unrecorded);
    let node = node_config();
    g.agent.resume(adoption, node);
    g.agent.on_desired(update(state, Vec::new()));
    g.run_until("a step", |_| true);
    g.agent.step();
    assert_eq!(g.phase("web").as_deref(), Some("Running"));
    assert!(g.agent.contexts.contains_key(&uid));

    let calls = runtime.calls();
    assert!(
        !calls.iter().any(|c| matches!(
            c,
            Call::CreateSandbox(_) | Call::StartContainer { .. } | Call::RemoveSandbox { .. }
        )),
        "adoption restarted something: {calls:?}"
    );
}

#[test]
fn an_adopted_pod_nobody_wants_is_stopped_under_its_name() {
    let mut f = Fixture::new();
    f.start_pod("web");
    let (runtime, dir) = (f.runtime.clone(), f.dir);
    drop(f.agent);
    let mut g = Fixture::with_runtime(dir, runtime);
    let nothing = Arc::new(DesiredState::default());
    let adoption =
        crate::tasks::block_on(adopt::adopt(&g.agent.deps, &g.agent.store, &nothing)).unwrap();
    g.agent.resume(adoption, node_config());
    g.agent.on_desired(update(nothing, Vec::new()));
    g.run_until("the Killing event", |a| a.recent_events.iter().any(|e| e.reason == "Killing"));
    let killing = g.agent.recent_events.iter().find(|e| e.reason == "Killing").unwrap();
    assert_eq!((killing.namespace.as_str(), killing.pod_name.as_str()), ("default", "web"));
}

#[test]
fn sleeps_end_on_the_tick_grid_and_before_chores() {
    let f = Fixture::new();
    // No pods, no watchdog: until the next chore (housekeeping in an hour, image GC sooner).
    let sleep = f.agent.sleep_for(None);
    assert!(sleep <= Duration::from_secs(60), "{sleep:?}");
    assert!(f.agent.until_chores() <= Duration::from_secs(300));
    assert!(f.agent.sleep_for(Some(Duration::from_secs(5))) <= Duration::from_secs(5));
}

#[test]
fn a_start_waits_briefly_for_a_lock_that_is_being_released() {
    let dir = tempfile::tempdir().unwrap();
    let held = super::lock(dir.path(), Duration::ZERO).unwrap();
    let refused = super::lock(dir.path(), Duration::from_millis(200));
    assert!(matches!(refused, Err(super::AgentError::Locked { .. })), "another agent holds it");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    assert!(super::lock(dir.path(), Duration::from_secs(5)).is_ok(), "taken once released");
    release.join().unwrap();
}

/// The kubelet's `getPullSecretsForPod`: usable secrets make the keyring, the others are named
/// in a Warning event, and the pull goes ahead.
#[test]
fn image_pull_secrets_feed_the_pull_and_unusable_ones_are_a_warning() {
    let mut f = Fixture::new();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "robot:pw");
    let secrets = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\": {{\"reg.example:5000\": {{\"auth\": \"{auth}\"}}}}}}'\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: plain}}\nstringData: {{a: b}}\n"
    );
    let extra = "  imagePullSecrets: [{name: regcred}, {name: missing}, {name: plain}]\n";
    let yaml = format!("{}{extra}{secrets}", pod_yaml("web", ""));
    let state = desired(&yaml);
    let uid = uid_of(&state, "web");
    let spec = state.pods.values().next().unwrap().pod.spec.clone().unwrap();
    let (ring, unusable) = super::container::pull_secrets(&spec, "default", &state);
    assert_eq!(unusable, ["missing", "plain"]);
    let found = ring.lookup("reg.example:5000", "team/app");
    assert_eq!(found, [crate::image::pull::auth::Credentials::new("robot", "pw")]);
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the container to start", |a| a.tags.len() == 1);
    let warning =
        f.agent.recent_events.iter().find(|e| e.reason == "FailedToRetrieveImagePullSecret");
    let warning = warning.expect("a warning event");
    assert_eq!((warning.pod_uid.as_str(), warning.type_.as_str()), (uid.as_str(), "Warning"));
    assert_eq!(
        warning.message,
        "Unable to retrieve some image pull secrets (missing, plain); attempting to pull the image may not succeed."
    );
    assert!(!f.agent.recent_events.iter().any(|e| e.message.contains("robot")));
}

/// The kubelet's static pod source overwrites every pod's `spec.nodeName` with its node's
/// name (config/common.go `applyDefaults`), so a file naming another node still runs here.
#[test]
fn a_pods_node_name_is_overwritten_with_this_nodes_like_the_static_pod_source() {
    let mut f = Fixture::new();
    let state = desired(&pod_yaml("web", "  nodeName: elsewhere\n"));
    let uid = uid_of(&state, "web");
    f.agent.on_desired(update(state, Vec::new()));
    f.run_until("the container to start", |a| a.tags.len() == 1);
    assert_eq!(f.phase("web").as_deref(), Some("Running"));
    let snapshot = f.agent.published.current();
    let pod = snapshot.pods.iter().find(|p| p.metadata.uid.as_deref() == Some(&uid)).unwrap();
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("edge-1"));
}

/// The registered Node reaches the API with each publish, and the kubelet's start events
/// are recorded on it.
#[test]
fn the_registered_node_is_published_with_its_start_events() {
    let mut f = Fixture::new();
    let config = node_config();
    let facts = super::node_object::facts(
        "edge-1",
        &["192.0.2.10".to_string()],
        &config,
        &f.state(),
        &super::node_object::Sources::host(),
        crate::format::now(),
    );
    f.agent.register_node(facts);
    f.agent.resume(Default::default(), config);
    f.agent.on_desired(update(desired(&pod_yaml("web", "")), Vec::new()));
    f.agent.step();
    let node = f.agent.published.current().node.clone().expect("a node");
    assert_eq!(node.metadata.name.as_deref(), Some("edge-1"));
    let conditions = node.status.as_ref().unwrap().conditions.clone().unwrap();
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
    let stored = f.agent.store.events(None).unwrap();
    let node_events: Vec<&str> =
        stored.iter().filter(|e| e.pod_uid.is_empty()).map(|e| e.reason.as_str()).collect();
    assert_eq!(
        node_events,
        [
            "Starting",
            "NodeHasSufficientMemory",
            "NodeHasNoDiskPressure",
            "NodeHasSufficientPID",
            "NodeReady"
        ]
    );
}
