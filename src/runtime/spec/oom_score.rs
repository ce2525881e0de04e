//! The kubelet's per-container `oom_score_adj`.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::engine::QosClass;
use crate::quantity::{Quantity, QuantityError};

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

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
    match QosClass::of(pod)? {
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
