//! Pod QoS class and the kubelet's per-container `oom_score_adj`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::quantity::{Quantity, QuantityError};

/// `v1.PodQOSClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The name in `status.qosClass`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

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
pub fn pod_qos(pod: &Pod) -> Result<QosClass, QuantityError> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(QosClass::BestEffort) };
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

fn memory_request(c: &Container) -> Result<i64, QuantityError> {
    let q = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("memory"));
    Ok(q.map(Quantity::parse).transpose()?.map_or(0, |q| q.value()))
}

/// `GetContainerOOMScoreAdjust`: -997 for Guaranteed and `system-node-critical` pods, 1000 for
/// BestEffort, else `1000 - 1000*memoryRequest/memoryCapacity` clamped to [3, 999]. The kubelet
/// floors at `1000 + (-997)` = 3 (its documentation says 2; the code is what runs). A sidecar
/// (restartable init container) gets no more than the lowest score of the regular containers.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> Result<i32, QuantityError> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical") {
        return Ok(GUARANTEED_OOM_SCORE_ADJ as i32);
    }
    match pod_qos(pod)? {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ as i32),
        QosClass::BestEffort => return Ok(BEST_EFFORT_OOM_SCORE_ADJ as i32),
        QosClass::Burstable => {}
    }
    let capacity = memory_capacity.max(1) as i128;
    let score = |request: i64| 1000 - (1000 * request as i128) / capacity;
    let mut adj = score(memory_request(container)?);
    let sidecar = spec.and_then(|s| s.init_containers.as_ref()).is_some_and(|inits| {
        inits
            .iter()
            .any(|i| i.name == container.name && i.restart_policy.as_deref() == Some("Always"))
    });
    if sidecar {
        if let Some(spec) = spec {
            let mut min_request = None::<i64>;
            for c in &spec.containers {
                let r = memory_request(c)?;
                min_request = Some(min_request.map_or(r, |m| m.min(r)));
            }
            if let Some(m) = min_request {
                adj = adj.min(score(m));
            }
        }
    }
    let floor = 1000 + GUARANTEED_OOM_SCORE_ADJ as i128;
    if adj < floor {
        return Ok(floor as i32);
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ as i128 {
        return Ok(999);
    }
    Ok(adj as i32)
}
