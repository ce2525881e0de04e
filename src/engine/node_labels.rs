//! `--node-labels`: the operator's labels on the node, in the kubelet's syntax (`k=v,k2=v2`,
//! repeatable) and with its checks (`ValidateKubeletFlags`): keys are qualified names, values
//! label values, and keys in the `kubernetes.io`/`k8s.io` namespaces only the ones a kubelet may
//! set itself (`IsKubeletLabel`), since those are reserved for Kubernetes components.

use std::collections::BTreeMap;

/// Labels a kubelet may set in the reserved namespaces (`kubeletapis.KubeletLabels`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Namespaces (and their subdomains) a kubelet may set any label in.
const KUBELET_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NodeLabelError {
    #[error("--node-labels: {item:?} is not key=value: give labels as key=value pairs separated by ',', e.g. site=plant-3,floor=2")]
    Syntax { item: String },
    #[error("--node-labels: invalid key {key:?}: a label key is an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, e.g. example.com/site")]
    Key { key: String },
    #[error("--node-labels: invalid value {value:?} of {key:?}: a label value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")]
    Value { key: String, value: String },
    #[error("--node-labels: {key:?} is in the reserved 'kubernetes.io'/'k8s.io' namespace: only keys under {} or one of {} may be set; use a prefix of your own, e.g. example.com/{}", KUBELET_NAMESPACES.join(", "), KUBELET_LABELS.join(", "), key.rsplit('/').next().unwrap_or_default())]
    Reserved { key: String },
}

/// The parsed flag value (one occurrence; occurrences merge, the later winning).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeLabels(pub BTreeMap<String, String>);

impl std::str::FromStr for NodeLabels {
    type Err = NodeLabelError;
    /// The kubelet's `mapStringString`: empty items are skipped, keys and values trimmed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut labels = BTreeMap::new();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(NodeLabelError::Syntax { item: item.into() });
            };
            let (k, v) = (k.trim(), v.trim());
            if !is_label_key(k) {
                return Err(NodeLabelError::Key { key: k.into() });
            }
            if !is_label_value(v) {
                return Err(NodeLabelError::Value { key: k.into(), value: v.into() });
            }
            if reserved(k) && !KUBELET_LABELS.contains(&k) && !kubelet_namespace(k) {
                return Err(NodeLabelError::Reserved { key: k.into() });
            }
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(NodeLabels(labels))
    }
}

fn namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(p, _)| p)
}

/// `isKubernetesLabel`: `kubernetes.io` or `k8s.io`, or a subdomain of either.
fn reserved(key: &str) -> bool {
    let ns = namespace(key);
    ["kubernetes.io", "k8s.io"].iter().any(|r| ns == *r || ns.ends_with(&format!(".{r}")))
}

fn kubelet_namespace(key: &str) -> bool {
    let ns = namespace(key);
    KUBELET_NAMESPACES.iter().any(|r| ns == *r || ns.ends_with(&format!(".{r}")))
}

pub(crate) use crate::manifest::{is_label_value, is_qualified_name as is_label_key};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(String, String)>, NodeLabelError> {
        s.parse::<NodeLabels>().map(|l| l.0.into_iter().collect())
    }

    #[test]
    fn pairs_are_parsed_like_the_kubelets_map_flag() {
        assert_eq!(
            parse("site=plant-3, example.com/floor = 2,,empty=").unwrap(),
            [
                ("empty".into(), "".into()),
                ("example.com/floor".into(), "2".into()),
                ("site".into(), "plant-3".into())
            ]
        );
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("a=1,a=2").unwrap(), [("a".into(), "2".into())], "the last wins");
        // The first '=' splits: the rest is the value, which is then invalid.
        assert!(matches!(parse("a=b=c"), Err(NodeLabelError::Value { .. })));
    }

    #[test]
    fn bad_keys_values_and_reserved_namespaces_are_refused() {
        assert_eq!(parse("site"), Err(NodeLabelError::Syntax { item: "site".into() }));
        assert_eq!(parse("-site=a"), Err(NodeLabelError::Key { key: "-site".into() }));
        assert_eq!(parse("Ex.com/a=b"), Err(NodeLabelError::Key { key: "Ex.com/a".into() }));
        assert_eq!(parse("/a=b"), Err(NodeLabelError::Key { key: "/a".into() }));
        assert_eq!(
            parse(&format!("a={}", "x".repeat(64))),
            Err(NodeLabelError::Value { key: "a".into(), value: "x".repeat(64) })
        );
        assert_eq!(
            parse("a=b c"),
            Err(NodeLabelError::Value { key: "a".into(), value: "b c".into() })
        );
        for key in ["kubernetes.io/role", "node-role.kubernetes.io/edge", "k8s.io/x", "a.k8s.io/x"]
        {
            assert_eq!(
                parse(&format!("{key}=y")),
                Err(NodeLabelError::Reserved { key: key.into() }),
                "{key}"
            );
        }
        let e = parse("node-role.kubernetes.io/edge=").unwrap_err().to_string();
        assert!(e.contains("e.g. example.com/edge"), "{e}");
        // The kubelet's own labels and namespaces are allowed.
        for key in [
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/pool",
            "x.kubelet.kubernetes.io/y",
            "topology.kubernetes.io/zone",
        ] {
            assert!(parse(&format!("{key}=v")).is_ok(), "{key}");
        }
    }
}
