//! Pod and container usage for users: the kubelet's resource metrics in Prometheus form
//! (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`, `pod_…`) and the
//! `metrics.k8s.io/v1beta1` API that `kubectl top pod` reads, which metrics-server serves in a
//! cluster.
//!
//! Usage comes straight from the cgroups ([`crate::runtime::usage`]) at request time. A CPU
//! rate needs two readings: the [`UsageTracker`] keeps the last two per container (the agent's
//! housekeeping records one every interval, so a rate is at hand for the first `kubectl top`),
//! and a container's first reading is measured from its start, when its counter was 0.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::format::go_duration;
use crate::quantity::{Format, Quantity};
use crate::runtime::usage::{self, Layout, Usage, UsageError};
use crate::runtime::InstanceId;

pub const GROUP: &str = "metrics.k8s.io";
pub const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The shortest window a CPU rate is computed over: closer readings are mostly noise.
const MIN_WINDOW_NS: i128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    at_ns: i128,
    cpu_ns: u64,
}

/// The last two CPU readings of each running container instance, keyed by its cgroup.
#[derive(Debug, Default)]
pub struct UsageTracker {
    samples: Mutex<HashMap<PathBuf, Vec<Sample>>>,
}

/// A container's CPU rate over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub nano_cores: u64,
    pub window_ns: u64,
}

impl UsageTracker {
    /// Records a reading of `cgroup` and returns the rate since the newest reading at least a
    /// second older, else since `started_ns` (the counter starts at 0); `None` when neither
    /// is a second old.
    pub fn observe(
        &self,
        cgroup: &Path,
        at_ns: i128,
        cpu_ns: u64,
        started_ns: Option<i128>,
    ) -> Option<Rate> {
        let mut map = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(cgroup.to_path_buf()).or_default();
        // A clock stepped back or a counter reset (a new cgroup at the same path) voids them.
        list.retain(|s| s.at_ns <= at_ns && s.cpu_ns <= cpu_ns);
        let since =
            list.iter().rev().find(|s| at_ns - s.at_ns >= MIN_WINDOW_NS).copied().or_else(|| {
                let start = started_ns.filter(|st| at_ns - st >= MIN_WINDOW_NS)?;
                Some(Sample { at_ns: start, cpu_ns: 0 })
            });
        if list.last().is_none_or(|l| at_ns - l.at_ns >= MIN_WINDOW_NS) {
            list.push(Sample { at_ns, cpu_ns });
            if list.len() > 2 {
                list.remove(0);
            }
        }
        let since = since?;
        let window = (at_ns - since.at_ns) as u128;
        let used = u128::from(cpu_ns - since.cpu_ns);
        Some(Rate {
            nano_cores: (used * 1_000_000_000 / window) as u64,
            window_ns: window.min(u64::MAX as u128) as u64,
        })
    }

    /// Forgets containers that no longer run.
    pub fn retain(&self, live: &HashSet<PathBuf>) {
        let mut map = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| live.contains(k));
    }
}

/// A running container instance of a pod and where its cgroup is.
struct Running<'a> {
    status: &'a ContainerStatus,
    cgroup: PathBuf,
    started_ns: Option<i128>,
}

/// The running containers (sidecars included), in status order.
fn running(pod: &Pod) -> Vec<Running<'_>> {
    let Some(pod_cgroup) = usage::pod_cgroup(pod) else { return Vec::new() };
    let status = pod.status.as_ref();
    let all = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten());
    all.filter_map(|cs| {
        let run = cs.state.as_ref()?.running.as_ref()?;
        let attempt = u32::try_from(cs.restart_count).ok()?;
        Some(Running {
            status: cs,
            cgroup: pod_cgroup.join(InstanceId::new(cs.name.clone(), attempt).key()),
            started_ns: run.started_at.as_ref().map(|t| t.0.as_nanosecond()),
        })
    })
    .collect()
}

fn read(layout: &Layout, cgroup: &Path, pod: &Pod, container: &str) -> Option<Usage> {
    match layout.read(cgroup) {
        Ok(u) => Some(u),
        // Exited between the snapshot and now: no metrics, like metrics-server.
        Err(UsageError::NotFound { .. }) => None,
        Err(e) => {
            log::warn!("pod {}: container {container}: usage: {e}", name(pod));
            None
        }
    }
}

fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A `PodMetrics` object, or `None` when no container has metrics yet (metrics-server leaves
/// such pods out; `kubectl top` then says "metrics not available yet").
pub fn pod_metrics(
    pod: &Pod,
    root: &Path,
    tracker: &UsageTracker,
    now: Timestamp,
    live: &mut HashSet<PathBuf>,
) -> Option<Value> {
    let at_ns = now.as_nanosecond();
    let layout = Layout::detect(root);
    let mut containers = Vec::new();
    let mut window_ns = 0;
    for r in running(pod) {
        live.insert(r.cgroup.clone());
        let Some(u) = read(&layout, &r.cgroup, pod, &r.status.name) else { continue };
        let Some(rate) = tracker.observe(&r.cgroup, at_ns, u.cpu_usage_ns, r.started_ns) else {
            continue;
        };
        window_ns = window_ns.max(rate.window_ns);
        containers.push(json!({
            "name": r.status.name,
            "usage": {
                "cpu": cpu_quantity(rate.nano_cores),
                "memory": memory_quantity(u.memory_working_set_bytes),
            },
        }));
    }
    if containers.is_empty() {
        return None;
    }
    let meta = &pod.metadata;
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "creationTimestamp": now.to_string(),
            "labels": meta.labels.clone().unwrap_or_default(),
        },
        "timestamp": now.to_string(),
        "window": go_duration(std::time::Duration::from_nanos(window_ns)),
        "containers": containers,
    }))
}

/// A `PodMetricsList` of `pods`.
pub fn pod_metrics_list<'a>(
    pods: impl Iterator<Item = &'a Pod>,
    root: &Path,
    tracker: &UsageTracker,
    now: Timestamp,
) -> Value {
    let mut live = HashSet::new();
    let items: Vec<Value> =
        pods.filter_map(|p| pod_metrics(p, root, tracker, now, &mut live)).collect();
    json!({
        "kind": "PodMetricsList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": items,
    })
}

/// The kubelet's resource metrics (`/metrics/resource`) for every running pod and container.
pub fn prometheus(pods: &[Pod], root: &Path) -> String {
    let layout = Layout::detect(root);
    let mut pod_rows = Vec::new();
    let mut container_rows = Vec::new();
    for pod in pods {
        let (ns, name) = (
            escape(pod.metadata.namespace.as_deref().unwrap_or_default()),
            escape(pod.metadata.name.as_deref().unwrap_or_default()),
        );
        let containers = running(pod);
        for r in &containers {
            if let Some(u) = read(&layout, &r.cgroup, pod, &r.status.name) {
                let labels = format!(
                    "container=\"{}\",namespace=\"{ns}\",pod=\"{name}\"",
                    escape(&r.status.name)
                );
                container_rows.push((labels, u));
            }
        }
        if containers.is_empty() {
            continue;
        }
        let Some(cgroup) = usage::pod_cgroup(pod) else { continue };
        if let Ok(u) = layout.read(&cgroup) {
            pod_rows.push((format!("namespace=\"{ns}\",pod=\"{name}\""), u));
        }
    }
    let mut o = String::new();
    for (metric, help, rows, memory) in [
        (
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the container in core-seconds",
            &container_rows,
            false,
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            &container_rows,
            true,
        ),
        (
            "pod_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the pod in core-seconds",
            &pod_rows,
            false,
        ),
        (
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            &pod_rows,
            true,
        ),
    ] {
        let kind = if memory { "gauge" } else { "counter" };
        let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for (labels, u) in rows {
            if memory {
                let _ = writeln!(o, "{metric}{{{labels}}} {}", u.memory_working_set_bytes);
            } else {
                let _ = writeln!(o, "{metric}{{{labels}}} {}", u.cpu_usage_ns as f64 / 1e9);
            }
        }
    }
    o
}

/// Label values: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Nanocores as metrics-server prints them (`NewScaledQuantity(n, -9)`): `1234567n`, `1500u`,
/// `3m`, `2`.
pub fn cpu_quantity(nano: u64) -> String {
    Quantity::from_nanos(nano.into()).canonical(Format::DecimalSI).to_string()
}

/// Bytes as metrics-server prints them (`NewQuantity(n, BinarySI)`): `20Mi`, `12345Ki`, `1536`.
pub fn memory_quantity(bytes: u64) -> String {
    Quantity::from_nanos(i128::from(bytes) * 1_000_000_000).canonical(Format::BinarySI).to_string()
}

/// `GET /apis/metrics.k8s.io`.
pub fn api_group() -> Value {
    let v = json!({"groupVersion": GROUP_VERSION, "version": "v1beta1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [v], "preferredVersion": v})
}

/// `GET /apis/metrics.k8s.io/v1beta1`.
pub fn api_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(3_000_000), "3m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(20 << 20), "20Mi");
        assert_eq!(memory_quantity(12_345 * 1024), "12345Ki");
        assert_eq!(memory_quantity(3 << 30), "3Gi");
        // Below 1Ki Go prints binary amounts in decimal.
        assert_eq!(memory_quantity(1000), "1k");
        assert_eq!(memory_quantity(1536), "1536");
    }

    #[test]
    fn the_rate_is_over_the_last_reading_a_second_old_else_since_start() {
        let t = UsageTracker::default();
        let cg = Path::new("/outpost/u/app.0");
        // First reading 4 s after the start: the average since then, 0.5 cores.
        assert_eq!(
            t.observe(cg, 104 * S, 2_000_000_000, Some(100 * S)),
            Some(Rate { nano_cores: 500_000_000, window_ns: 4_000_000_000 })
        );
        // 10 s later, 0.1 s of CPU used: 10 millicores over 10 s.
        assert_eq!(
            t.observe(cg, 114 * S, 2_100_000_000, Some(100 * S)),
            Some(Rate { nano_cores: 10_000_000, window_ns: 10_000_000_000 })
        );
        // Half a second later the reading at 114 s is too young: the rate is over the one at
        // 104 s, and this reading is not kept.
        assert_eq!(
            t.observe(cg, 114 * S + S / 2, 2_150_000_000, None),
            Some(Rate { nano_cores: 14_285_714, window_ns: 10_500_000_000 })
        );
        // No start time and no reading a second old: no rate yet.
        assert_eq!(t.observe(Path::new("/other"), 5 * S, 1, None), None);
        // A counter that went down (a new cgroup at the same path) starts over.
        assert_eq!(
            t.observe(cg, 120 * S, 1_000, Some(119 * S)),
            Some(Rate { nano_cores: 1_000, window_ns: 1_000_000_000 })
        );
        t.retain(&HashSet::from([cg.to_path_buf()]));
        assert_eq!(t.observe(Path::new("/other"), 9 * S, 1, None), None, "forgotten");
    }

    /// A Burstable pod `web` (uid u1) whose `app` runs as instance 2 since 100 s after the
    /// epoch, and a fake v1 tree with its pod and container cgroups.
    fn fixture() -> (tempfile::TempDir, Pod) {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rel: &str, file: &str, text: &str| {
            let dir = tmp.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        };
        for (cg, cpu, mem, inactive) in [
            ("outpost/burstable/u1", "9000000000", "31457280", "1048576"),
            ("outpost/burstable/u1/app.2", "3000000000", "25165824", "4194304"),
        ] {
            write(&format!("cpuacct/{cg}"), "cpuacct.usage", cpu);
            write(&format!("memory/{cg}"), "memory.usage_in_bytes", mem);
            write(
                &format!("memory/{cg}"),
                "memory.stat",
                &format!("total_inactive_file {inactive}\n"),
            );
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "busybox", "resources": {"requests": {"memory": "16Mi"}}},
                {"name": "done", "image": "busybox"},
            ]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "image": "busybox", "imageID": "", "ready": true, "restartCount": 2,
                 "state": {"running": {"startedAt": "1970-01-01T00:01:40Z"}}},
                {"name": "done", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0}}},
            ]},
        }))
        .unwrap();
        (tmp, pod)
    }

    #[test]
    fn prometheus_shows_pods_and_running_containers() {
        let (tmp, pod) = fixture();
        let text = prometheus(&[pod], tmp.path());
        let expected = "\
# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 3
# HELP container_memory_working_set_bytes Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 20971520
# HELP pod_cpu_usage_seconds_total Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 9
# HELP pod_memory_working_set_bytes Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 30408704
";
        assert_eq!(text, expected);
    }

    #[test]
    fn pod_metrics_json_is_metrics_servers() {
        use crate::api::routes::{handle, Context, Request};
        use crate::api::{ApiConfig, Metrics, Snapshot};
        let (tmp, pod) = fixture();
        let snapshot = Snapshot { pods: vec![pod], ..Default::default() };
        let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/".into());
        config.cgroup_root = tmp.path().into();
        let metrics = Metrics::default();
        let ctx = Context { snapshot: &snapshot, config: &config, metrics: &metrics };
        let get = |path: &str, at: i64| {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let mut req = Request::get(path, query);
            req.now = Timestamp::new(at, 0).unwrap();
            handle(&req, &ctx)
        };
        // 3 s of CPU in the 20 s since the start: 150 millicores.
        let one = get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web", 120);
        assert_eq!(one.status, 200);
        assert_eq!(
            one.json(),
            &json!({
                "kind": "PodMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {
                    "name": "web", "namespace": "default",
                    "creationTimestamp": "1970-01-01T00:02:00Z", "labels": {"app": "web"},
                },
                "timestamp": "1970-01-01T00:02:00Z",
                "window": "20s",
                "containers": [{"name": "app", "usage": {"cpu": "150m", "memory": "20Mi"}}],
            })
        );
        // 5 s later, 0.5 s more CPU: 100 millicores over the 5 s window.
        std::fs::write(
            tmp.path().join("cpuacct/outpost/burstable/u1/app.2/cpuacct.usage"),
            "3500000000",
        )
        .unwrap();
        let list = get("/apis/metrics.k8s.io/v1beta1/pods", 125);
        assert_eq!(list.json()["kind"], "PodMetricsList");
        assert_eq!(list.json()["items"][0]["window"], "5s");
        assert_eq!(list.json()["items"][0]["containers"][0]["usage"]["cpu"], "100m");
        let by_ns = get(
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb",
            126,
        );
        assert_eq!(by_ns.json()["items"].as_array().map(Vec::len), Some(1));
        let other = get("/apis/metrics.k8s.io/v1beta1/namespaces/edge/pods", 126);
        assert_eq!(other.json()["items"], json!([]));
        let missing = get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope", 126);
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.json()["message"],
            "podmetrics.metrics.k8s.io \"default/nope\" not found"
        );
        // Discovery: kubectl top looks for the group, then its resources.
        let groups = get("/apis", 126);
        assert_eq!(groups.json()["groups"][0]["preferredVersion"]["groupVersion"], GROUP_VERSION);
        let resources = get("/apis/metrics.k8s.io/v1beta1", 126);
        assert_eq!(resources.json()["resources"][0]["kind"], "PodMetrics");
        // /metrics carries the resource metrics after the agent's own.
        let crate::api::Body::Text(text) = get("/metrics", 126).body else { panic!("text") };
        assert!(
            text.contains(
                "\npod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 30408704\n"
            ),
            "{text}"
        );
        assert!(text.contains("\noutpost_pods{phase=\"Running\"} 1\n"), "{text}");
    }
}
