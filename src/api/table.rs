//! Server-side printing: `meta.k8s.io/v1` Tables for pods and events, with the columns and
//! cells of the API server's printers (kubectl's `printPod` and `printEvent`), so
//! `kubectl get` shows what it shows against a cluster.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::engine::summary;
use crate::format::human_duration;

/// What each row carries besides its cells (the `includeObject` parameter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Include {
    None,
    /// `PartialObjectMetadata` (the default): kubectl's `-A`/`--show-labels` read it.
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

pub(super) fn column(name: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

pub(super) fn row(
    cells: Vec<Value>,
    object: Value,
    include: Include,
    conditions: Option<Value>,
) -> Value {
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = object,
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"].clone(),
            })
        }
    }
    if let Some(c) = conditions {
        row["conditions"] = c;
    }
    row
}

pub(super) fn table(version: u64, columns: Vec<Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// `pods` are paired with their JSON (already computed for selectors).
pub fn pods(pods: &[(&Pod, Value)], version: u64, include: Include, now: Timestamp) -> Value {
    let columns = vec![
        column("Name", 0, "Name must be unique within a namespace."),
        column("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."),
        column("Status", 0, "The aggregate status of the containers in this pod."),
        column(
            "Restarts",
            0,
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        column("Age", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        column("IP", 1, "podIP address allocated to the pod."),
        column("Node", 1, "NodeName indicates in which node this pod is scheduled."),
        column("Nominated Node", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
        column("Readiness Gates", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
    ];
    let rows = pods
        .iter()
        .map(|(pod, json)| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let conditions = match phase {
                Some("Succeeded") => Some(json!([{"type": "Completed", "status": "True",
                    "reason": "Succeeded", "message": "The pod has completed successfully."}])),
                Some("Failed") => Some(json!([{"type": "Completed", "status": "True",
                    "reason": "Failed", "message": "The pod failed."}])),
                _ => None,
            };
            row(pod_cells(pod, now), json.clone(), include, conditions)
        })
        .collect();
    table(version, columns, rows)
}

/// kubectl's `printPod`, all columns (the server prints wide; kubectl hides priority 1).
pub fn pod_cells(pod: &Pod, now: Timestamp) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let is_sidecar = |name: &str| {
        inits.iter().any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let total = spec.containers.len() + inits.iter().filter(|c| is_sidecar(&c.name)).count();
    let (mut ready, mut restarts, mut sidecar_restarts) = (0, 0, 0);
    let (mut last_restart, mut last_sidecar_restart): (Option<Timestamp>, Option<Timestamp>) =
        (None, None);
    let finished = |cs: &k8s_openapi::api::core::v1::ContainerStatus| {
        cs.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.clone())
    };
    let mut initializing = false;
    for cs in status.init_container_statuses.iter().flatten() {
        restarts += cs.restart_count;
        last_restart = last_restart.max(finished(cs).map(|t| t.0));
        let sidecar = is_sidecar(&cs.name);
        if sidecar {
            sidecar_restarts += cs.restart_count;
            last_sidecar_restart = last_sidecar_restart.max(finished(cs).map(|t| t.0));
        }
        let state = cs.state.clone().unwrap_or_default();
        if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && cs.started == Some(true) {
            if cs.ready {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        break;
    }
    let initialized =
        status.conditions.iter().flatten().any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        for cs in status.container_statuses.iter().flatten() {
            restarts += cs.restart_count;
            last_restart = last_restart.max(finished(cs).map(|t| t.0));
            let state = cs.state.clone().unwrap_or_default();
            let waiting = state.waiting.as_ref().is_some_and(|w| w.reason.is_some());
            if !waiting && state.terminated.is_none() && cs.ready && state.running.is_some() {
                ready += 1;
            }
        }
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    let none = |s: Option<String>| s.filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into());
    let gates = match spec.readiness_gates.as_deref() {
        Some(gates) if !gates.is_empty() => {
            let true_gates = gates
                .iter()
                .filter(|g| {
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == g.condition_type && c.status == "True")
                })
                .count();
            format!("{true_gates}/{}", gates.len())
        }
        _ => "<none>".into(),
    };
    vec![
        json!(pod.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{total}")),
        json!(summary(pod)),
        json!(restarts_cell),
        json!(since(pod.metadata.creation_timestamp.as_ref().map(|t| t.0), now)),
        json!(none(status.pod_ip.clone())),
        json!(none(spec.node_name.clone())),
        json!(none(status.nominated_node_name.clone())),
        json!(gates),
    ]
}

pub fn events(events: &[(Event, Value)], version: u64, include: Include, now: Timestamp) -> Value {
    let columns = vec![
        column("Last Seen", 0, "The time at which the most recent occurrence of this event was recorded."),
        column("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
        column("Reason", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        column("Object", 0, "The object that this event is about."),
        column("Subobject", 1, "The field of the object that this event is about."),
        column("Source", 1, "The component reporting this event."),
        column("Message", 0, "A human-readable description of the status of this operation."),
        column("First Seen", 1, "The time at which the event was first recorded."),
        column("Count", 1, "The number of times this event has occurred."),
        column("Name", 1, "Name must be unique within a namespace."),
    ];
    let rows = events
        .iter()
        .map(|(e, json)| row(event_cells(e, now), json.clone(), include, None))
        .collect();
    table(version, columns, rows)
}

/// kubectl's `printEvent`, all columns.
pub fn event_cells(e: &Event, now: Timestamp) -> Vec<Value> {
    let first = since(e.first_timestamp.as_ref().map(|t| t.0), now);
    let last = match &e.last_timestamp {
        Some(Time(t)) => since(Some(*t), now),
        None => first.clone(),
    };
    let o = &e.involved_object;
    let kind = o.kind.clone().unwrap_or_default().to_lowercase();
    let target = match o.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{kind}/{n}"),
        _ => kind,
    };
    let source = e.source.clone().unwrap_or_default();
    let component = source.component.or(e.reporting_component.clone()).unwrap_or_default();
    let source = if component.is_empty() {
        String::new()
    } else {
        format!("{component}, {}", source.host.or(e.reporting_instance.clone()).unwrap_or_default())
    };
    vec![
        json!(last),
        json!(e.type_.clone().unwrap_or_default()),
        json!(e.reason.clone().unwrap_or_default()),
        json!(target),
        json!(o.field_path.clone().unwrap_or_default()),
        json!(source),
        json!(e.message.clone().unwrap_or_default().trim()),
        json!(first),
        json!(e.count.unwrap_or(1).max(1)),
        json!(e.metadata.name.clone().unwrap_or_default()),
    ]
}

/// kubectl's `translateTimestampSince`.
pub(super) fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) if t != Timestamp::UNIX_EPOCH => {
            let nanos = now.as_nanosecond() - t.as_nanosecond();
            human_duration(
                std::time::Duration::from_nanos(nanos.max(0) as u64),
                nanos < -1_999_999_999,
            )
        }
        _ => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStatus, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn running(name: &str, ready: bool, restarts: i32, last_exit: Option<i64>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            restart_count: restarts,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(Time(ts(1000))) }),
                ..Default::default()
            }),
            last_state: last_exit.map(|f| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    finished_at: Some(Time(ts(f))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                creation_timestamp: Some(Time(ts(1000))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container { name: "a".into(), ..Default::default() },
                    Container { name: "b".into(), ..Default::default() },
                ],
                node_name: Some("edge-1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.88.0.5".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Initialized".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                container_statuses: Some(statuses),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_cells_count_ready_and_restarts_with_the_last_restart_age() {
        let p = pod(vec![running("a", true, 3, Some(1200)), running("b", false, 1, Some(1300))]);
        let cells = pod_cells(&p, ts(1300 + 150));
        assert_eq!(
            cells,
            vec![
                json!("web"),
                json!("1/2"),
                json!("Running"),
                json!("4 (2m30s ago)"),
                json!("7m30s"),
                json!("10.88.0.5"),
                json!("edge-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let fresh = pod(vec![running("a", true, 0, None), running("b", true, 0, None)]);
        let cells = pod_cells(&fresh, ts(1005));
        assert_eq!(cells[1..5], [json!("2/2"), json!("Running"), json!("0"), json!("5s")]);
    }

    #[test]
    fn pod_table_shape() {
        let p = pod(vec![]);
        let json = serde_json::to_value(&p).unwrap();
        let t = pods(&[(&p, json)], 9, Include::Metadata, ts(1060));
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["cells"][1], "0/2");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
    }
}
