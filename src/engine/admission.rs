//! Pod admission, the kubelet's `canAdmitPod`: first the eviction manager's handler (under
//! memory pressure no BestEffort pods, under disk pressure no pods), then the resource fit of
//! the predicate handler (`noderesources.Fits`: pod count, then cpu, memory and ephemeral
//! storage requests against allocatable minus what the admitted pods request), with the
//! sysctl allowlist between them, in the kubelet's handler order, and last the node affinity
//! (`affinity.rs`, after the fit as in `AdmissionCheck`). The first failure is the verdict.
//! The node facts come from the agent as a [`NodeConfig`]; extended resources (device plugins'
//! devices) as [`DeviceCount`]s, counted like the standard ones, but a resource no plugin
//! offers rejects the pod too (the kubelet would run a static pod without the device).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, Toleration};

use super::affinity::{self, NodeIdentity};
use super::readings::DeviceCount;
use super::resources::{pod_request, pod_requests, ResourceList, CPU, EPHEMERAL_STORAGE, MEMORY};
use super::sysctl::SysctlAllowlist;
use super::thresholds::{EvictionSignal, Threshold, MEMORY_PRESSURE};
use super::Rejection;

/// The kubelet's `--max-pods` default.
pub const DEFAULT_MAX_PODS: usize = 110;
/// The kubelet's `--eviction-pressure-transition-period` default.
pub const DEFAULT_PRESSURE_TRANSITION: Duration = Duration::from_secs(300);

/// What the node has and keeps back, from the agent's discovery and flags.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Cores (as millicores), `MemTotal`, the state filesystem's size.
    pub capacity: ResourceList,
    pub system_reserved: ResourceList,
    pub kube_reserved: ResourceList,
    pub eviction_hard: Vec<Threshold>,
    pub max_pods: usize,
    /// How long a pressure condition stays after its threshold was last crossed.
    pub pressure_transition: Duration,
    /// The safe sysctls and `--allowed-unsafe-sysctls`.
    pub sysctls: SysctlAllowlist,
    /// The node's name and labels, which pods' node selectors and affinity must match.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl NodeConfig {
    /// A node that admits up to its capacity and never evicts (for tests).
    pub fn unreserved(capacity: ResourceList) -> Self {
        Self {
            capacity,
            system_reserved: ResourceList::default(),
            kube_reserved: ResourceList::default(),
            eviction_hard: Vec::new(),
            max_pods: DEFAULT_MAX_PODS,
            pressure_transition: DEFAULT_PRESSURE_TRANSITION,
            sysctls: SysctlAllowlist::default(),
            name: String::new(),
            labels: BTreeMap::new(),
        }
    }

    /// Node allocatable: capacity - kube-reserved - system-reserved - the hard eviction
    /// thresholds of `memory.available` and `nodefs.available` (`hardEvictionReservation`),
    /// never below zero.
    pub fn allocatable(&self) -> ResourceList {
        let mut eviction = ResourceList::default();
        for t in &self.eviction_hard {
            match t.signal {
                EvictionSignal::MemoryAvailable => {
                    eviction.memory = t.quantity(self.capacity.memory).value();
                }
                EvictionSignal::NodeFsAvailable => {
                    eviction.ephemeral_storage =
                        t.quantity(self.capacity.ephemeral_storage).value();
                }
                _ => {}
            }
        }
        self.capacity
            .saturating_sub(&self.kube_reserved)
            .saturating_sub(&self.system_reserved)
            .saturating_sub(&eviction)
    }
}

/// The pods already admitted that still hold their resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Used {
    pub pods: usize,
    pub requests: ResourceList,
    /// Extended resources, by name.
    pub extended: BTreeMap<String, i128>,
}

/// `IsExtendedResourceName`: fully qualified, outside the `kubernetes.io` namespace, not a
/// quota name (`requests.*`).
pub fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// The extended resources any of the pod's containers ask for.
pub(crate) fn extended_names(spec: &PodSpec) -> std::collections::BTreeSet<String> {
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    all.filter_map(|c| c.resources.as_ref())
        .flat_map(|r| r.requests.iter().chain(r.limits.iter()).flat_map(|m| m.keys()))
        .filter(|n| is_extended(n))
        .cloned()
        .collect()
}

/// `TolerationsTolerateTaint` for the `node.kubernetes.io/memory-pressure:NoSchedule` taint.
fn tolerates_memory_pressure(tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect = t.effect.as_deref().unwrap_or_default();
        let key = t.key.as_deref().unwrap_or_default();
        (effect.is_empty() || effect == "NoSchedule")
            && (key.is_empty() || key == "node.kubernetes.io/memory-pressure")
            && match t.operator.as_deref().unwrap_or_default() {
                "" | "Equal" => t.value.as_deref().unwrap_or_default().is_empty(),
                "Exists" => true,
                _ => false,
            }
    })
}

/// The eviction manager's `Admit`. Critical pods are admitted under any pressure.
fn admit_under_pressure(
    spec: &PodSpec,
    qos: &str,
    critical: bool,
    conditions: &[&str],
) -> Result<(), Rejection> {
    if conditions.is_empty() || critical {
        return Ok(());
    }
    if conditions.contains(&MEMORY_PRESSURE)
        && (qos != "BestEffort"
            || tolerates_memory_pressure(spec.tolerations.as_deref().unwrap_or_default()))
    {
        return Ok(());
    }
    Err(Rejection {
        reason: "Evicted".into(),
        // Go's %v of a []NodeConditionType.
        message: format!("The node had condition: [{}]. ", conditions.join(" ")),
    })
}

/// `fitsRequest`: the first resource that does not fit.
fn fits(
    spec: &PodSpec,
    allocatable: &ResourceList,
    max_pods: usize,
    devices: &BTreeMap<String, DeviceCount>,
    used: &Used,
) -> Result<(), Rejection> {
    let insufficient = |name: &str, requested: i128, used: i128, capacity: i128| {
        Rejection {
        reason: format!("OutOf{name}"),
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    if used.pods + 1 > max_pods {
        return Err(insufficient("pods", 1, used.pods as i128, max_pods as i128));
    }
    let request = pod_requests(spec);
    for name in [CPU, MEMORY, EPHEMERAL_STORAGE] {
        let (r, u, a) = (request.get(name), used.requests.get(name), allocatable.get(name));
        if r > 0 && r > a - u {
            return Err(insufficient(name, r, u, a));
        }
    }
    for name in extended_names(spec) {
        let r = pod_request(spec, &name);
        let u = used.extended.get(&name).copied().unwrap_or(0);
        let a = devices.get(&name).map_or(0, |d| i128::from(d.allocatable));
        if r > 0 && r > a - u {
            return Err(insufficient(&name, r, u, a));
        }
    }
    Ok(())
}

/// `canAdmitPod` for a new pod, given the node's current pressure conditions and what the
/// admitted pods use.
pub(crate) fn admit(
    spec: &PodSpec,
    qos: &str,
    critical: bool,
    node: &NodeConfig,
    devices: &BTreeMap<String, DeviceCount>,
    conditions: &[&str],
    used: &Used,
) -> Result<(), Rejection> {
    admit_under_pressure(spec, qos, critical, conditions)?;
    node.sysctls.admit(spec)?;
    fits(spec, &node.allocatable(), node.max_pods, devices, used)?;
    affinity::admit(spec, &NodeIdentity { name: &node.name, labels: &node.labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::thresholds::{parse_eviction_hard, DISK_PRESSURE};

    fn node() -> NodeConfig {
        NodeConfig {
            capacity: ResourceList {
                cpu_milli: 2000,
                memory: 1 << 30,
                ephemeral_storage: 10 << 30,
            },
            system_reserved: ResourceList { cpu_milli: 100, memory: 0, ephemeral_storage: 0 },
            kube_reserved: ResourceList::default(),
            eviction_hard: parse_eviction_hard("memory.available<100Mi,nodefs.available<10%")
                .unwrap(),
            max_pods: 3,
            pressure_transition: DEFAULT_PRESSURE_TRANSITION,
            sysctls: SysctlAllowlist::default(),
            name: "edge-1".into(),
            labels: [("site".to_string(), "plant-3".to_string())].into(),
        }
    }

    fn none() -> BTreeMap<String, DeviceCount> {
        BTreeMap::new()
    }

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("test spec")
    }

    /// The kubelet's node allocatable: capacity - reserved - hard eviction thresholds.
    #[test]
    fn allocatable_subtracts_reserves_and_hard_eviction_thresholds() {
        let a = node().allocatable();
        let storage = (10i128 << 30) - (f64::from(0.1f32) * (10u64 << 30) as f64) as i128;
        assert_eq!(
            a,
            ResourceList {
                cpu_milli: 1900,
                memory: (1 << 30) - (100 << 20),
                ephemeral_storage: storage
            }
        );
        let mut small = node();
        small.system_reserved.memory = 2 << 30;
        assert_eq!(small.allocatable().memory, 0, "never negative");
    }

    /// The kubelet's message: "Node didn't have enough resource: cpu, requested: 2000, used:
    /// 500, capacity: 1900" (InsufficientResourceError), reason OutOfcpu.
    #[test]
    fn the_first_resource_that_does_not_fit_is_reported() {
        let used = Used {
            pods: 1,
            requests: ResourceList { cpu_milli: 500, memory: 900 << 20, ephemeral_storage: 0 },
            ..Used::default()
        };
        let big_cpu =
            spec("containers: [{name: a, resources: {requests: {cpu: '2', memory: 1Gi}}}]");
        assert_eq!(
            admit(&big_cpu, "Burstable", false, &node(), &none(), &[], &used),
            Err(Rejection {
                reason: "OutOfcpu".into(),
                message: "Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity: 1900".into()
            })
        );
        let mem =
            spec("containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}}}]");
        assert_eq!(
            admit(&mem, "Burstable", false, &node(), &none(), &[], &used).unwrap_err().message,
            format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                100 << 20,
                900 << 20,
                (1 << 30) - (100 << 20)
            )
        );
        let fits_exactly =
            spec("containers: [{name: a, resources: {requests: {cpu: 1400m, memory: 24Mi}}}]");
        assert_eq!(admit(&fits_exactly, "Burstable", false, &node(), &none(), &[], &used), Ok(()));
        // Nothing requested always fits (but still counts as a pod).
        assert_eq!(
            admit(
                &spec("containers: [{name: a}]"),
                "BestEffort",
                false,
                &node(),
                &none(),
                &[],
                &used
            ),
            Ok(())
        );
        let full = Used { pods: 3, ..used.clone() };
        assert_eq!(
            admit(
                &spec("containers: [{name: a}]"),
                "BestEffort",
                false,
                &node(),
                &none(),
                &[],
                &full
            ),
            Err(Rejection {
                reason: "OutOfpods".into(),
                message:
                    "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
                        .into()
            })
        );
    }

    /// Extended resources fit against the plugins' healthy devices minus what admitted pods
    /// request (the largest init container or the app containers' sum); one no plugin offers
    /// rejects the pod too, naming it.
    #[test]
    fn extended_resources_are_counted_like_the_kubelet() {
        let pod = spec(
            "{containers: [{name: a, resources: {limits: {example.com/dev: 1}}}, {name: b, resources: {limits: {example.com/dev: 1}}}], initContainers: [{name: i, resources: {limits: {example.com/dev: 1}}}]}",
        );
        let devices: BTreeMap<String, DeviceCount> =
            [("example.com/dev".to_string(), DeviceCount { capacity: 4, allocatable: 3 })].into();
        let mut used = Used::default();
        assert_eq!(admit(&pod, "BestEffort", false, &node(), &devices, &[], &used), Ok(()));
        used.extended.insert("example.com/dev".into(), 2);
        assert_eq!(
            admit(&pod, "BestEffort", false, &node(), &devices, &[], &used),
            Err(Rejection {
                reason: "OutOfexample.com/dev".into(),
                message: "Node didn't have enough resource: example.com/dev, requested: 2, used: 2, capacity: 3".into()
            })
        );
        assert_eq!(
            admit(&pod, "BestEffort", false, &node(), &none(), &[], &Used::default()),
            Err(Rejection {
                reason: "OutOfexample.com/dev".into(),
                message: "Node didn't have enough resource: example.com/dev, requested: 2, used: 0, capacity: 0".into()
            })
        );
        assert!(!is_extended("kubernetes.io/foo") && !is_extended("requests.example.com/x"));
        assert!(!is_extended("cpu") && is_extended("example.com/dev"));
    }

    /// The eviction manager's Admit: BestEffort pods are refused under memory pressure unless
    /// they tolerate its taint; under disk pressure every pod is; critical pods never are.
    #[test]
    fn pressure_refuses_best_effort_pods_and_disk_pressure_all() {
        let used = Used::default();
        let be = spec("containers: [{name: a}]");
        let bu = spec("containers: [{name: a, resources: {requests: {memory: 1Mi}}}]");
        let tolerant = spec("containers: [{name: a}]\ntolerations: [{key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoSchedule}]");
        let rejected = |m: &str| {
            Err(Rejection {
                reason: "Evicted".into(),
                message: format!("The node had condition: {m}. "),
            })
        };
        let n = node();
        assert_eq!(
            admit(&be, "BestEffort", false, &n, &none(), &[MEMORY_PRESSURE], &used),
            rejected("[MemoryPressure]")
        );
        assert_eq!(admit(&bu, "Burstable", false, &n, &none(), &[MEMORY_PRESSURE], &used), Ok(()));
        assert_eq!(
            admit(&tolerant, "BestEffort", false, &n, &none(), &[MEMORY_PRESSURE], &used),
            Ok(())
        );
        assert_eq!(admit(&be, "BestEffort", true, &n, &none(), &[MEMORY_PRESSURE], &used), Ok(()));
        assert_eq!(
            admit(&bu, "Burstable", false, &n, &none(), &[DISK_PRESSURE], &used),
            rejected("[DiskPressure]")
        );
        assert_eq!(
            admit(&be, "BestEffort", false, &n, &none(), &[MEMORY_PRESSURE, DISK_PRESSURE], &used),
            rejected("[MemoryPressure DiskPressure]")
        );
    }
}
