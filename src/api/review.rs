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

/// Reads a review POST's body (a few hundred bytes) and answers it.
pub async fn read_and_answer(
    identity: &Identity,
    req: hyper::Request<hyper::body::Incoming>,
) -> Reply {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(body) => answer(identity, &path, &body.to_bytes()),
        Err(e) => routes::status(400, "BadRequest", &format!("cannot read the request body: {e}")),
    }
}

/// The answer to a review POST (see [`is_review`]), its body JSON or, as kubectl sends
/// built-in types, Kubernetes protobuf.
pub fn answer(identity: &Identity, path: &str, body: &[u8]) -> Reply {
    if path.contains(AUTHENTICATION) {
        return created(json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": identity.user, "groups": identity.groups}},
        }));
    }
    let review = match body.strip_prefix(PROTOBUF_MAGIC) {
        Some(envelope) => access_review_from_protobuf(envelope),
        None => serde_json::from_slice(body).map_err(|e| e.to_string()),
    };
    let review: Value = match review {
        Ok(v) => v,
        Err(e) => {
            return routes::status(
                400,
                "BadRequest",
                &format!("cannot decode the request body: {e}"),
            )
        }
    };
    let spec = &review["spec"];
    let (allowed, reason) = match (&spec["resourceAttributes"], &spec["nonResourceAttributes"]) {
        (r, _) if r.is_object() => {
            let field = |k: &str| r[k].as_str().unwrap_or("");
            let subresource = match (field("resource"), field("subresource"), field("name")) {
                // `kubectl auth can-i create pods/exec` sends the pod name "exec" (TYPE/NAME);
                // RBAC rules spell the subresource that way, and outpost creates no pods, so
                // it is read as `--subresource=exec`, what the caller means.
                ("pods", "", name) if ADMIN_SUBRESOURCES.contains(&name) => name,
                (_, subresource, _) => subresource,
            };
            decide(identity.access, field("verb"), field("resource"), subresource)
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

/// What starts a Kubernetes protobuf body, before its `runtime.Unknown` envelope.
const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

/// A protobuf message's fields: number and value (a varint, or the bytes of a
/// length-delimited field; fixed-width ones are skipped).
fn proto_fields(mut input: &[u8]) -> impl Iterator<Item = Result<(u64, ProtoValue<'_>), String>> {
    fn varint(input: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = input.split_first()?;
            *input = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    std::iter::from_fn(move || {
        if input.is_empty() {
            return None;
        }
        let malformed = || Some(Err("malformed protobuf".to_string()));
        let Some(key) = varint(&mut input) else { return malformed() };
        let value = match key & 7 {
            0 => match varint(&mut input) {
                Some(v) => ProtoValue::Varint(v),
                None => return malformed(),
            },
            2 => {
                let len = varint(&mut input).and_then(|l| usize::try_from(l).ok());
                match len.filter(|&l| l <= input.len()) {
                    Some(len) => {
                        let (bytes, rest) = input.split_at(len);
                        input = rest;
                        ProtoValue::Bytes(bytes)
                    }
                    None => return malformed(),
                }
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                if input.len() < width {
                    return malformed();
                }
                input = &input[width..];
                ProtoValue::Fixed
            }
            _ => return malformed(),
        };
        Some(Ok((key >> 3, value)))
    })
}

enum ProtoValue<'a> {
    Varint(#[allow(dead_code)] u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The string fields of a message named by number, as JSON.
fn proto_strings(message: &[u8], names: &[(u64, &str)]) -> Result<Value, String> {
    let mut object = serde_json::Map::new();
    for field in proto_fields(message) {
        if let (n, ProtoValue::Bytes(bytes)) = field? {
            if let Some((_, name)) = names.iter().find(|(number, _)| *number == n) {
                object.insert(name.to_string(), String::from_utf8_lossy(bytes).into());
            }
        }
    }
    Ok(Value::Object(object))
}

/// The length-delimited field `number` of a message.
fn proto_message(message: &[u8], number: u64) -> Result<Option<&[u8]>, String> {
    for field in proto_fields(message) {
        if let (n, ProtoValue::Bytes(bytes)) = field? {
            if n == number {
                return Ok(Some(bytes));
            }
        }
    }
    Ok(None)
}

/// A SelfSubjectAccessReview in protobuf (k8s.io/api/authorization/v1/generated.proto) as
/// the JSON the rest of this module reads: envelope field 2 (raw), then spec (2) with
/// resourceAttributes (1) or nonResourceAttributes (2).
fn access_review_from_protobuf(envelope: &[u8]) -> Result<Value, String> {
    let raw = proto_message(envelope, 2)?.ok_or("no object in the protobuf envelope")?;
    let spec = proto_message(raw, 2)?.unwrap_or_default();
    let mut out = serde_json::Map::new();
    if let Some(attributes) = proto_message(spec, 1)? {
        let names = [
            (1, "namespace"),
            (2, "verb"),
            (3, "group"),
            (4, "version"),
            (5, "resource"),
            (6, "subresource"),
            (7, "name"),
        ];
        out.insert("resourceAttributes".into(), proto_strings(attributes, &names)?);
    }
    if let Some(attributes) = proto_message(spec, 2)? {
        let names = [(1, "path"), (2, "verb")];
        out.insert("nonResourceAttributes".into(), proto_strings(attributes, &names)?);
    }
    Ok(json!({"spec": out}))
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
        // `kubectl auth can-i create pods/exec`: kubectl sends it as the pod named "exec".
        let exec_name =
            json!({"resourceAttributes": {"verb": "create", "resource": "pods", "name": "exec"}});
        assert_eq!(review(&view, exec_name.clone())["status"]["allowed"], false);
        assert_eq!(review(&admin, exec_name)["status"]["allowed"], true);
        let other =
            json!({"resourceAttributes": {"verb": "create", "resource": "pods", "name": "web"}});
        assert_eq!(review(&admin, other)["status"]["allowed"], false);
        let list = json!({"resourceAttributes": {"verb": "list", "resource": "pods"}});
        assert_eq!(review(&view, list)["status"]["allowed"], true);
        let delete = json!({"resourceAttributes": {"verb": "delete", "resource": "pods"}});
        assert_eq!(review(&admin, delete)["status"]["allowed"], false);
        let healthz = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        assert_eq!(review(&view, healthz)["status"]["allowed"], true);
        for sub in ["attach", "portforward"] {
            assert!(!decide(Access::View, "create", "pods", sub).0);
            assert!(decide(Access::Admin, "create", "pods", sub).0);
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
        assert_eq!(answer(&id, path, b"k8s\0\x12\x05ab").status, 400, "truncated protobuf");
        assert_eq!(answer(&id, path, b"{\"spec\":{}}").status, 400);
        assert!(is_review("POST", path) && !is_review("GET", path));
    }

    /// A protobuf field: key (number, wire type) and a length-delimited value.
    fn field(number: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn kubectls_protobuf_reviews_are_decoded() {
        // kubectl auth can-i create pods/exec, as client-go encodes it.
        let attributes =
            [field(1, b"default"), field(2, b"create"), field(5, b"pods"), field(6, b"exec")]
                .concat();
        let spec = field(1, &attributes);
        let type_meta =
            [field(1, b"authorization.k8s.io/v1"), field(2, b"SelfSubjectAccessReview")];
        let raw = [field(1, b""), field(2, &spec), vec![0x18, 0x01]].concat();
        let envelope = [field(1, &type_meta.concat()), field(2, &raw), field(4, b"")].concat();
        let body = [PROTOBUF_MAGIC, &envelope].concat();
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        let view = Identity { user: "bob".into(), groups: vec![], access: Access::View };
        let reply = answer(&view, path, &body);
        assert_eq!(reply.status, 201, "{:?}", reply.json());
        assert_eq!(
            reply.json()["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"})
        );
        assert_eq!(reply.json()["status"]["allowed"], false);
        let admin = Identity { access: Access::Admin, ..view };
        assert_eq!(answer(&admin, path, &body).json()["status"]["allowed"], true);
    }
}
