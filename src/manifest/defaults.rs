//! API defaults, applied in one place as the API server's `SetDefaults_*` functions do, so the
//! engine and the API see the same fully specified objects as on a cluster.

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, Pod, PodSecurityContext, Probe};
use k8s_openapi::ByteString;
use std::sync::Arc;

use super::Object;

const DEFAULT_NAMESPACE: &str = "default";
/// 0644, as on a cluster.
const DEFAULT_MODE: i32 = 0o644;

pub(super) fn apply(object: &mut Object) {
    let meta = match object {
        // Sole owners at parse time: make_mut never copies here.
        Object::Pod(o) => &mut Arc::make_mut(o).metadata,
        Object::ConfigMap(o) => &mut Arc::make_mut(o).metadata,
        Object::Secret(o) => &mut Arc::make_mut(o).metadata,
    };
    meta.namespace.get_or_insert_with(|| DEFAULT_NAMESPACE.into());
    match object {
        Object::Pod(pod) => self::pod(Arc::make_mut(pod)),
        Object::ConfigMap(_) => {}
        Object::Secret(s) => {
            let s = Arc::make_mut(s);
            s.type_.get_or_insert_with(|| "Opaque".into());
            // The API server folds stringData into data; later readers only look at data.
            if let Some(string_data) = s.string_data.take() {
                let data = s.data.get_or_insert_with(Default::default);
                for (k, v) in string_data {
                    data.insert(k, ByteString(v.into_bytes()));
                }
            }
        }
    }
}

fn pod(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else { return };
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network.unwrap_or(false);
    for v in spec.volumes.iter_mut().flatten() {
        let json = serde_json::to_value(&*v).unwrap_or_default();
        if json.as_object().is_some_and(|m| m.len() == 1) {
            v.empty_dir = Some(EmptyDirVolumeSource::default()); // a volume with no source
        }
        if let Some(cm) = v.config_map.as_mut() {
            cm.default_mode.get_or_insert(DEFAULT_MODE);
        }
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(DEFAULT_MODE);
        }
        if let Some(d) = v.downward_api.as_mut() {
            d.default_mode.get_or_insert(DEFAULT_MODE);
            for f in d.items.iter_mut().flatten() {
                if let Some(r) = f.field_ref.as_mut() {
                    r.api_version.get_or_insert_with(|| "v1".into());
                }
            }
        }
        if let Some(p) = v.projected.as_mut() {
            p.default_mode.get_or_insert(DEFAULT_MODE);
        }
        if let Some(h) = v.host_path.as_mut() {
            h.type_.get_or_insert_with(String::new);
        }
    }
    let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
    for c in containers {
        container(c, host_network);
    }
}

fn container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(pull_policy_for(c.image.as_deref().unwrap_or_default()).into());
    }
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in
        [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten()
    {
        self::probe(probe);
    }
    if let Some(l) = c.lifecycle.as_mut() {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = h.http_get.as_mut() {
                g.path.get_or_insert_with(|| "/".into());
                g.scheme.get_or_insert_with(|| "HTTP".into());
            }
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(r) = e.value_from.as_mut().and_then(|f| f.field_ref.as_mut()) {
            r.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    // Limits without requests: requests default to the limits.
    if let Some(r) = c.resources.as_mut() {
        if let Some(limits) = r.limits.clone() {
            let requests = r.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

fn probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(g) = p.http_get.as_mut() {
        g.path.get_or_insert_with(|| "/".into());
        g.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

/// `:latest` or no tag means Always, anything else IfNotPresent (an image pinned by digest
/// included), as the API server defaults it.
pub(crate) fn pull_policy_for(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::pull_policy_for;

    #[test]
    fn pull_policy_follows_the_tag_like_the_api_server() {
        assert_eq!(pull_policy_for("busybox"), "Always");
        assert_eq!(pull_policy_for("busybox:latest"), "Always");
        assert_eq!(pull_policy_for("busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy_for("localhost:5000/busybox"), "Always");
        assert_eq!(pull_policy_for("localhost:5000/busybox:1"), "IfNotPresent");
        assert_eq!(pull_policy_for("busybox@sha256:abcd"), "IfNotPresent");
    }
}
