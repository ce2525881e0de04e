//! `status.qosClass`: the kubelet's `ComputePodQOS`, the one place outpost classifies a pod
//! (status, cgroup parent, `oom_score_adj`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::quantity::{Quantity, QuantityError};

/// `v1.PodQOSClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// A pod's class ([`pod_qos`]); BestEffort without a spec.
    pub fn of(pod: &Pod) -> Result<QosClass, QuantityError> {
        pod.spec.as_ref().map_or(Ok(QosClass::BestEffort), pod_qos)
    }

    /// The name in `status.qosClass`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

fn is_qos_resource(name: &str) -> bool {
    name == "cpu" || name == "memory"
}

/// Adds the positive cpu/memory quantities of `list` into `sum`; returns the names it found.
fn accumulate(
    list: Option<&BTreeMap<String, ApiQuantity>>,
    sum: &mut BTreeMap<String, Quantity>,
    replace: bool,
) -> Result<Vec<String>, QuantityError> {
    let mut found = Vec::new();
    for (name, q) in list.into_iter().flatten() {
        if !is_qos_resource(name) {
            continue;
        }
        let q = Quantity::parse(q)?;
        if !q.is_positive() {
            continue;
        }
        found.push(name.clone());
        let entry = sum.entry(name.clone()).or_default();
        *entry = if replace {
            q
        } else {
            entry.checked_add(q).ok_or_else(|| QuantityError::Overflow(name.clone()))?
        };
    }
    Ok(found)
}

/// `ComputePodQOS`: Guaranteed when every container (init included) has cpu and memory limits
/// and the summed requests equal the summed limits; BestEffort when nothing is requested or
/// limited; Burstable otherwise. Pod-level `spec.resources`, when set, decide alone.
pub fn pod_qos(spec: &PodSpec) -> Result<QosClass, QuantityError> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut guaranteed = true;
    let has_all =
        |found: &[String]| found.iter().any(|n| n == "cpu") && found.iter().any(|n| n == "memory");
    if let Some(r) = spec.resources.as_ref().filter(|r| r.requests.is_some() || r.limits.is_some())
    {
        accumulate(r.requests.as_ref(), &mut requests, true)?;
        let found = accumulate(r.limits.as_ref(), &mut limits, true)?;
        guaranteed = has_all(&found);
    } else {
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            let r = c.resources.as_ref();
            accumulate(r.and_then(|r| r.requests.as_ref()), &mut requests, false)?;
            let found = accumulate(r.and_then(|r| r.limits.as_ref()), &mut limits, false)?;
            guaranteed &= has_all(&found);
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return Ok(QosClass::BestEffort);
    }
    if guaranteed {
        guaranteed = requests.iter().all(|(name, req)| limits.get(name) == Some(req));
    }
    Ok(if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("test spec")
    }

    /// The cases of the kubelet's qos_test.go (TestComputePodQOS), cpu and memory only.
    #[test]
    fn qos_class_like_compute_pod_qos() {
        let table = [
            ("containers: [{name: a}]", "BestEffort"),
            ("containers: [{name: a}, {name: b}]", "BestEffort"),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}]",
                "Guaranteed",
            ),
            // No API defaulting here: limits alone leave the requests empty.
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m, memory: 100Mi}}}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}, {name: b, resources: {requests: {cpu: '0.1', memory: 104857600}, limits: {cpu: '0.1', memory: 104857600}}}]",
                "Guaranteed",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}, {name: b}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m}}}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 50m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {requests: {memory: 100Mi}}}]",
                "Burstable",
            ),
            // Init containers count too.
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}]\ninitContainers: [{name: i}]",
                "Burstable",
            ),
            (
                "containers: [{name: a}]\ninitContainers: [{name: i, resources: {requests: {cpu: 10m}}}]",
                "Burstable",
            ),
            // Pod-level resources decide alone (status and cgroups agree since one function
            // computes both).
            (
                "containers: [{name: a}]\nresources: {requests: {cpu: '1', memory: 1Gi}, limits: {cpu: '1', memory: 1Gi}}",
                "Guaranteed",
            ),
            // Zero amounts and other resources do not count.
            (
                "containers: [{name: a, resources: {requests: {cpu: '0', memory: '0'}, limits: {ephemeral-storage: 1Gi}}}]",
                "BestEffort",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi, nvidia.com/gpu: '1'}}}]",
                "Guaranteed",
            ),
        ];
        for (yaml, want) in table {
            assert_eq!(pod_qos(&spec(yaml)).map(|q| q.as_str()), Ok(want), "{yaml}");
        }
    }
}
