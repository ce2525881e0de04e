//! Requests → replies, without HTTP: the routing and the Kubernetes JSON shapes.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::{discovery, Snapshot};

/// An HTTP reply before it is put on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
}

/// Routes one request. `path` has no query string.
pub fn handle(method: &str, path: &str, snapshot: &Snapshot) -> Reply {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if !matches!(method, "GET" | "HEAD") {
        return status(
            405,
            "MethodNotAllowed",
            &format!(
                "{method} is not allowed: outpost serves a read-only API; the manifest directory \
                 is the source of truth, so edit the files there instead"
            ),
        );
    }
    match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["livez"] => Reply::ok(Value::String("ok".into())),
        ["version"] => Reply::ok(discovery::version()),
        ["api"] => Reply::ok(discovery::api_versions()),
        ["apis"] => Reply::ok(discovery::api_groups()),
        ["api", "v1"] => Reply::ok(discovery::core_v1_resources()),
        ["api", "v1", "pods"] => pod_list(snapshot, |_| true),
        ["api", "v1", "namespaces", ns, "pods"] => {
            pod_list(snapshot, |p| p.metadata.namespace.as_deref() == Some(*ns))
        }
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match snapshot.pods.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(*ns)
                    && p.metadata.name.as_deref() == Some(*name)
            }) {
                Some(pod) => Reply::ok(serde_json::to_value(pod).unwrap_or_default()),
                None => not_found("pods", name),
            }
        }
        _ => status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource: {path}"),
        ),
    }
}

fn pod_list(snapshot: &Snapshot, keep: impl Fn(&Pod) -> bool) -> Reply {
    let items: Vec<Value> = snapshot
        .pods
        .iter()
        .filter(|p| keep(p))
        .map(|p| serde_json::to_value(p).unwrap_or_default())
        .collect();
    Reply::ok(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": snapshot.version.to_string()},
        "items": items,
    }))
}

fn not_found(kind: &str, name: &str) -> Reply {
    let mut r = status(404, "NotFound", &format!("{kind} \"{name}\" not found"));
    r.body["details"] = json!({"name": name, "kind": kind});
    r
}

/// A Kubernetes `Status` object, the error shape kubectl understands.
fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply {
        status: code,
        body: json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn snapshot() -> Snapshot {
        let pod = |ns: &str, name: &str| Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Snapshot {
            pods: vec![pod("default", "web"), pod("edge", "mqtt")],
            events: Default::default(),
            version: 7,
        }
    }

    fn names(reply: &Reply) -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().into())
            .collect()
    }

    #[test]
    fn lists_all_pods_and_by_namespace() {
        let s = snapshot();
        let all = handle("GET", "/api/v1/pods", &s);
        assert_eq!((all.status, names(&all)), (200, vec!["web".to_string(), "mqtt".into()]));
        assert_eq!(all.body["kind"], "PodList");
        assert_eq!(all.body["metadata"]["resourceVersion"], "7");
        assert_eq!(all.body["items"][0]["kind"], "Pod");
        let edge = handle("GET", "/api/v1/namespaces/edge/pods", &s);
        assert_eq!(names(&edge), vec!["mqtt".to_string()]);
    }

    #[test]
    fn gets_one_pod_or_a_not_found_status() {
        let s = snapshot();
        let r = handle("GET", "/api/v1/namespaces/default/pods/web", &s);
        assert_eq!((r.status, r.body["metadata"]["name"].as_str()), (200, Some("web")));
        let r = handle("GET", "/api/v1/namespaces/edge/pods/web", &s);
        assert_eq!(r.status, 404);
        assert_eq!(r.body["message"], "pods \"web\" not found");
        assert_eq!(r.body["reason"], "NotFound");
    }

    #[test]
    fn writes_are_refused_with_the_reason() {
        let r = handle("DELETE", "/api/v1/namespaces/default/pods/web", &snapshot());
        assert_eq!(r.status, 405);
        assert_eq!(r.body["kind"], "Status");
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("manifest directory is the source of truth"));
    }

    #[test]
    fn discovery_and_health() {
        let s = snapshot();
        assert_eq!(handle("GET", "/healthz", &s).body, "ok");
        assert_eq!(handle("GET", "/api", &s).body["versions"][0], "v1");
        assert_eq!(handle("GET", "/api/v1", &s).body["resources"][0]["name"], "pods");
        assert_eq!(handle("GET", "/nope", &s).status, 404);
    }
}
