//! Node affinity admission: a pod whose `nodeSelector` or required node affinity does not
//! match the node's labels is rejected (`NodeAffinity`) like the kubelet's predicate handler;
//! a matching one runs.

use super::admission::{add, node};
use super::sim::*;
use crate::engine::NodeConfig;

fn labelled() -> NodeConfig {
    let mut n = node();
    n.name = "edge-1".into();
    n.labels = [("kubernetes.io/hostname", "edge-1"), ("site", "plant-3")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

fn selecting(name: &str, spec: &str) -> String {
    format!("metadata: {{name: {name}}}\nspec:\n  containers:\n  - {{name: app, image: busybox}}\n{spec}")
}

#[test]
fn a_pod_selecting_another_node_is_rejected_with_node_affinity_and_a_matching_one_runs() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(labelled());
    add(&mut sim, "a.yaml", &selecting("here", "  nodeSelector: {site: plant-3}\n"));
    add(&mut sim, "b.yaml", &selecting("there", "  nodeSelector: {site: plant-1}\n"));
    add(
        &mut sim,
        "c.yaml",
        &selecting(
            "named",
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchFields: [{key: metadata.name, operator: In, values: [edge-2]}]\n",
        ),
    );
    sim.run_until(0);
    let events = sim.take();
    let message =
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";
    for uid in ["uid-there", "uid-named"] {
        let s = sim.status_of(uid).unwrap();
        assert_eq!(
            (s.phase.as_deref(), s.reason.as_deref(), s.message),
            (Some("Failed"), Some("NodeAffinity"), Some(format!("Pod was rejected: {message}")))
        );
    }
    let rejections: Vec<&String> = events.iter().filter(|e| e.contains("NodeAffinity")).collect();
    assert_eq!(rejections, [&format!("0 Event Warning NodeAffinity: {message}"); 2]);
    assert_eq!(sim.status_of("uid-here").unwrap().phase.as_deref(), Some("Running"));
}

/// `AdmissionCheck` runs the resource fit first; the kubelet reports the first failure.
#[test]
fn a_pod_that_neither_fits_nor_matches_is_out_of_cpu() {
    let mut sim = Sim::new(&[]);
    sim.engine.set_node(labelled());
    let yaml = "metadata: {name: big}\nspec:\n  nodeSelector: {site: plant-1}\n  containers:\n  - {name: app, image: busybox, resources: {requests: {cpu: '3'}}}\n";
    add(&mut sim, "a.yaml", yaml);
    sim.run_until(0);
    assert_eq!(sim.status_of("uid-big").unwrap().reason.as_deref(), Some("OutOfcpu"));
}
