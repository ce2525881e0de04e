//! The discovery documents kubectl asks for before anything else.

use serde_json::{json, Value};

/// `GET /api`: the classic `APIVersions` answer, which kubectl accepts after the aggregated forms.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// `GET /apis`: beyond the core group, the resource metrics `kubectl top` looks for.
pub fn api_groups() -> Value {
    let [authorization, authentication] = super::review::api_groups();
    let groups = [super::resource_metrics::api_group(), authorization, authentication];
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1`: the resources served, read-only.
pub fn core_v1_resources() -> Value {
    let read = ["get", "list", "watch"];
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": read, "shortNames": ["po"]},
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": read, "shortNames": ["ev"]},
            {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": read, "shortNames": ["cm"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": read},
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": ["get", "list"], "shortNames": ["no"]},
        ]
    })
}

/// The Kubernetes version served: `/version`'s and the Node's kubelet version.
pub fn git_version() -> String {
    format!("v1.37.0-outpost.{}", env!("CARGO_PKG_VERSION"))
}

/// `GET /version`, shaped like the API server's.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "37", "gitVersion": git_version(),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc", "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}
