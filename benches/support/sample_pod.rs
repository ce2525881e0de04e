//! A running two-container pod as the API serves it, for the API benches.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// Pod `i` (`pod-NNN`, label `app-(i % 10)`), each container restarted `restarts` times.
pub fn pod(i: usize, restarts: i32) -> Pod {
    let t = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let container = |n: usize| Container {
        name: format!("c{n}"),
        image: Some("registry.local/app:1.2.3".into()),
        command: Some(vec!["sh".into(), "-c".into(), "exec app --serve".into()]),
        ..Default::default()
    };
    let status = |n: usize| ContainerStatus {
        name: format!("c{n}"),
        image: "registry.local/app:1.2.3".into(),
        image_id: "sha256:0123456789abcdef".into(),
        container_id: Some(format!("outpost://pod-{i}/c{n}")),
        ready: true,
        started: Some(true),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(t.clone()) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:03}")),
            namespace: Some("default".into()),
            uid: Some(format!("00000000-0000-0000-0000-{i:012}")),
            labels: Some([("app".to_string(), format!("app-{}", i % 10))].into()),
            creation_timestamp: Some(t.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec { containers: vec![container(0), container(1)], ..Default::default() }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(format!("10.88.0.{}", i + 2)),
            conditions: Some(
                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                    .iter()
                    .map(|c| PodCondition {
                        type_: c.to_string(),
                        status: "True".into(),
                        last_transition_time: Some(t.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            container_statuses: Some(vec![status(0), status(1)]),
            ..Default::default()
        }),
    }
}
