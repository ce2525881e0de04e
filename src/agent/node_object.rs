//! The device as the kubelet registers it: labels, addresses, capacity, system info
//! (`initialNode` and the node status setters), kept up to date with its conditions
//! (`node_conditions.rs`) and handed to the API before each publish.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::NodeSystemInfo;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::api::{memory_quantity, NodeFacts};
use crate::engine::{DeviceCount, NodeConfig, ResourceList};
use crate::quantity::{Format, Quantity};
use crate::runtime::Runtime;
use crate::store::EventRecord;

use super::node_conditions::{Conditions, NodeEvent};
use super::state::Agent;

/// Go's `runtime.GOARCH` for the architecture outpost was built for.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The kubelet's own labels (hostname, os, arch, and their beta forms), then the operator's
/// `--node-labels`, which win as in the kubelet.
pub fn labels(name: &str, operator: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", goarch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", goarch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in operator {
        if labels.get(k).is_some_and(|own| own != v) {
            log::info!(
                "node: label {k}={v} from --node-labels replaces the default {k}={}",
                labels[k]
            );
        }
        labels.insert(k.clone(), v.clone());
    }
    labels
}

/// Where the facts are read from (tests point these at a temp dir).
pub struct Sources<'a> {
    pub os_release: &'a Path,
    pub machine_id: &'a Path,
    pub boot_id: &'a Path,
    pub product_uuid: &'a Path,
    pub osrelease: &'a Path,
}

impl Sources<'static> {
    pub fn host() -> Self {
        Sources {
            os_release: Path::new("/etc/os-release"),
            machine_id: Path::new("/etc/machine-id"),
            boot_id: Path::new("/proc/sys/kernel/random/boot_id"),
            product_uuid: Path::new("/sys/class/dmi/id/product_uuid"),
            osrelease: Path::new("/proc/sys/kernel/osrelease"),
        }
    }
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `PRETTY_NAME` of an os-release file, unquoted; "Linux" without one, as the kubelet.
fn pretty_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".into())
}

/// A UUID-shaped id stable for this machine and node name (the API server would assign one).
fn node_uid(machine_id: &str, name: &str) -> String {
    let h = Sha256::digest(format!("outpost-node\0{machine_id}\0{name}"));
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

fn quantities(r: &ResourceList, pods: usize) -> BTreeMap<String, String> {
    let clamp = |v: i128| i64::try_from(v.max(0)).unwrap_or(i64::MAX);
    let bytes = |v: i128| memory_quantity(u64::try_from(v.max(0)).unwrap_or(u64::MAX));
    [
        ("cpu", Quantity::from_millis(clamp(r.cpu_milli)).canonical(Format::DecimalSI).to_string()),
        ("memory", bytes(r.memory)),
        ("ephemeral-storage", bytes(r.ephemeral_storage)),
        ("pods", pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The node's facts: `created` is when the state directory was made (the node's first start)
/// where the filesystem records it, else `now`.
pub fn facts(
    name: &str,
    host_ips: &[String],
    config: &NodeConfig,
    state: &Path,
    src: &Sources,
    now: Timestamp,
) -> NodeFacts {
    let machine_id = read_trimmed(src.machine_id);
    let created = std::fs::metadata(state)
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| Timestamp::from_second(i64::try_from(d.as_secs()).ok()?).ok())
        .unwrap_or(now);
    let mut addresses: Vec<(String, String)> =
        host_ips.iter().map(|ip| ("InternalIP".to_string(), ip.clone())).collect();
    addresses.push(("Hostname".into(), name.to_string()));
    NodeFacts {
        name: name.to_string(),
        uid: node_uid(&machine_id, name),
        created,
        labels: config.labels.clone(),
        addresses,
        capacity: quantities(&config.capacity, config.max_pods),
        allocatable: quantities(&config.allocatable(), config.max_pods),
        info: NodeSystemInfo {
            architecture: goarch().into(),
            boot_id: read_trimmed(src.boot_id),
            container_runtime_version: format!("outpost://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: read_trimmed(src.osrelease),
            kubelet_version: crate::api::git_version(),
            machine_id,
            operating_system: "linux".into(),
            os_image: pretty_name(&std::fs::read_to_string(src.os_release).unwrap_or_default()),
            system_uuid: read_trimmed(src.product_uuid).to_lowercase(),
            ..Default::default()
        },
    }
}

/// Publishes the Node before the API listens, so kubectl finds it from the first request
/// (the agent's first publish comes after adoption).
pub(super) fn announce(published: &crate::api::Published, facts: &NodeFacts) {
    let now = crate::format::now();
    let conditions = Conditions::start(&facts.name, now).0.to_conditions(now);
    published.set_node(crate::api::build_node(facts, conditions));
    published.publish(Vec::new(), Default::default(), Default::default());
}

/// The agent's Node: what it found at start and the conditions it keeps.
#[derive(Debug)]
pub(super) struct NodeObject {
    facts: NodeFacts,
    conditions: Conditions,
}

impl<R: Runtime + 'static> Agent<R> {
    /// Starts keeping the Node; its first events (`Starting`, `NodeReady`, ...) are recorded.
    pub(super) fn register_node(&mut self, facts: NodeFacts) {
        let (conditions, events) = Conditions::start(&facts.name, crate::format::now());
        for e in events {
            self.node_event(e);
        }
        self.node = Some(NodeObject { facts, conditions });
        // Into the store and the API's recent events before the first publish.
        self.commit();
    }

    /// The device plugins' extended resources onto the Node: capacity all devices,
    /// allocatable the healthy ones (a resource whose plugin went away stays at 0).
    pub(super) fn set_node_devices(&mut self, counts: &BTreeMap<String, DeviceCount>) {
        let Some(n) = self.node.as_mut() else { return };
        for (name, c) in counts {
            n.facts.capacity.insert(name.clone(), c.capacity.to_string());
            n.facts.allocatable.insert(name.clone(), c.allocatable.to_string());
        }
    }

    /// Before each publish: the engine's pressure conditions onto the Node (their changes are
    /// events), heartbeat now.
    pub(super) fn update_node(&mut self) {
        let Some(n) = self.node.as_mut() else { return };
        let now = crate::format::now();
        let events = n.conditions.update(self.engine.node_conditions(), now);
        self.published.set_node(crate::api::build_node(&n.facts, n.conditions.to_conditions(now)));
        for e in events {
            self.node_event(e);
        }
    }

    fn node_event(&mut self, (type_, reason, message): NodeEvent) {
        let name = self.deps.node.name.clone();
        match type_ {
            "Warning" => log::warn!("node {name}: {reason}: {message}"),
            _ => log::info!("node {name}: {reason}: {message}"),
        }
        let now = crate::format::now().as_second();
        self.pending_events.push(EventRecord {
            pod_uid: String::new(),
            namespace: "default".into(),
            pod_name: name,
            container: None,
            type_: type_.into(),
            reason: reason.into(),
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn own_labels_are_the_kubelets_and_operator_labels_win() {
        let operator: BTreeMap<String, String> =
            [("site", "plant-3"), ("kubernetes.io/hostname", "gw")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let l = labels("edge-1", &operator);
        let arch = goarch();
        assert!(["amd64", "arm64", "arm", "386", "riscv64", "ppc64le", "s390x"].contains(&arch));
        let expected: BTreeMap<String, String> = [
            ("beta.kubernetes.io/arch", arch),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch),
            ("kubernetes.io/hostname", "gw"),
            ("kubernetes.io/os", "linux"),
            ("site", "plant-3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(l, expected);
    }

    #[test]
    fn facts_come_from_the_host_files_and_the_node_config() {
        let tmp = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = tmp.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (os, mid, boot, uuid, rel) = (
            file("os-release", "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            file("machine-id", "0123456789abcdef0123456789abcdef\n"),
            file("boot_id", "b6a4c5d2-0000-4000-8000-000000000001\n"),
            tmp.path().join("no-product-uuid"),
            file("osrelease", "6.1.0-18-arm64\n"),
        );
        let src = Sources {
            os_release: &os,
            machine_id: &mid,
            boot_id: &boot,
            product_uuid: &uuid,
            osrelease: &rel,
        };
        let mut config = NodeConfig::unreserved(ResourceList {
            cpu_milli: 4000,
            memory: 8 << 30,
            ephemeral_storage: 64 << 30,
        });
        config.system_reserved.cpu_milli = 500;
        config.system_reserved.memory = 512 << 20;
        config.labels = labels("edge-1", &BTreeMap::new());
        let ips = ["192.168.1.20".to_string()];
        let f = facts("edge-1", &ips, &config, Path::new("/nonexistent"), &src, ts(1000));
        assert_eq!(f.name, "edge-1");
        assert_eq!(f.created, ts(1000), "no state dir: now");
        assert_eq!(f.uid, node_uid("0123456789abcdef0123456789abcdef", "edge-1"));
        assert_eq!(f.uid.len(), 36);
        assert_ne!(f.uid, node_uid("0123456789abcdef0123456789abcdef", "edge-2"));
        assert_eq!(
            f.addresses,
            [
                ("InternalIP".to_string(), "192.168.1.20".to_string()),
                ("Hostname".into(), "edge-1".into())
            ]
        );
        let q = |m: &BTreeMap<String, String>| -> Vec<(String, String)> {
            m.clone().into_iter().collect()
        };
        assert_eq!(
            q(&f.capacity),
            [
                ("cpu".into(), "4".into()),
                ("ephemeral-storage".into(), "64Gi".into()),
                ("memory".into(), "8Gi".into()),
                ("pods".into(), "110".into())
            ]
        );
        assert_eq!(f.allocatable["cpu"], "3500m");
        assert_eq!(f.allocatable["memory"], "7680Mi");
        assert_eq!(f.info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f.info.kernel_version, "6.1.0-18-arm64");
        assert_eq!(f.info.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(f.info.boot_id, "b6a4c5d2-0000-4000-8000-000000000001");
        assert_eq!(f.info.system_uuid, "", "unreadable: empty, as the kubelet leaves it");
        assert_eq!(f.info.operating_system, "linux");
        assert_eq!(f.info.architecture, goarch());
        assert_eq!(f.info.kubelet_version, crate::api::git_version());
        assert!(f.info.container_runtime_version.starts_with("outpost://"));
        assert_eq!(pretty_name("ID=x\n"), "Linux");
    }
}
