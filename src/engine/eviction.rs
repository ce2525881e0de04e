//! Node-pressure eviction, the kubelet's eviction manager (`synchronize`), run once per
//! [`NodeReadings`] the agent observes:
//!
//! 1. Per-pod local storage limits (`localStorageEviction`): every active pod whose
//!    disk-backed emptyDir exceeds its `sizeLimit`, whose ephemeral storage exceeds the sum of
//!    its containers' `limits.ephemeral-storage`, or with a container over its own limit, is
//!    evicted; nothing else happens that round.
//! 2. Hard thresholds: pressure conditions (kept for the transition period after the last
//!    crossing) and, while a threshold is crossed, one pod per round, memory before disk
//!    before pids, ranked like `rankMemoryPressure` / `rankDiskPressureFunc`: pods without
//!    readings first, then pods using more than they request, then lower priority, then the
//!    larger usage above the request (a BestEffort pod's whole usage counts); for pids like
//!    `rankPIDPressure`: lower priority, then more processes.
//!
//! After an eviction the next one waits until the evicted pods' containers are gone, or 30 s
//! (`waitForPodsCleanup`). Pods with priority >= 2000000000 are never evicted. The kubelet
//! also never evicts static pods (`IsCriticalPod` counts them critical, kubernetes#40573);
//! outpost's pods all come from files, so it treats them as the kubelet treats API pods and
//! keeps only the priority rule: otherwise nothing could ever be evicted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;

use super::admission::{self, NodeConfig, Used};
use super::backoff::add;
use super::pod::PodState;
use super::readings::{NodeReadings, PodUsage};
use super::resources::{pod_limit, pod_request, pod_requests, Amount, Format, EPHEMERAL_STORAGE};
use super::thresholds::{INODES, PIDS};
use super::Rejection;
use super::{Action, Timestamp};

/// `podCleanupTimeout`.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct NodeState {
    pub config: Option<NodeConfig>,
    /// Readings not acted on yet (`thresholdsUpdatedStats`: each is used once).
    fresh: Option<NodeReadings>,
    last_crossed: BTreeMap<&'static str, Timestamp>,
    /// MemoryPressure, DiskPressure, PIDPressure: crossed within the transition period.
    pub conditions: Vec<&'static str>,
    /// The device plugins' extended resources, by name.
    pub devices: BTreeMap<String, super::readings::DeviceCount>,
    /// The pods of the last eviction round and when it happened.
    cleanup: Option<(Vec<String>, Timestamp)>,
}

impl NodeState {
    pub fn observe(&mut self, r: NodeReadings, now: Timestamp) {
        let Some(config) = &self.config else { return };
        for t in &config.eviction_hard {
            if t.met(&r).is_some() {
                self.last_crossed.insert(t.signal.condition(), now);
            }
        }
        let period = config.pressure_transition;
        self.conditions = super::thresholds::CONDITIONS
            .into_iter()
            .filter(|c| self.last_crossed.get(c).is_some_and(|at| now < add(*at, period)))
            .collect();
        self.fresh = Some(r);
    }

    /// Admission of a pod new to the engine, against the admitted pods in `pods`.
    pub fn admit(
        &self,
        p: &mut PodState,
        pods: &BTreeMap<String, PodState>,
        out: &mut Vec<Action>,
    ) {
        let Some(config) = &self.config else { return };
        let mut used = Used::default();
        for o in pods.values().filter(|o| o.holds_resources()) {
            used.pods += 1;
            let r = pod_requests(o.pod_spec());
            used.requests.cpu_milli += r.cpu_milli;
            used.requests.memory += r.memory;
            used.requests.ephemeral_storage += r.ephemeral_storage;
            for name in admission::extended_names(o.pod_spec()) {
                *used.extended.entry(name.clone()).or_default() += pod_request(o.pod_spec(), &name);
            }
        }
        let verdict = admission::admit(
            p.pod_spec(),
            p.qos(),
            p.critical(),
            config,
            &self.devices,
            &self.conditions,
            &used,
        );
        if let Err(Rejection { reason, message }) = verdict {
            p.reject(&reason, &message, out);
        }
    }

    /// One round of the eviction manager, if new readings came in. Returns the evicted UIDs.
    pub fn evict(
        &mut self,
        pods: &mut BTreeMap<String, PodState>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> Vec<String> {
        let Some(config) = &self.config else { return vec![] };
        let Some(r) = self.fresh.take() else { return vec![] };
        if let Some((uids, at)) = &self.cleanup {
            let waiting = uids.iter().any(|u| pods.get(u).is_some_and(PodState::running_on_node));
            if waiting && now < add(*at, CLEANUP_TIMEOUT) {
                return vec![];
            }
            self.cleanup = None;
        }
        let mut active: Vec<&PodState> = pods.values().filter(|p| p.evictable()).collect();
        active.sort_by(|a, b| a.key.cmp(&b.key));
        let mut evicted: Vec<(String, String)> = Vec::new();
        for p in &active {
            let Some(usage) = r.pods.get(&p.uid).filter(|u| u.disk) else { continue };
            if let Some(message) = local_storage_violation(p.pod_spec(), usage) {
                if !p.critical() {
                    evicted.push((p.uid.clone(), message));
                }
            }
        }
        let pressure = evicted.is_empty();
        if pressure {
            let crossed = config
                .eviction_hard
                .iter()
                .filter_map(|t| Some((t, t.met(&r)?)))
                .min_by_key(|(t, _)| t.signal);
            let Some((threshold, (quantity, available))) = crossed else { return vec![] };
            let resource = threshold.signal.resource();
            rank(&mut active, resource, &r);
            let Some(p) = active.iter().find(|p| !p.critical()) else { return vec![] };
            let mut message = format!(
                "The node was low on resource: {resource}. Threshold quantity: {quantity}, available: {available}. "
            );
            message.push_str(&offending_containers(p.pod_spec(), resource, r.pods.get(&p.uid)));
            evicted.push((p.uid.clone(), message));
        }
        let mut uids = Vec::new();
        for (uid, message) in evicted {
            if let Some(p) = pods.get_mut(&uid) {
                p.evict(message, pressure, out);
                uids.push(uid);
            }
        }
        self.cleanup = Some((uids.clone(), now));
        uids
    }
}

/// `emptyDirLimitEviction`, `podEphemeralStorageLimitEviction`,
/// `containerEphemeralStorageLimitEviction`, in that order: the eviction message, if any.
fn local_storage_violation(spec: &PodSpec, usage: &PodUsage) -> Option<String> {
    for v in spec.volumes.iter().flatten() {
        let Some(e) = &v.empty_dir else { continue };
        if e.medium.as_deref() == Some("Memory") {
            continue; // tmpfs: sized by the mount itself
        }
        let Some(size) = e.size_limit.as_ref().and_then(|q| Amount::parse(&q.0)) else { continue };
        let used = usage.volumes.get(&v.name).map(|d| i128::from(d.bytes));
        if size.milli > 0 && used.is_some_and(|u| u * 1000 > size.milli) {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                v.name,
                size.to_string()
            ));
        }
    }
    if let Some(limit) = pod_limit(spec, EPHEMERAL_STORAGE) {
        if i128::from(usage.disk_total(false)) > limit {
            let format = first_limit_format(spec);
            let limit = Amount { milli: limit * 1000, format };
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {limit}. "
            ));
        }
    }
    for c in &spec.containers {
        let limit = c.resources.as_ref().and_then(|r| r.limits.as_ref()?.get(EPHEMERAL_STORAGE));
        let Some(limit) = limit.and_then(|q| Amount::parse(&q.0)).filter(|l| l.milli != 0) else {
            continue;
        };
        let Some(u) = usage.containers.get(&c.name) else { continue };
        let used = u.rootfs.map_or(0, |d| d.bytes) + u.logs.map_or(0, |d| d.bytes);
        if limit.milli < i128::from(used) * 1000 {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                c.name,
                limit.to_string()
            ));
        }
    }
    None
}

/// The format of a summed limit is its first term's (`Quantity.Add` keeps the receiver's).
fn first_limit_format(spec: &PodSpec) -> Format {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(EPHEMERAL_STORAGE))
        .and_then(|q| Amount::parse(&q.0))
        .map_or(Format::BinarySI, |a| a.format)
}

/// A pod's usage of `resource` for ranking, `None` without readings ("no stats found").
fn usage_of(uid: &str, resource: &str, r: &NodeReadings) -> Option<i128> {
    let u = r.pods.get(uid)?;
    match resource {
        super::resources::MEMORY => Some(i128::from(u.memory.unwrap_or(0))),
        PIDS => u.processes.map(i128::from),
        _ if u.disk => Some(i128::from(u.disk_total(resource == INODES))),
        _ => None,
    }
}

/// `orderedBy(exceedsRequests, priority, usage above request)`; pods without readings first
/// at each step (`cmpBool(!p1Found, !p2Found)`). Stable over the namespace/name order.
fn rank(pods: &mut [&PodState], resource: &str, r: &NodeReadings) {
    if resource == PIDS {
        // `orderedBy(priority, process)`: no request to exceed.
        pods.sort_by_cached_key(|p| match usage_of(&p.uid, resource, r) {
            None => (0u8, 0, 0),
            Some(u) => (1, p.priority(), -u),
        });
        return;
    }
    let key = |p: &PodState| {
        let request = if resource == INODES { 0 } else { pod_request(p.pod_spec(), resource) };
        match usage_of(&p.uid, resource, r) {
            None => (0u8, 0, 0u8, 0),
            Some(u) => (1, p.priority(), u8::from(u <= request), -(u - request)),
        }
    };
    pods.sort_by_cached_key(|p| {
        let (found, priority, within, above) = key(p);
        // Not found sorts first on its own; the rest by exceeding, then priority, then usage.
        (found, within, priority, above)
    });
}

/// `evictionMessage`'s per-container part: app containers using more than they request.
fn offending_containers(spec: &PodSpec, resource: &str, usage: Option<&PodUsage>) -> String {
    let mut out = String::new();
    let Some(usage) = usage else { return out };
    for c in &spec.containers {
        let Some(u) = usage.containers.get(&c.name) else { continue };
        let used = match resource {
            super::resources::MEMORY => u.memory,
            EPHEMERAL_STORAGE if usage.disk => u.rootfs.zip(u.logs).map(|(a, b)| a.bytes + b.bytes),
            _ => None,
        };
        let Some(used) = used.map(|b| Amount::bytes(i128::from(b))) else { continue };
        let request = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()?.get(resource))
            .and_then(|q| Amount::parse(&q.0))
            .unwrap_or(Amount { milli: 0, format: Format::DecimalSI });
        if used.milli > request.milli {
            out.push_str(&format!(
                "Container {} was using {used}, request is {request}, has larger consumption of {resource}. ",
                c.name
            ));
        }
    }
    out
}

/// Whether the readings cross a disk threshold: the agent then measures every pod's disk
/// usage for the ranking (otherwise only pods with storage limits).
pub fn disk_pressure(thresholds: &[super::thresholds::Threshold], r: &NodeReadings) -> bool {
    thresholds
        .iter()
        .any(|t| matches!(t.signal.resource(), EPHEMERAL_STORAGE | INODES) && t.met(r).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::readings::ContainerUsage;
    use crate::engine::resources::MEMORY;

    fn state(name: &str, priority: i32, request_mi: u32) -> PodState {
        let yaml = format!(
            "metadata: {{name: {name}, namespace: default, uid: uid-{name}}}\nspec:\n  priority: {priority}\n  containers:\n  - {{name: app, resources: {{requests: {{memory: {request_mi}Mi}}}}}}\n"
        );
        let pod = serde_yaml::from_str(&yaml).expect("test pod");
        PodState::new(pod, Timestamp::from_second(0).unwrap())
    }

    /// rankMemoryPressure over the kubelet's cases (eviction helpers_test: exceeds requests,
    /// priority, memory above request, missing stats): one table, the whole order.
    #[test]
    fn memory_ranking_is_exceeds_then_priority_then_usage_above_request() {
        let pods = [
            state("e", 0, 100),
            state("d", -10, 100),
            state("c", 100, 0),
            state("a", 0, 0),
            state("b", 0, 50),
            state("f", 0, 0),
        ];
        let usage = [("a", 100), ("b", 200), ("c", 500), ("d", 50), ("e", 99)];
        let mut r = NodeReadings::default();
        for (name, mi) in usage {
            let c = ContainerUsage { memory: Some(mi << 20), ..Default::default() };
            let u = PodUsage {
                memory: Some(mi << 20),
                containers: [("app".to_string(), c)].into(),
                ..Default::default()
            };
            r.pods.insert(format!("uid-{name}"), u);
        }
        let mut refs: Vec<&PodState> = pods.iter().collect();
        rank(&mut refs, MEMORY, &r);
        let order: Vec<&str> = refs.iter().map(|p| p.key.name.as_str()).collect();
        // f: no stats; b, a: over their requests at priority 0, larger excess first; c: over,
        // but priority 100; then the pods within their requests, lower priority first.
        assert_eq!(order, ["f", "b", "a", "c", "d", "e"]);
    }

    /// rankPIDPressure: pods without stats, then lower priority, then more processes;
    /// requests play no part.
    #[test]
    fn pid_ranking_is_priority_then_processes() {
        let pods = [state("a", 0, 0), state("b", 0, 500), state("c", -5, 0), state("d", 0, 0)];
        let mut r = NodeReadings::default();
        for (name, processes) in [("a", 10), ("b", 300), ("c", 1)] {
            let u = PodUsage { processes: Some(processes), ..Default::default() };
            r.pods.insert(format!("uid-{name}"), u);
        }
        let mut refs: Vec<&PodState> = pods.iter().collect();
        rank(&mut refs, PIDS, &r);
        let order: Vec<&str> = refs.iter().map(|p| p.key.name.as_str()).collect();
        assert_eq!(order, ["d", "c", "b", "a"]);
    }
}
