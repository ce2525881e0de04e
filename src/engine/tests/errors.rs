//! Start errors as waiting reasons: ErrImagePull / ImagePullBackOff, CreateContainerConfigError,
//! CreateContainerError, RunContainerError; missing ConfigMaps/Secrets; sandbox failures.

use super::sim::*;
use crate::engine::{ContainerRef, Observed, ProbeKind, StartFailure};
use crate::manifest::ObjectKey;

const WEB: &str = r#"
metadata: {name: web}
spec:
  containers:
  - {name: app, image: "nginx:1.27"}
"#;

/// Pull back-off on the same 10s→300s curve; the kubelet shows ErrImagePull until its next
/// sync (10 s later), then ImagePullBackOff.
#[test]
fn image_pull_errors_and_backoff() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.script("app").pull =
        Box::new(|_| (0, Err("rpc error: code = NotFound desc = manifest unknown".into())));
    let mut seen = vec![];
    for at in [0, 9, 10, 19, 20, 29, 30, 39, 40, 69, 70] {
        sim.run_until(at);
        seen.push((at, waiting(&sim.ctr("app")).0));
    }
    let pulls: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("PullImage")).collect();
    assert_eq!(
        pulls,
        [
            "0 PullImage app#0 nginx:1.27",
            "10 PullImage app#0 nginx:1.27",
            "30 PullImage app#0 nginx:1.27",
            "70 PullImage app#0 nginx:1.27"
        ]
    );
    let r = |s: &str| s.to_string();
    assert_eq!(
        seen,
        [
            (0, r("ErrImagePull")),
            (9, r("ErrImagePull")),
            (10, r("ErrImagePull")),
            (19, r("ErrImagePull")),
            (20, r("ImagePullBackOff")),
            (29, r("ImagePullBackOff")),
            (30, r("ErrImagePull")),
            (39, r("ErrImagePull")),
            (40, r("ImagePullBackOff")),
            (69, r("ImagePullBackOff")),
            (70, r("ErrImagePull"))
        ]
    );
    assert_eq!(waiting(&sim.ctr("app")).1, "rpc error: code = NotFound desc = manifest unknown");
    sim.run_until(75);
    assert_eq!(sim.ctr("app").restart_count, 0);
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Pending", "ErrImagePull"));
}

#[test]
fn image_pull_events_are_the_kubelets() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.script("app").pull =
        Box::new(|a| (0, if a == 0 { Err("not found".into()) } else { Ok(()) }));
    sim.run_until(25);
    assert_eq!(
        sim.events(),
        [
            "0 Event app Normal Pulling: Pulling image \"nginx:1.27\"",
            "0 Event app Warning Failed: Failed to pull image \"nginx:1.27\": not found",
            "0 Event app Warning Failed: Error: ErrImagePull",
            "10 Event app Normal Pulling: Pulling image \"nginx:1.27\"",
            "10 Event app Warning Failed: Failed to pull image \"nginx:1.27\": not found",
            "10 Event app Warning Failed: Error: ErrImagePull",
            "20 Event app Warning BackOff: Back-off pulling image \"nginx:1.27\"",
        ]
    );
}

fn with_policy(policy: &str) -> String {
    WEB.replace(
        r#"image: "nginx:1.27""#,
        &format!(r#"image: "nginx:1.27", imagePullPolicy: {policy}"#),
    )
}

/// The kubelet's `EnsureImageExists`: an image already present under IfNotPresent or Never
/// gets one `Pulled` event and no `Pulling`; a real pull gets both, with its figures.
#[test]
fn pull_events_say_whether_the_image_was_pulled() {
    let pulling = r#"Pulling: Pulling image "nginx:1.27""#;
    let pulled = r#"Pulled: Successfully pulled image "nginx:1.27" in 1.234s (1.5s including waiting). Image size: 4269694 bytes."#;
    let present = r#"Pulled: Container image "nginx:1.27" already present on machine"#;
    for (policy, in_store, expected) in [
        ("IfNotPresent", true, vec![present]),
        ("Never", true, vec![present]),
        ("IfNotPresent", false, vec![pulling, pulled]),
        ("Always", true, vec![pulling, pulled]),
        ("Always", false, vec![pulling, pulled]),
    ] {
        let mut sim = Sim::new(&[pod(&with_policy(policy))]);
        sim.script("app").present = in_store;
        sim.run_until(0);
        let events: Vec<String> =
            sim.events().into_iter().filter(|l| l.contains(" Pull")).collect();
        let expected: Vec<String> =
            expected.iter().map(|e| format!("0 Event app Normal {e}")).collect();
        assert_eq!(events, expected, "{policy}, in store: {in_store}");
        assert_eq!(sim.phase(), "Running", "{policy}, in store: {in_store}");
    }
}

/// Never and absent: the kubelet's ErrImageNeverPull, retried every 10 s (its pod worker's
/// back-off after a sync error) with no image back-off, until the image appears.
#[test]
fn never_pull_of_an_absent_image_waits_without_back_off() {
    let mut sim = Sim::new(&[pod(&with_policy("Never"))]);
    sim.run_until(25);
    let msg = "Container image \"nginx:1.27\" is not present with pull policy of Never";
    assert_eq!(waiting(&sim.ctr("app")), ("ErrImageNeverPull".into(), msg.into()));
    assert_eq!((sim.phase().as_str(), sim.summary().as_str()), ("Pending", "ErrImageNeverPull"));
    let log = sim.take();
    let pulls: Vec<&String> = log.iter().filter(|l| l.contains("PullImage")).collect();
    assert_eq!(
        pulls,
        [
            "0 PullImage app#0 nginx:1.27",
            "10 PullImage app#0 nginx:1.27",
            "20 PullImage app#0 nginx:1.27"
        ]
    );
    let events: Vec<&String> = log.iter().filter(|l| l.starts_with("0 Event")).collect();
    assert_eq!(
        events,
        [
            &format!("0 Event app Warning ErrImageNeverPull: {msg}"),
            "0 Event app Warning Failed: Error: ErrImageNeverPull",
        ]
    );
    assert!(!log.iter().any(|l| l.contains("Pulling") || l.contains("BackOff")), "{log:?}");
    sim.script("app").present = true;
    sim.run_until(30);
    assert_eq!(
        sim.take(),
        [
            "30 PullImage app#0 nginx:1.27",
            "30 Event app Normal Pulled: Container image \"nginx:1.27\" already present on machine",
            "30 StartContainer app#0",
            "30 Event app Normal Created: Created container: app",
            "30 Event app Normal Started: Started container app",
        ]
    );
}

const ENV_CM: &str = r#"
metadata: {name: web}
spec:
  containers:
  - name: app
    image: "nginx:1.27"
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: cfg, key: mode}}
    - name: EXTRA
      valueFrom: {configMapKeyRef: {name: missing, key: x, optional: true}}
"#;

/// A missing ConfigMap (or key) that is not optional: CreateContainerConfigError with the
/// kubelet's message; the pod waits and starts as soon as the object appears.
#[test]
fn missing_config_map_key_waits_then_starts_when_it_appears() {
    let mut sim = Sim::new(&[pod(ENV_CM)]);
    sim.run_until(10);
    assert_eq!(
        waiting(&sim.ctr("app")),
        ("CreateContainerConfigError".into(), "configmap \"cfg\" not found".into())
    );
    assert_eq!(
        (sim.phase().as_str(), sim.summary().as_str()),
        ("Pending", "CreateContainerConfigError")
    );
    assert_eq!(cond_brief(&sim.cond("PodReadyToStartContainers")).0, "True");
    assert_eq!(
        sim.take(),
        ["0 CreateSandbox", "0 Event app Warning Failed: Error: configmap \"cfg\" not found"]
    );
    sim.desired_mut()
        .config_maps
        .insert(ObjectKey::new("default", "cfg"), config_map("cfg", &["other"]));
    sim.run_until(20);
    assert_eq!(waiting(&sim.ctr("app")).1, "couldn't find key mode in ConfigMap default/cfg");
    sim.desired_mut()
        .config_maps
        .insert(ObjectKey::new("default", "cfg"), config_map("cfg", &["mode"]));
    sim.take();
    sim.run_until(30);
    assert_eq!(sim.actions(), ["20 PullImage app#0 nginx:1.27", "20 StartContainer app#0"]);
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn missing_secret_via_env_from_is_a_config_error() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  containers:
  - name: app
    image: "nginx:1.27"
    envFrom: [{secretRef: {name: creds}}, {configMapRef: {name: opt, optional: true}}]
"#)]);
    sim.run_until(5);
    assert_eq!(
        waiting(&sim.ctr("app")),
        ("CreateContainerConfigError".into(), "secret \"creds\" not found".into())
    );
    let mut s = k8s_openapi::api::core::v1::Secret::default();
    s.metadata.name = Some("creds".into());
    sim.desired_mut().secrets.insert(ObjectKey::new("default", "creds"), s);
    sim.run_until(6);
    assert_eq!(sim.phase(), "Running");
}

/// A ConfigMap volume is mounted before the sandbox exists: the kubelet reports FailedMount
/// and the pod stays ContainerCreating until the source appears.
#[test]
fn missing_config_map_volume_holds_the_sandbox_with_failed_mount() {
    let mut sim = Sim::new(&[pod(r#"
metadata: {name: web}
spec:
  volumes:
  - {name: config, configMap: {name: cfg, items: [{key: app.conf, path: app.conf}]}}
  - {name: maybe, secret: {secretName: nope, optional: true}}
  containers:
  - {name: app, image: "nginx:1.27"}
"#)]);
    sim.run_until(10);
    assert_eq!(sim.take(), ["0 Event Warning FailedMount: MountVolume.SetUp failed for volume \"config\" : configmap \"cfg\" not found"]);
    assert_eq!(waiting(&sim.ctr("app")).0, "ContainerCreating");
    assert_eq!(sim.summary(), "ContainerCreating");
    assert_eq!(cond_brief(&sim.cond("PodReadyToStartContainers")).0, "False");
    sim.desired_mut()
        .config_maps
        .insert(ObjectKey::new("default", "cfg"), config_map("cfg", &["other"]));
    sim.run_until(11);
    assert_eq!(
        sim.take(),
        ["10 Event Warning FailedMount: MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: app.conf"]
    );
    sim.desired_mut()
        .config_maps
        .insert(ObjectKey::new("default", "cfg"), config_map("cfg", &["app.conf"]));
    sim.run_until(12);
    assert_eq!(
        sim.actions(),
        ["11 CreateSandbox", "11 PullImage app#0 nginx:1.27", "11 StartContainer app#0"]
    );
}

#[test]
fn create_container_error_retries_after_ten_seconds_without_restart_count() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.script("app").start = Box::new(|_| None);
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let c2 = calls.clone();
    sim.script("app").start = Box::new(move |_| {
        c2.set(c2.get() + 1);
        (c2.get() == 1).then(|| {
            (
                StartFailure::Create,
                "failed to create containerd container: name already in use".into(),
            )
        })
    });
    sim.run_until(5);
    assert_eq!(
        waiting(&sim.ctr("app")),
        (
            "CreateContainerError".into(),
            "failed to create containerd container: name already in use".into()
        )
    );
    sim.run_until(20);
    let starts: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("StartContainer")).collect();
    assert_eq!(starts, ["0 StartContainer app#0", "10 StartContainer app#0"]);
    assert_eq!(sim.ctr("app").restart_count, 0);
    assert_eq!(calls.get(), 2);
}

/// RunContainerError leaves a dead instance (exit 128, StartError): restart count, restart
/// policy and crash-loop back-off apply.
#[test]
fn run_container_error_counts_as_an_exit() {
    let mut sim = Sim::new(&[pod(WEB)]);
    let msg = "failed to create shim task: exec: \"/app\": no such file or directory";
    sim.script("app").start = Box::new(move |_| Some((StartFailure::Run, msg.into())));
    sim.run_until(5);
    let app = sim.ctr("app");
    assert_eq!(
        waiting(&app),
        (
            "CrashLoopBackOff".into(),
            "back-off 10s restarting failed container=app pod=web_default(uid-web)".into()
        )
    );
    assert_eq!(app.restart_count, 1);
    assert_eq!(term(&app.last_state), Some((128, "StartError".into(), -1, 0)));
    let starts: Vec<String> =
        sim.actions().into_iter().filter(|l| l.contains("StartContainer")).collect();
    assert_eq!(starts, ["0 StartContainer app#0", "0 StartContainer app#1"]);
    let mut never = Sim::new(&[pod(&WEB.replace("spec:", "spec:\n  restartPolicy: Never"))]);
    never.script("app").start = Box::new(move |_| Some((StartFailure::Run, msg.into())));
    never.run_until(50);
    assert_eq!(never.phase(), "Failed");
    assert_eq!(never.summary(), "StartError");
}

#[test]
fn sandbox_failure_is_retried_after_ten_seconds() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.sandbox_failures = 2;
    sim.run_until(30);
    assert_eq!(
        sim.take().into_iter().take(4).collect::<Vec<_>>(),
        ["0 CreateSandbox", "0 Event Warning FailedCreatePodSandBox: Failed to create pod sandbox: failed to setup network for sandbox: no IP addresses available",
         "10 CreateSandbox", "10 Event Warning FailedCreatePodSandBox: Failed to create pod sandbox: failed to setup network for sandbox: no IP addresses available"]
    );
    assert_eq!(sim.phase(), "Running");
    assert_eq!(
        cond_brief(&sim.cond("PodReadyToStartContainers")),
        ("True".into(), "".into(), "".into(), 20)
    );
}

/// Facts about other attempts, other UIDs or old probe runs change nothing.
#[test]
fn stale_facts_are_ignored() {
    let mut sim = Sim::new(&[pod(WEB)]);
    sim.run_until(5);
    let before = sim.status();
    // The pod's one sandbox so far is the engine's first serial number.
    let c = |attempt| ContainerRef {
        pod_uid: "uid-web".into(),
        name: "app".into(),
        attempt,
        sandbox: 1,
    };
    let at = t(5);
    for fact in [
        // The running instance's name and attempt, but an earlier sandbox's tag.
        Observed::ContainerExited {
            c: ContainerRef { sandbox: 0, ..c(0) },
            exit_code: 1,
            signal: None,
            oom_killed: false,
            lost: false,
            at,
            message: None,
        },
        Observed::ContainerExited {
            c: c(7),
            exit_code: 1,
            signal: None,
            oom_killed: false,
            lost: false,
            at,
            message: None,
        },
        Observed::ContainerExited {
            c: ContainerRef { pod_uid: "uid-old".into(), ..c(0) },
            exit_code: 1,
            signal: None,
            oom_killed: false,
            lost: false,
            at,
            message: None,
        },
        Observed::ContainerStarted { c: c(0), at },
        Observed::ImagePulled { c: c(0), pull: None },
        Observed::ProbeResult {
            c: c(0),
            kind: ProbeKind::Liveness,
            seq: 3,
            result: Err("x".into()),
        },
        Observed::SandboxReady { pod_uid: "uid-web".into() },
    ] {
        sim.engine.observe(fact, at);
    }
    assert_eq!(sim.status(), before);
    assert!(sim.engine.reconcile(&sim.desired.clone(), at).is_empty());
}

/// Level-triggered but idempotent: reconciling again with nothing new emits nothing, so a
/// start in flight is never requested twice.
#[test]
fn reconcile_twice_emits_nothing_new() {
    let mut sim = Sim::new(&[pod(WEB)]);
    let d = sim.desired.clone();
    let first: Vec<String> = sim.engine.reconcile(&d, t(0)).iter().map(|a| a.to_string()).collect();
    assert_eq!(first, ["CreateSandbox"]);
    assert!(sim.engine.reconcile(&d, t(0)).is_empty());
    assert!(sim.engine.reconcile(&d, t(100)).is_empty());
}

const NON_ROOT_INIT: &str = r#"
metadata: {name: web}
spec:
  securityContext: {runAsNonRoot: true}
  initContainers:
  - {name: setup, image: "busybox:1.36"}
  containers:
  - {name: app, image: "busybox:1.36"}
"#;

/// A config the kubelet refuses before the runtime (runAsNonRoot on a root image):
/// CreateContainerConfigError, retried every pod-worker sync without a restart, an init
/// container holding the app containers back.
#[test]
fn create_container_config_error_waits_and_retries_for_init_containers() {
    let msg = "container has runAsNonRoot and image will run as root (pod: \"web_default(uid)\", container: setup)";
    let mut sim = Sim::new(&[pod(NON_ROOT_INIT)]);
    sim.script("setup").start = Box::new(move |_| Some((StartFailure::Config, msg.into())));
    sim.run_until(25);
    assert_eq!(waiting(&sim.ctr("setup")), ("CreateContainerConfigError".into(), msg.into()));
    assert_eq!(
        (sim.phase().as_str(), sim.summary().as_str()),
        ("Pending", "Init:CreateContainerConfigError")
    );
    let log = sim.take();
    let starts: Vec<&String> = log.iter().filter(|l| l.contains("StartContainer")).collect();
    assert_eq!(
        starts,
        ["0 StartContainer setup#0", "10 StartContainer setup#0", "20 StartContainer setup#0"]
    );
    assert_eq!(sim.ctr("setup").restart_count, 0);
    assert!(log.contains(&format!("0 Event setup Warning Failed: Error: {msg}")), "{log:?}");
}
