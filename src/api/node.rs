//! The device as a core/v1 `Node`, as the kubelet registers and updates it: `GET
//! /api/v1/nodes[/NAME]` (with the API server's Table for `kubectl get nodes`), and
//! `metrics.k8s.io/v1beta1` NodeMetrics for `kubectl top node`.
//!
//! The agent publishes the object ([`build`]: facts found at start, conditions kept by the
//! agent); its images and usage are read at request time (the image store's index,
//! `/proc/stat` and `/proc/meminfo`).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    ContainerImage, Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::resource_metrics::{cpu_quantity, memory_quantity, GROUP_VERSION};
use super::routes::{list, not_found, selectors, to_json, Reply};
use super::selector::Fields;
use super::table::{self, Include};
use super::{Context, Request, UsageTracker};

/// What the agent finds out about the node once, at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub uid: String,
    pub created: Timestamp,
    pub labels: BTreeMap<String, String>,
    /// `(type, address)`: InternalIP and Hostname.
    pub addresses: Vec<(String, String)>,
    /// Resource name → canonical quantity.
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub info: NodeSystemInfo,
}

/// The Node object from its facts and current conditions.
pub fn build(facts: &NodeFacts, conditions: Vec<NodeCondition>) -> Node {
    let quantities = |m: &BTreeMap<String, String>| {
        m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect()
    };
    Node {
        metadata: ObjectMeta {
            name: Some(facts.name.clone()),
            uid: Some(facts.uid.clone()),
            creation_timestamp: Some(Time(facts.created)),
            labels: Some(facts.labels.clone()),
            annotations: Some(
                [(
                    "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(Default::default()),
        status: Some(NodeStatus {
            addresses: Some(
                facts
                    .addresses
                    .iter()
                    .map(|(t, a)| NodeAddress { type_: t.clone(), address: a.clone() })
                    .collect(),
            ),
            capacity: Some(quantities(&facts.capacity)),
            allocatable: Some(quantities(&facts.allocatable)),
            conditions: Some(conditions),
            node_info: Some(facts.info.clone()),
            daemon_endpoints: Some(Default::default()),
            ..Default::default()
        }),
    }
}

/// The image store's images, largest first as the kubelet lists them: each with its names
/// (`repo:tag` and `repo@digest`) and size.
pub fn images(state_dir: &Path) -> Vec<ContainerImage> {
    let dir = crate::image::store_dir(state_dir);
    // Opening creates the store: a GET must not.
    if !dir.join("refs.json").exists() {
        return Vec::new();
    }
    let list = match crate::image::ImageStore::open(&dir).and_then(|s| s.list()) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("api: node images: {e}");
            return Vec::new();
        }
    };
    let mut images: Vec<ContainerImage> = list
        .into_iter()
        .map(|i| {
            let mut names: Vec<String> = i
                .references
                .iter()
                .filter_map(|r| Some(format!("{}@{}", r.rsplit_once(':')?.0, i.digest)))
                .collect();
            names.dedup();
            names.extend(i.references);
            ContainerImage { names: Some(names), size_bytes: i64::try_from(i.size).ok() }
        })
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    images
}

/// `GET /api/v1/nodes` and `/api/v1/nodes/NAME`.
pub fn get(req: &Request, ctx: &Context, name: Option<&str>, table: bool) -> Result<Reply, Reply> {
    let s = ctx.snapshot;
    let include = Include::parse(req.query.get("includeObject"));
    // Reading the image store is the costly part: only for objects that are shown whole.
    let whole = !table || include == Include::Object;
    let with_images = |n: &Node| {
        let mut n = n.clone();
        if let Some(status) = n.status.as_mut().filter(|_| whole) {
            status.images = Some(images(&ctx.config.state_dir));
        }
        // The version a watch resumes from (`kubectl get nodes -w`).
        n.metadata.resource_version = Some(s.versions.node.to_string());
        n
    };
    if let Some(name) = name {
        let n = s
            .node
            .as_deref()
            .filter(|n| n.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| not_found("nodes", name))?;
        let json = to_json(&with_images(n));
        return Ok(Reply::ok(match table {
            true => node_table(&[(n, json)], s.version, include, req.now),
            false => json,
        }));
    }
    let (labels, fields) = selectors(req, Fields::Object)?;
    let selected: Vec<(&Node, Value)> = s
        .node
        .as_deref()
        .filter(|n| labels.matches(n.metadata.labels.as_ref()))
        .map(|n| (n, to_json(&with_images(n))))
        .filter(|(_, json)| fields.matches(json))
        .into_iter()
        .collect();
    if table {
        return Ok(Reply::ok(node_table(&selected, s.version, include, req.now)));
    }
    Ok(list("NodeList", s.version, selected.into_iter().map(|(_, v)| v).collect()))
}

/// `GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/NAME`: the kubelet's
/// node lease (`kubectl describe node` shows it), renewed at each heartbeat.
pub fn lease(ctx: &Context, name: &str) -> Result<Reply, Reply> {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
    let node = ctx
        .snapshot
        .node
        .as_deref()
        .filter(|n| n.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| not_found("leases.coordination.k8s.io", name))?;
    let heartbeat = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.clone());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NODE_LEASE_NAMESPACE.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.into(),
                uid: node.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: heartbeat.map(|t| MicroTime(t.0)),
            ..Default::default()
        }),
    };
    let mut json = to_json(&lease);
    json["kind"] = json!("Lease");
    json["apiVersion"] = json!("coordination.k8s.io/v1");
    Ok(Reply::ok(json))
}

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The API server's node printer (`printNode`), all columns.
pub fn node_table(
    nodes: &[(&Node, Value)],
    version: u64,
    include: Include,
    now: Timestamp,
) -> Value {
    let column = table::column;
    let columns = vec![
        column("Name", 0, "Name must be unique within a namespace."),
        column("Status", 0, "The status of the node"),
        column("Roles", 0, "The roles of the node"),
        column("Age", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        column("Version", 0, "Kubelet Version reported by the node."),
        column("Internal-IP", 1, "List of addresses reachable to the node."),
        column("External-IP", 1, "List of addresses reachable to the node."),
        column("OS-Image", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        column("Kernel-Version", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        column("Container-Runtime", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ];
    let rows = nodes
        .iter()
        .map(|(n, json)| table::row(node_cells(n, now), json.clone(), include, None))
        .collect();
    table::table(version, columns, rows)
}

pub fn node_cells(n: &Node, now: Timestamp) -> Vec<Value> {
    let status = n.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready");
    let mut state = match ready {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        state.push_str(",SchedulingDisabled");
    }
    // `findNodeRoles`: node-role.kubernetes.io/ROLE keys and the kubernetes.io/role value.
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in n.metadata.labels.iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            roles.push(role.to_string());
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.push(v.clone());
        }
    }
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
    let address = |t: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == t)
            .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
    };
    let info = status.node_info.clone().unwrap_or_default();
    let or_unknown = |s: String| if s.is_empty() { "<unknown>".to_string() } else { s };
    vec![
        json!(n.metadata.name.clone().unwrap_or_default()),
        json!(state),
        json!(roles),
        json!(table::since(n.metadata.creation_timestamp.as_ref().map(|t| t.0), now)),
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_unknown(info.os_image)),
        json!(or_unknown(info.kernel_version)),
        json!(or_unknown(info.container_runtime_version)),
    ]
}

/// Node CPU and memory from procfs: busy time since boot in nanoseconds, the boot time, and
/// the working set (`MemTotal - MemAvailable`, the kubelet's node working set without a
/// root cgroup to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeUsage {
    pub cpu_ns: u64,
    pub boot_ns: i128,
    pub memory_working_set: u64,
}

/// Reads [`NodeUsage`] under `proc` (normally `/proc`).
pub fn read_usage(proc: &Path) -> Option<NodeUsage> {
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    let meminfo = std::fs::read_to_string(proc.join("meminfo")).ok()?;
    // user nice system idle iowait irq softirq steal (guest time is in user already).
    let ticks: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy = ticks.iter().sum::<u64>() - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let hz = u64::try_from(hz).unwrap_or(100).max(1);
    let boot: i128 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let kb = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let (total, available) = (kb("MemTotal:")?, kb("MemAvailable:")?);
    Some(NodeUsage {
        cpu_ns: busy.saturating_mul(1_000_000_000 / hz),
        boot_ns: boot * 1_000_000_000,
        memory_working_set: total.saturating_sub(available) * 1024,
    })
}

/// A `NodeMetrics` object: the CPU rate over the last window (since boot at first).
pub fn node_metrics(
    node: &Node,
    usage: NodeUsage,
    tracker: &UsageTracker,
    now: Timestamp,
) -> Option<Value> {
    let rate =
        tracker.observe(Path::new("/"), now.as_nanosecond(), usage.cpu_ns, Some(usage.boot_ns))?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": {
            "name": node.metadata.name,
            "creationTimestamp": now.to_string(),
            "labels": node.metadata.labels.clone().unwrap_or_default(),
        },
        "timestamp": now.to_string(),
        "window": crate::format::go_duration(std::time::Duration::from_nanos(rate.window_ns)),
        "usage": {
            "cpu": cpu_quantity(rate.nano_cores),
            "memory": memory_quantity(usage.memory_working_set),
        },
    }))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes[/NAME]`.
pub fn metrics(req: &Request, ctx: &Context, name: Option<&str>) -> Result<Reply, Reply> {
    let node = ctx.snapshot.node.as_deref();
    let metrics = |n: &Node| {
        let usage = read_usage(Path::new("/proc"))?;
        node_metrics(n, usage, &ctx.metrics.node_usage, req.now)
    };
    if let Some(name) = name {
        return node
            .filter(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(metrics)
            .map(Reply::ok)
            .ok_or_else(|| not_found("nodemetrics.metrics.k8s.io", name));
    }
    let (labels, _) = selectors(req, Fields::Object)?;
    let items: Vec<Value> = node
        .filter(|n| labels.matches(n.metadata.labels.as_ref()))
        .and_then(metrics)
        .into_iter()
        .collect();
    Ok(Reply::ok(json!({
        "kind": "NodeMetricsList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": items,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::handle;
    use crate::api::{ApiConfig, Metrics, Snapshot};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn facts() -> NodeFacts {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        NodeFacts {
            name: "edge-1".into(),
            uid: "u-1".into(),
            created: ts(1000),
            labels: map(&[
                ("kubernetes.io/hostname", "edge-1"),
                ("site", "plant-3"),
                ("node-role.kubernetes.io/edge", ""),
            ]),
            addresses: vec![
                ("InternalIP".into(), "192.168.1.20".into()),
                ("Hostname".into(), "edge-1".into()),
            ],
            capacity: map(&[("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]),
            allocatable: map(&[("cpu", "3500m"), ("memory", "7680Mi"), ("pods", "110")]),
            info: NodeSystemInfo {
                kubelet_version: "v1.37.0-outpost.1".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel_version: "6.1.0".into(),
                container_runtime_version: "outpost://1".into(),
                ..Default::default()
            },
        }
    }

    fn ready(status: &str) -> NodeCondition {
        NodeCondition { type_: "Ready".into(), status: status.into(), ..Default::default() }
    }

    #[test]
    fn cells_are_the_node_printers() {
        let n = build(&facts(), vec![ready("True")]);
        assert_eq!(
            node_cells(&n, ts(1000 + 3 * 86400)),
            [
                json!("edge-1"),
                json!("Ready"),
                json!("edge"),
                json!("3d"),
                json!("v1.37.0-outpost.1"),
                json!("192.168.1.20"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("outpost://1"),
            ]
        );
        let mut n = build(&facts(), vec![ready("False")]);
        n.metadata.labels = None;
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let cells = node_cells(&n, ts(1000));
        assert_eq!(cells[1..3], [json!("NotReady,SchedulingDisabled"), json!("<none>")]);
    }

    #[test]
    fn nodes_are_served_listed_selected_and_printed() {
        let tmp = tempfile::tempdir().unwrap();
        let node = build(&facts(), vec![ready("True")]);
        let snapshot =
            Snapshot { node: Some(std::sync::Arc::new(node)), version: 4, ..Default::default() };
        let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().into());
        let metrics = Metrics::default();
        let ctx = Context { snapshot: &snapshot, config: &config, metrics: &metrics };
        let get = |path: &str, query: &str, accept: &'static str| {
            let mut req = Request::get(path, query);
            req.accept = accept;
            handle(&req, &ctx)
        };
        let one = get("/api/v1/nodes/edge-1", "", "");
        assert_eq!(one.status, 200);
        let v = one.json();
        assert_eq!(v["metadata"]["uid"], "u-1");
        assert_eq!(v["metadata"]["creationTimestamp"], "1970-01-01T00:16:40Z");
        assert_eq!(v["status"]["allocatable"]["cpu"], "3500m");
        assert_eq!(v["status"]["nodeInfo"]["osImage"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(v["status"]["images"], json!([]), "no image store yet");
        assert!(!tmp.path().join("images").exists(), "a GET creates no store");
        let one = get("/api/v1/nodes/edge-1", "", "application/json;as=Table;v=v1;g=meta.k8s.io");
        assert_eq!(one.json()["rows"][0]["cells"][1], "Ready");
        let lease =
            get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1", "", "");
        assert_eq!(lease.json()["kind"], "Lease");
        assert_eq!(lease.json()["spec"]["holderIdentity"], "edge-1");
        assert_eq!(lease.json()["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let missing = get("/api/v1/nodes/edge-2", "", "");
        assert_eq!(
            (missing.status, missing.json()["message"].as_str()),
            (404, Some("nodes \"edge-2\" not found"))
        );
        let list = get("/api/v1/nodes", "labelSelector=site%3Dplant-3", "");
        assert_eq!(list.json()["kind"], "NodeList");
        assert_eq!(list.json()["items"][0]["metadata"]["name"], "edge-1");
        let none = get("/api/v1/nodes", "labelSelector=site%3Dplant-1", "");
        assert_eq!(none.json()["items"], json!([]));
        let by_name = get("/api/v1/nodes", "fieldSelector=metadata.name%3Dedge-1", "");
        assert_eq!(by_name.json()["items"].as_array().map(Vec::len), Some(1));
        let t = get("/api/v1/nodes", "", "application/json;as=Table;v=v1;g=meta.k8s.io");
        assert_eq!(t.json()["kind"], "Table");
        let names: Vec<&str> = t.json()["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(t.json()["rows"][0]["object"]["metadata"]["labels"]["site"], "plant-3");
        // Discovery: kubectl resolves `nodes` (cluster-scoped) and `top node`'s NodeMetrics.
        let core = get("/api/v1", "", "");
        let nodes = core.json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "nodes")
            .cloned();
        assert_eq!(
            nodes.map(|r| (r["namespaced"].clone(), r["kind"].clone())),
            Some((json!(false), json!("Node")))
        );
        let m = get("/apis/metrics.k8s.io/v1beta1", "", "");
        assert!(m.json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "NodeMetrics"));
        // Without a Node published, none.
        let empty = Snapshot::default();
        let ctx = Context { snapshot: &empty, config: &config, metrics: &metrics };
        assert_eq!(handle(&Request::get("/api/v1/nodes", ""), &ctx).json()["items"], json!([]));
    }

    #[test]
    fn node_metrics_are_the_busy_cpu_rate_and_memory_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
        let write = |busy_ticks: u64| {
            // user nice system idle iowait irq softirq steal guest guest_nice
            let stat = format!(
                "cpu  {} 0 {} 900000 5000 0 0 0 77 0\ncpu0 1 2 3 4\nbtime 1000\n",
                busy_ticks / 2,
                busy_ticks - busy_ticks / 2
            );
            std::fs::write(tmp.path().join("stat"), stat).unwrap();
            std::fs::write(
                tmp.path().join("meminfo"),
                "MemTotal:  8000000 kB\nMemFree: 1 kB\nMemAvailable:  6000000 kB\n",
            )
            .unwrap();
        };
        write(100 * hz);
        let u = read_usage(tmp.path()).unwrap();
        assert_eq!(
            u,
            NodeUsage {
                cpu_ns: 100_000_000_000,
                boot_ns: 1_000_000_000_000,
                memory_working_set: 2_000_000 * 1024
            }
        );
        let node = build(&facts(), vec![]);
        let tracker = UsageTracker::default();
        // 100 s of CPU in the 200 s since boot: half a core.
        let m = node_metrics(&node, u, &tracker, ts(1200)).unwrap();
        assert_eq!(m["kind"], "NodeMetrics");
        assert_eq!(m["metadata"]["name"], "edge-1");
        assert_eq!(m["window"], "3m20s");
        assert_eq!(m["usage"], json!({"cpu": "500m", "memory": "2000000Ki"}));
        // 10 s later, 1 s more: 100m over the 10 s window.
        write(101 * hz);
        let m = node_metrics(&node, read_usage(tmp.path()).unwrap(), &tracker, ts(1210)).unwrap();
        assert_eq!((m["usage"]["cpu"].as_str(), m["window"].as_str()), (Some("100m"), Some("10s")));
    }
}
