//! The kubelet's node affinity admission (`GetRequiredNodeAffinity(pod).Match(node)`, run by
//! the predicate handler after the resource fit): the pod's `nodeSelector` and its required
//! node affinity must both match the node's labels and name, or the pod is rejected with
//! `NodeAffinity`.
//!
//! `requiredDuringSchedulingIgnoredDuringExecution` matches when any of its terms does; a term
//! matches when all its `matchExpressions` (against labels) and `matchFields` (only
//! `metadata.name`) do. A term with neither never matches, and so does a malformed one (an
//! operator without the values it needs, a non-integer `Gt`/`Lt` value), as in
//! component-helpers' lazy-error selector, which drops it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

use super::node_labels::{is_label_key, is_label_value};
use super::Rejection;

/// The predicate's name, the kubelet's reason.
pub const NODE_AFFINITY: &str = "NodeAffinity";
/// `nodeaffinity.ErrReasonPod`.
const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// What a pod's node selection is matched against.
pub struct NodeIdentity<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// `Predicate NodeAffinity failed: …` (`PredicateFailureError`) unless the pod fits the node.
pub(crate) fn admit(spec: &PodSpec, node: &NodeIdentity) -> Result<(), Rejection> {
    if matches(spec, node) {
        return Ok(());
    }
    Err(Rejection {
        reason: NODE_AFFINITY.into(),
        message: format!("Predicate {NODE_AFFINITY} failed: {ERR_REASON_POD}"),
    })
}

/// Whether both the `nodeSelector` and the required node affinity match.
pub fn matches(spec: &PodSpec, node: &NodeIdentity) -> bool {
    let selector = spec.node_selector.iter().flatten();
    if !selector.into_iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeIdentity) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| label_requirement(r, node.labels) == Some(true))
        && fields.iter().all(|r| field_requirement(r, node.name) == Some(true))
}

/// A label requirement's verdict; `None` when it is malformed (the term then never matches).
fn label_requirement(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let values = r.values.as_deref().unwrap_or_default();
    if !is_label_key(&r.key) {
        return None;
    }
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() || !values.iter().all(|v| is_label_value(v)) {
                return None;
            }
            let found = value.is_some_and(|v| values.contains(v));
            Some(if r.operator == "In" { found } else { !found })
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                return None;
            }
            Some(value.is_some() == (r.operator == "Exists"))
        }
        "Gt" | "Lt" => {
            let [bound] = values else { return None };
            let bound: i64 = bound.parse().ok()?;
            // A label that is not an integer never matches.
            let Some(v) = value.and_then(|v| v.parse::<i64>().ok()) else { return Some(false) };
            Some(if r.operator == "Gt" { v > bound } else { v < bound })
        }
        _ => None,
    }
}

/// A field requirement: `In`/`NotIn` with exactly one value. Only `metadata.name` is a node
/// field; any other key reads as empty, as a field set without it does.
fn field_requirement(r: &NodeSelectorRequirement, name: &str) -> Option<bool> {
    let [value] = r.values.as_deref().unwrap_or_default() else { return None };
    let field = if r.key == "metadata.name" { name } else { "" };
    match r.operator.as_str() {
        "In" => Some(field == value),
        "NotIn" => Some(field != value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [
            ("kubernetes.io/hostname", "edge-1"),
            ("kubernetes.io/arch", "arm64"),
            ("site", "plant-3"),
            ("floor", "2"),
            ("sensor", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn fits(yaml: &str) -> bool {
        let spec: PodSpec =
            serde_yaml::from_str(&format!("containers: [{{name: a}}]\n{yaml}")).expect(yaml);
        let labels = labels();
        matches(&spec, &NodeIdentity { name: "edge-1", labels: &labels })
    }

    fn required(terms: &str) -> String {
        format!(
            "affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}}}"
        )
    }

    fn expr(key: &str, op: &str, values: &str) -> String {
        required(&format!("[{{matchExpressions: [{{key: {key}, operator: {op}{values}}}]}}]"))
    }

    #[test]
    fn node_selector_needs_every_pair() {
        assert!(fits(""));
        assert!(fits("nodeSelector: {}"));
        assert!(fits("nodeSelector: {site: plant-3, kubernetes.io/arch: arm64}"));
        assert!(!fits("nodeSelector: {site: plant-3, floor: '3'}"));
        assert!(!fits("nodeSelector: {zone: a}"));
        assert!(fits("nodeSelector: {sensor: ''}"));
    }

    #[test]
    fn match_expression_operators() {
        let vals = |v: &str| format!(", values: {v}");
        assert!(fits(&expr("site", "In", &vals("[plant-1, plant-3]"))));
        assert!(!fits(&expr("site", "In", &vals("[plant-1]"))));
        assert!(!fits(&expr("zone", "In", &vals("[a]"))));
        assert!(fits(&expr("site", "NotIn", &vals("[plant-1]"))));
        assert!(!fits(&expr("site", "NotIn", &vals("[plant-3]"))));
        assert!(fits(&expr("zone", "NotIn", &vals("[a]"))), "absent is not in");
        assert!(fits(&expr("sensor", "Exists", "")));
        assert!(!fits(&expr("zone", "Exists", "")));
        assert!(fits(&expr("zone", "DoesNotExist", "")));
        assert!(!fits(&expr("site", "DoesNotExist", "")));
        assert!(fits(&expr("floor", "Gt", &vals("['1']"))));
        assert!(!fits(&expr("floor", "Gt", &vals("['2']"))));
        assert!(fits(&expr("floor", "Lt", &vals("['3']"))));
        assert!(!fits(&expr("floor", "Lt", &vals("['2']"))));
        assert!(!fits(&expr("site", "Gt", &vals("['1']"))), "not an integer label");
        assert!(!fits(&expr("zone", "Lt", &vals("['1']"))), "absent");
    }

    #[test]
    fn malformed_requirements_and_empty_terms_never_match() {
        let vals = |v: &str| format!(", values: {v}");
        assert!(!fits(&expr("site", "In", &vals("[]"))));
        assert!(!fits(&expr("zone", "NotIn", "")));
        assert!(!fits(&expr("sensor", "Exists", &vals("[x]"))));
        assert!(!fits(&expr("floor", "Gt", &vals("['1', '2']"))));
        assert!(!fits(&expr("floor", "Gt", &vals("[one]"))));
        assert!(!fits(&expr("site", "Like", &vals("[plant-3]"))));
        assert!(!fits(&expr("'bad key!'", "DoesNotExist", "")));
        assert!(!fits(&required("[]")), "no terms");
        assert!(!fits(&required("[{}]")), "an empty term");
        // A malformed term is dropped; another term can still match.
        assert!(fits(&required(
            "[{matchExpressions: [{key: site, operator: In, values: []}]}, \
             {matchExpressions: [{key: site, operator: In, values: [plant-3]}]}]"
        )));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded_with_the_selector() {
        let t = |a: &str, b: &str| {
            required(&format!(
                "[{{matchExpressions: [{{key: site, operator: In, values: [{a}]}}, \
                   {{key: floor, operator: In, values: ['{b}']}}]}}]"
            ))
        };
        assert!(fits(&t("plant-3", "2")));
        assert!(!fits(&t("plant-3", "1")), "both requirements of a term");
        assert!(fits(&required(
            "[{matchExpressions: [{key: zone, operator: Exists}]}, \
              {matchExpressions: [{key: site, operator: Exists}]}]"
        )));
        // nodeSelector and affinity must both match.
        assert!(!fits(&format!("nodeSelector: {{zone: a}}\n{}", t("plant-3", "2"))));
    }

    #[test]
    fn match_fields_know_the_node_name_only() {
        let field = |key: &str, op: &str, v: &str| {
            required(&format!("[{{matchFields: [{{key: {key}, operator: {op}, values: {v}}}]}}]"))
        };
        assert!(fits(&field("metadata.name", "In", "[edge-1]")));
        assert!(!fits(&field("metadata.name", "In", "[edge-2]")));
        assert!(fits(&field("metadata.name", "NotIn", "[edge-2]")));
        assert!(!fits(&field("metadata.name", "NotIn", "[edge-1]")));
        assert!(!fits(&field("metadata.name", "In", "[edge-1, edge-2]")), "one value only");
        assert!(!fits(&field("metadata.name", "Exists", "[]")));
        assert!(!fits(&field("metadata.uid", "In", "[edge-1]")));
        assert!(fits(&field("metadata.uid", "NotIn", "[edge-1]")));
    }

    #[test]
    fn the_rejection_is_the_kubelets() {
        let spec: PodSpec =
            serde_yaml::from_str("containers: [{name: a}]\nnodeSelector: {zone: a}").unwrap();
        let labels = labels();
        assert_eq!(
            admit(&spec, &NodeIdentity { name: "edge-1", labels: &labels }),
            Err(Rejection {
                reason: "NodeAffinity".into(),
                message: "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into()
            })
        );
    }
}
