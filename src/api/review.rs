//! `kubectl auth can-i` (SelfSubjectAccessReview) and `kubectl auth whoami`
//! (SelfSubjectReview): the two POSTs the API serves, answered from the caller's identity.

use serde_json::{json, Value};

use super::auth::{Identity, ADMIN_SUBRESOURCES};
use super::routes::{self, Body, Reply};
use super::Access;

const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";

/// Whether `method path` is a review this module answers (its body must be read first).
pub fn is_review(method: &str, path: &str) -> bool {
    method == "POST"
        && matches!(
            path.trim_end_matches('/'),
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
                | "/apis/authentication.k8s.io/v1/selfsubjectreviews"
        )
}

/// The answer to a review POST (see [`is_review`]).
pub fn answer(identity: &Identity, path: &str, body: &[u8]) -> Reply {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return routes::status(400, "BadRequest", &format!("the request body is not JSON: {e}"))
        }
    };
    if path.contains(AUTHENTICATION) {
        return created(json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": identity.user, "groups": identity.groups}},
        }));
    }
    let spec = &review["spec"];
    let (allowed, reason) = match (&spec["resourceAttributes"], &spec["nonResourceAttributes"]) {
        (r, _) if r.is_object() => {
            let field = |k: &str| r[k].as_str().unwrap_or("");
            decide(identity.access, field("verb"), field("resource"), field("subresource"))
        }
        (_, n) if n.is_object() => {
            decide(identity.access, n["verb"].as_str().unwrap_or(""), "", "")
        }
        _ => {
            return routes::status(
                400,
                "BadRequest",
                "spec.resourceAttributes or spec.nonResourceAttributes is required",
            )
        }
    };
    created(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": {"allowed": allowed, "reason": reason},
    }))
}

fn created(body: Value) -> Reply {
    Reply { status: 201, body: Body::Json(body) }
}

/// Whether `access` may `verb` the resource: reads for every role, exec, attach and
/// port-forward for the admin role; nothing writes (the manifest directory is the truth).
pub fn decide(access: Access, verb: &str, resource: &str, subresource: &str) -> (bool, String) {
    let role = access.role();
    if resource == "pods" && ADMIN_SUBRESOURCES.contains(&subresource) {
        return match (access, verb) {
            (Access::Admin, "create" | "get") => {
                (true, format!("the {role} role may {subresource}"))
            }
            (Access::Admin, _) => (false, format!("pods/{subresource} takes create")),
            (Access::View, _) => {
                (false, format!("pods/{subresource} needs the admin role; this is the {role} role"))
            }
        };
    }
    match verb {
        "get" | "list" | "watch" => {
            (true, format!("the {role} role reads everything outpost serves"))
        }
        _ => (
            false,
            "outpost serves a read-only API: the manifest directory is the source of truth".into(),
        ),
    }
}

/// The two groups for `GET /apis`.
pub fn api_groups() -> [Value; 2] {
    [AUTHORIZATION, AUTHENTICATION].map(|group| {
        let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
        json!({"name": group, "versions": [version], "preferredVersion": version})
    })
}

/// `GET /apis/<group>/v1` for the review groups, `None` for other paths.
pub fn api_resources(path: &str) -> Option<Value> {
    let (group, name, kind) = match path.trim_end_matches('/') {
        "/apis/authorization.k8s.io/v1" => {
            (AUTHORIZATION, "selfsubjectaccessreviews", "SelfSubjectAccessReview")
        }
        "/apis/authentication.k8s.io/v1" => {
            (AUTHENTICATION, "selfsubjectreviews", "SelfSubjectReview")
        }
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/v1"),
        "resources": [{"name": name, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(identity: &Identity, attributes: Value) -> Value {
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": attributes});
        let reply = answer(
            identity,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 201);
        reply.json().clone()
    }

    #[test]
    fn can_i_reads_for_both_roles_and_exec_for_the_admin_only() {
        let view = Identity { user: "bob".into(), groups: vec![], access: Access::View };
        let admin = Identity { access: Access::Admin, ..view.clone() };
        let exec = json!({"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"}});
        assert_eq!(review(&view, exec.clone())["status"]["allowed"], false);
        assert_eq!(review(&admin, exec.clone())["status"]["allowed"], true);
        assert_eq!(review(&admin, exec.clone())["spec"], exec);
        let list = json!({"resourceAttributes": {"verb": "list", "resource": "pods"}});
        assert_eq!(review(&view, list)["status"]["allowed"], true);
        let delete = json!({"resourceAttributes": {"verb": "delete", "resource": "pods"}});
        assert_eq!(review(&admin, delete)["status"]["allowed"], false);
        let healthz = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        assert_eq!(review(&view, healthz)["status"]["allowed"], true);
        for sub in ["attach", "portforward"] {
            assert_eq!(decide(Access::View, "create", "pods", sub).0, false);
            assert_eq!(decide(Access::Admin, "create", "pods", sub).0, true);
        }
    }

    #[test]
    fn whoami_names_the_user_and_groups_and_bad_bodies_are_400() {
        let id =
            Identity { user: "alice".into(), groups: vec!["admin".into()], access: Access::Admin };
        let reply = answer(&id, "/apis/authentication.k8s.io/v1/selfsubjectreviews", b"{}");
        assert_eq!(
            reply.json()["status"]["userInfo"],
            json!({"username": "alice", "groups": ["admin"]})
        );
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        assert_eq!(answer(&id, path, b"nope").status, 400);
        assert_eq!(answer(&id, path, b"{\"spec\":{}}").status, 400);
        assert!(is_review("POST", path) && !is_review("GET", path));
    }
}
