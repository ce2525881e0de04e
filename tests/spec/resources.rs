//! `runtime::spec`: quantities, cgroup resources, QoS classes and oom_score_adj, on the
//! kubelet's own examples.

use crate::support::*;
use k8s_openapi::api::core::v1::Container;
use outpost::engine::QosClass;
use outpost::quantity::{Quantity, QuantityError};
use outpost::runtime::spec::{
    linux_resources, milli_cpu_to_quota, milli_cpu_to_shares, oom_score_adj,
};
use serde_json::{json, Value};

/// (text, Value(), MilliValue())
#[test]
fn quantities_parse_exactly() {
    let cases: &[(&str, i64, i64)] = &[
        ("0", 0, 0),
        ("100m", 1, 100),
        ("1.5", 2, 1500),
        ("0.1", 1, 100),
        (".5", 1, 500),
        ("5.", 5, 5000),
        ("1n", 1, 1),
        ("1u", 1, 1),
        ("1001n", 1, 1),
        ("1k", 1000, 1_000_000),
        ("1Ki", 1024, 1_024_000),
        ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
        ("128Mi", 134_217_728, 134_217_728_000),
        ("1e3", 1000, 1_000_000),
        ("1E3", 1000, 1_000_000),
        ("1e-3", 1, 1),
        ("12e+1", 120, 120_000),
        ("1M", 1_000_000, 1_000_000_000),
        ("1E", 1_000_000_000_000_000_000, i64::MAX),
        ("+2", 2, 2000),
        ("-2", -2, -2000),
        ("007", 7, 7000),
        ("0.000000001", 1, 1),
    ];
    for (text, value, milli) in cases {
        let q: Quantity = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((q.value(), q.milli_value()), (*value, *milli), "{text}");
    }
    for bad in
        ["", "Ki", "1 Ki", " 1", "1ki", "1Kib", "1i", "1e", "1e+", ".", "+", "1.2.3", "1m1", "0x1"]
    {
        assert!(
            matches!(bad.parse::<Quantity>(), Err(QuantityError::Format(_))),
            "{bad:?} should not parse"
        );
    }
    assert!(matches!("8Ei".parse::<Quantity>(), Err(QuantityError::Overflow(_))));
    assert!(matches!("1e100".parse::<Quantity>(), Err(QuantityError::Overflow(_))));
}

#[test]
fn cpu_shares_and_quota_match_the_kubelet() {
    for (milli, shares) in [
        (0, 2),
        (1, 2),
        (2, 2),
        (3, 3),
        (100, 102),
        (500, 512),
        (1000, 1024),
        (1500, 1536),
        (300_000, 262_144),
    ] {
        assert_eq!(milli_cpu_to_shares(milli), shares, "shares of {milli}m");
    }
    for (milli, quota) in [
        (0, 0),
        (5, 1000),
        (9, 1000),
        (10, 1000),
        (11, 1100),
        (200, 20000),
        (500, 50000),
        (1000, 100_000),
        (1500, 150_000),
    ] {
        assert_eq!(milli_cpu_to_quota(milli, 100_000), quota, "quota of {milli}m");
    }
}

fn container(resources: Value) -> Container {
    serde_json::from_value(json!({"name": "c", "resources": resources})).unwrap()
}

/// (shares, period, quota, memory limit, swap)
fn check_resources(resources: Value, expected: (u64, u64, Option<i64>, Option<i64>, Option<i64>)) {
    let r = linux_resources(&container(resources.clone())).unwrap();
    let cpu = r.cpu().as_ref().unwrap();
    let memory = r.memory().as_ref();
    let got = (
        cpu.shares().unwrap(),
        cpu.period().unwrap(),
        cpu.quota(),
        memory.and_then(|m| m.limit()),
        memory.and_then(|m| m.swap()),
    );
    assert_eq!(got, expected, "resources {resources}");
}

#[test]
fn linux_resources_from_requests_and_limits() {
    check_resources(json!({}), (2, 100_000, None, None, None));
    check_resources(json!({"requests": {"cpu": "250m"}}), (256, 100_000, None, None, None));
    check_resources(json!({"limits": {"cpu": "500m"}}), (512, 100_000, Some(50_000), None, None));
    check_resources(
        json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}),
        (102, 100_000, Some(200_000), None, None),
    );
    check_resources(json!({"limits": {"cpu": "1m"}}), (2, 100_000, Some(1000), None, None));
    check_resources(
        json!({"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}),
        (2, 100_000, None, Some(134_217_728), Some(134_217_728)),
    );
    check_resources(json!({"limits": {"memory": "0.5"}}), (2, 100_000, None, Some(1), Some(1)));
}

fn qos(spec: Value) -> QosClass {
    QosClass::of(&pod(spec)).unwrap()
}

fn c(requests: Value, limits: Value) -> Value {
    json!({"name": "c", "image": "i", "resources": {"requests": requests, "limits": limits}})
}

/// The kubelet's TestComputePodQOS cases.
#[test]
fn qos_classes_on_the_kubelet_examples() {
    let none = json!({});
    let guaranteed =
        c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "100m", "memory": "100Mi"}));
    assert_eq!(qos(json!({"containers": [c(none.clone(), none.clone())]})), QosClass::BestEffort);
    assert_eq!(
        qos(json!({"containers": [c(json!({"cpu": "0", "memory": "0"}), none.clone())]})),
        QosClass::BestEffort
    );
    assert_eq!(qos(json!({"containers": [guaranteed.clone()]})), QosClass::Guaranteed);
    assert_eq!(
        qos(json!({"containers": [guaranteed.clone(), guaranteed.clone()]})),
        QosClass::Guaranteed
    );
    assert_eq!(
        qos(
            json!({"containers": [c(json!({"cpu": "100m", "memory": "100Mi", "nvidia.com/gpu": "2"}),
                                     json!({"cpu": "100m", "memory": "100Mi", "nvidia.com/gpu": "2"}))]})
        ),
        QosClass::Guaranteed
    );
    assert_eq!(
        qos(json!({"containers": [guaranteed.clone(), c(none.clone(), none.clone())]})),
        QosClass::Burstable
    );
    assert_eq!(
        qos(json!({"containers": [c(json!({"cpu": "100m"}), none.clone())]})),
        QosClass::Burstable
    );
    assert_eq!(
        qos(
            json!({"containers": [c(json!({"cpu": "100m", "memory": "100Mi"}), json!({"cpu": "200m", "memory": "100Mi"}))]})
        ),
        QosClass::Burstable
    );
    assert_eq!(
        qos(json!({"containers": [c(none.clone(), json!({"memory": "100Mi"}))]})),
        QosClass::Burstable
    );
    // Limits without requests (no API defaulting here): requests are empty, so not Guaranteed.
    assert_eq!(
        qos(json!({"containers": [c(none.clone(), json!({"cpu": "1", "memory": "1Gi"}))]})),
        QosClass::Burstable
    );
    // Init containers count.
    assert_eq!(
        qos(
            json!({"containers": [guaranteed.clone()], "initContainers": [c(json!({"cpu": "1m"}), none.clone())]})
        ),
        QosClass::Burstable
    );
    // Equal quantities written differently.
    assert_eq!(
        qos(
            json!({"containers": [c(json!({"cpu": "1", "memory": "1Gi"}), json!({"cpu": "1000m", "memory": "1024Mi"}))]})
        ),
        QosClass::Guaranteed
    );
    // Pod-level resources decide alone.
    assert_eq!(
        qos(json!({"containers": [c(none.clone(), none)],
                   "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}})),
        QosClass::Guaranteed
    );
}

fn oom(spec: Value) -> i32 {
    let p = pod(spec);
    let s = p.spec.as_ref().unwrap();
    oom_score_adj(&p, &s.containers[0], 4_000_000_000).unwrap()
}

/// The kubelet's policy_test.go: capacity 4 GB.
#[test]
fn oom_score_adj_per_qos() {
    let none = json!({});
    assert_eq!(oom(json!({"containers": [c(none.clone(), none.clone())]})), 1000);
    let g = c(json!({"cpu": "1", "memory": "1G"}), json!({"cpu": "1", "memory": "1G"}));
    assert_eq!(oom(json!({"containers": [g]})), -997);
    assert_eq!(oom(json!({"containers": [c(json!({"memory": "1G"}), none.clone())]})), 750);
    assert_eq!(oom(json!({"containers": [c(json!({"memory": "3999999999"}), none.clone())]})), 3);
    assert_eq!(oom(json!({"containers": [c(json!({"memory": "4G"}), none.clone())]})), 3);
    assert_eq!(oom(json!({"containers": [c(json!({"cpu": "100m"}), none.clone())]})), 999);
    assert_eq!(oom(json!({"containers": [c(json!({"memory": "100k"}), none.clone())]})), 999);
    assert_eq!(
        oom(
            json!({"priorityClassName": "system-node-critical", "containers": [c(none.clone(), none.clone())]})
        ),
        -997
    );
}

#[test]
fn sidecar_oom_score_is_no_higher_than_the_regular_containers() {
    let p = pod(json!({
        "containers": [c(json!({"memory": "2G"}), json!({}))],
        "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always",
                            "resources": {"requests": {"memory": "1G"}}}]
    }));
    let s = p.spec.as_ref().unwrap();
    let side = &s.init_containers.as_ref().unwrap()[0];
    assert_eq!(oom_score_adj(&p, side, 4_000_000_000).unwrap(), 500);
    assert_eq!(oom_score_adj(&p, &s.containers[0], 4_000_000_000).unwrap(), 500);
}

#[test]
fn spec_carries_resources_qos_and_oom_score() {
    let spec = Case::new(pod_with(json!({"resources": {"requests": {"cpu": "250m", "memory": "1G"}, "limits": {"memory": "2G"}}})))
        .build()
        .unwrap();
    assert_eq!(spec.qos, QosClass::Burstable);
    assert_eq!(spec.oom_score_adj, 750);
    assert_eq!(spec.spec.process().as_ref().unwrap().oom_score_adj(), Some(750));
    let r = spec.spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(256));
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(2_000_000_000));
    let err = Case::new(pod_with(json!({"resources": {"limits": {"memory": "lots"}}})))
        .build()
        .unwrap_err();
    assert_eq!(err.reason(), "CreateContainerConfigError");
}
