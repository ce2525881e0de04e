//! The agent's event records as core/v1 `Event` objects, the way the kubelet reports them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::store::EventRecord;

/// The kubelet's `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "kubelet";

/// `pods` is the snapshot's (for the node name and container kinds); the pod may be gone.
pub fn to_event(r: &EventRecord, pods: &[Pod], node: &str) -> Event {
    let pod = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(r.pod_uid.as_str()));
    let spec = pod.and_then(|p| p.spec.as_ref());
    let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| node.to_string());
    let field_path = r.container.as_ref().map(|c| {
        let init = spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|ics| ics.iter().any(|ic| &ic.name == c));
        format!("spec.{}{{{c}}}", if init { "initContainers" } else { "containers" })
    });
    let time = |s: i64| Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH));
    Event {
        metadata: ObjectMeta {
            name: Some(name(r)),
            namespace: Some(r.namespace.clone()),
            creation_timestamp: Some(time(r.first_seen)),
            ..Default::default()
        },
        // The kubelet's node reference: cluster-scoped, the name as UID.
        involved_object: if r.pod_uid.is_empty() {
            ObjectReference {
                kind: Some("Node".into()),
                name: Some(r.pod_name.clone()),
                uid: Some(r.pod_name.clone()),
                ..Default::default()
            }
        } else {
            ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(r.namespace.clone()),
                name: Some(r.pod_name.clone()),
                uid: Some(r.pod_uid.clone()),
                field_path,
                ..Default::default()
            }
        },
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.type_.clone()),
        count: Some(r.count as i32),
        first_timestamp: Some(time(r.first_seen)),
        last_timestamp: Some(time(r.last_seen)),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(node.clone()) }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node),
        ..Default::default()
    }
}

/// `<pod>.<hex>` like the kubelet's `<pod>.<unix nanos>`, with the nanoseconds part derived
/// from what makes the record distinct, so the name is stable across snapshots.
fn name(r: &EventRecord) -> String {
    // FNV-1a: tiny and deterministic (std's hasher is randomly keyed per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let key = [&r.pod_uid, r.container.as_deref().unwrap_or(""), &r.reason, &r.message];
    for b in key.iter().flat_map(|s| s.bytes().chain([0])) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let nanos = (r.first_seen.max(0) as u64).wrapping_mul(1_000_000_000) + h % 1_000_000_000;
    format!("{}.{nanos:x}", r.pod_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    pub fn record(container: Option<&str>, reason: &str) -> EventRecord {
        EventRecord {
            pod_uid: "u1".into(),
            namespace: "default".into(),
            pod_name: "web".into(),
            container: container.map(Into::into),
            type_: "Normal".into(),
            reason: reason.into(),
            message: "m".into(),
            count: 3,
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_100,
        }
    }

    #[test]
    fn shapes_a_kubelet_event() {
        let pod = Pod {
            metadata: ObjectMeta { uid: Some("u1".into()), ..Default::default() },
            spec: Some(PodSpec {
                node_name: Some("edge-1".into()),
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e =
            serde_json::to_value(to_event(&record(Some("init"), "Pulled"), &[pod], "h")).unwrap();
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["involvedObject"]["fieldPath"], "spec.initContainers{init}");
        assert_eq!(e["involvedObject"]["uid"], "u1");
        assert_eq!(e["source"], serde_json::json!({"component": "kubelet", "host": "edge-1"}));
        assert_eq!(e["firstTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(e["lastTimestamp"], "2023-11-14T22:15:00Z");
        assert_eq!(e["count"], 3);
        let e = serde_json::to_value(to_event(&record(Some("app"), "Started"), &[], "h")).unwrap();
        assert_eq!(e["involvedObject"]["fieldPath"], "spec.containers{app}");
        assert_eq!(e["source"]["host"], "h");
        let n = e["metadata"]["name"].as_str().unwrap();
        assert!(n.starts_with("web.") && n.len() > 10, "{n}");
    }

    #[test]
    fn an_event_without_a_pod_is_the_nodes() {
        let r = EventRecord {
            pod_uid: String::new(),
            pod_name: "edge-1".into(),
            ..record(None, "StateDatabaseRecovered")
        };
        let e = serde_json::to_value(to_event(&r, &[], "edge-1")).unwrap();
        assert_eq!(
            e["involvedObject"],
            serde_json::json!({"kind": "Node", "name": "edge-1", "uid": "edge-1"})
        );
        assert_eq!(e["metadata"]["namespace"], "default");
        assert_eq!(e["source"]["host"], "edge-1");
    }
}
