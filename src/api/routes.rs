//! Requests → replies, without HTTP: the routing and the Kubernetes JSON shapes.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::logs::{self, LogParams, LogSource};
use super::resource_metrics as usage;
use super::selector::{FieldSelector, Fields, LabelSelector};
use super::table::{self, Include};
use super::watch::{self, WatchRequest};
use super::{
    discovery, events, node, objects, review, Access, ApiConfig, Metrics, Query, Snapshot,
};

/// One request, as far as routing cares.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub query: Query,
    /// The `Accept` header (kubectl asks for Tables through it).
    pub accept: &'a str,
    pub now: Timestamp,
    /// Set by the listener: what this caller may do.
    pub access: Access,
    /// Authenticated by the status page's login cookie (its pages then offer to log out).
    pub signed_in: bool,
}

impl<'a> Request<'a> {
    /// A GET at the wall clock's now.
    pub fn get(path: &'a str, query: &str) -> Self {
        Self {
            method: "GET",
            path,
            query: Query::parse(query),
            accept: "",
            now: crate::format::now(),
            access: Access::View,
            signed_in: false,
        }
    }
}

/// An HTTP reply before it is put on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Json(Value),
    /// `text/plain` (health checks, metrics).
    Text(String),
    /// A status page (`ui`).
    Html(String),
    /// Container output, streamed by the server.
    Log(Box<LogSource>),
    /// A watch's events, streamed by the server.
    Watch(Box<WatchRequest>),
}

impl Reply {
    pub(super) fn ok(body: Value) -> Self {
        Self { status: 200, body: Body::Json(body) }
    }

    fn text(body: String) -> Self {
        Self { status: 200, body: Body::Text(body) }
    }

    /// The JSON body (a `Null` for other bodies), for tests and callers that only want JSON.
    pub fn json(&self) -> &Value {
        static NULL: Value = Value::Null;
        match &self.body {
            Body::Json(v) => v,
            _ => &NULL,
        }
    }
}

/// What handlers read besides the request.
pub struct Context<'a> {
    pub snapshot: &'a Snapshot,
    pub config: &'a ApiConfig,
    pub metrics: &'a Metrics,
}

/// Routes one request.
pub fn handle(req: &Request, ctx: &Context) -> Reply {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    if !matches!(req.method, "GET" | "HEAD") {
        return status(
            405,
            "MethodNotAllowed",
            &format!(
                "{} is not allowed: outpost serves a read-only API; the manifest directory is \
                 the source of truth, so edit the files there instead",
                req.method
            ),
        );
    }
    if let Some(reply) = super::ui::route(&segments, req, ctx) {
        return reply;
    }
    if let Some(reply) = watch::route(&segments, req, ctx) {
        return reply;
    }
    let s = ctx.snapshot;
    let table = wants_table(req.accept);
    let result = match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["livez"] => return Reply::text("ok".into()),
        ["metrics"] => {
            let mut text = ctx.metrics.render(s);
            text.push_str(&usage::prometheus(&s.pods, &ctx.config.cgroup_root));
            return Reply::text(text);
        }
        ["version"] => return Reply::ok(discovery::version()),
        // outpost's own: the manifest URLs (`outpost get sources`).
        ["outpost", "v1", "sources"] => {
            return Reply::ok(json!({
                "kind": "SourceList",
                "apiVersion": "outpost/v1",
                "items": ctx.metrics.sources(),
            }))
        }
        ["api"] => return Reply::ok(discovery::api_versions()),
        ["apis"] => return Reply::ok(discovery::api_groups()),
        ["api", "v1"] => return Reply::ok(discovery::core_v1_resources()),
        ["apis", "authorization.k8s.io" | "authentication.k8s.io", "v1"] => {
            return Reply::ok(review::api_resources(req.path).unwrap_or_default())
        }
        ["apis", usage::GROUP] => return Reply::ok(usage::api_group()),
        ["apis", usage::GROUP, "v1beta1"] => return Reply::ok(usage::api_resources()),
        ["apis", usage::GROUP, "v1beta1", "pods"] => pod_metrics(req, ctx, None),
        ["apis", usage::GROUP, "v1beta1", "namespaces", ns, "pods"] => {
            pod_metrics(req, ctx, Some(ns))
        }
        ["apis", usage::GROUP, "v1beta1", "namespaces", ns, "pods", name] => {
            let (root, tracker) = (&ctx.config.cgroup_root, &ctx.metrics.usage);
            find_pod(s, ns, name)
                .ok()
                .and_then(|p| {
                    usage::pod_metrics(p, root, tracker, req.now, &mut Default::default())
                })
                .map(Reply::ok)
                // metrics-server names the object namespace/name.
                .ok_or_else(|| not_found("podmetrics.metrics.k8s.io", &format!("{ns}/{name}")))
        }
        ["apis", usage::GROUP, "v1beta1", "nodes"] => node::metrics(req, ctx, None),
        ["apis", usage::GROUP, "v1beta1", "nodes", name] => node::metrics(req, ctx, Some(name)),
        ["apis", "coordination.k8s.io", "v1", "namespaces", node::NODE_LEASE_NAMESPACE, "leases", name] => {
            node::lease(ctx, name)
        }
        ["api", "v1", "nodes"] => node::get(req, ctx, None, table),
        ["api", "v1", "nodes", name] => node::get(req, ctx, Some(name), table),
        // The kubelet's own endpoint: the PodList of this node.
        ["pods"] => pods(req, s, None, false),
        ["api", "v1", "pods"] => pods(req, s, None, table),
        ["api", "v1", "namespaces", ns, "pods"] => pods(req, s, Some(ns), table),
        ["api", "v1", "namespaces", ns, "pods", name] => find_pod(s, ns, name).map(|p| {
            // `kubectl get pod X` (and `-w`, which watches from it) prints it as a Table.
            if table {
                let include = Include::parse(req.query.get("includeObject"));
                return Reply::ok(table::pods(&[(p, to_json(p))], s.version, include, req.now));
            }
            Reply::ok(to_json(p))
        }),
        ["api", "v1", "namespaces", ns, "pods", name, "log"] => log(req, ctx, ns, name),
        ["api", "v1", "events"] => events(req, s, None, table),
        ["api", "v1", "namespaces", ns, "events"] => events(req, s, Some(ns), table),
        ["api", "v1", "namespaces", ns, "events", name] => event(s, ns, name),
        ["api", "v1", "configmaps"] => configmaps(req, s, None),
        ["api", "v1", "namespaces", ns, "configmaps"] => configmaps(req, s, Some(ns)),
        ["api", "v1", "namespaces", ns, "configmaps", name] => {
            match objects::config_maps(&s.desired, Some(ns))
                .find(|c| c.metadata.name.as_deref() == Some(*name))
            {
                Some(c) => Ok(Reply::ok(versioned(c, &s.versions.config_maps))),
                None => Err(not_found("configmaps", name)),
            }
        }
        ["api", "v1", "secrets"] => secrets(req, ctx, None),
        ["api", "v1", "namespaces", ns, "secrets"] => secrets(req, ctx, Some(ns)),
        ["api", "v1", "namespaces", ns, "secrets", name] => {
            match objects::secrets(&s.desired, Some(ns), ctx.config.show_secrets)
                .find(|c| c.metadata.name.as_deref() == Some(*name))
            {
                Some(c) => Ok(Reply::ok(versioned(&c, &s.versions.secrets))),
                None => Err(not_found("secrets", name)),
            }
        }
        _ => Err(status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource: {}", req.path),
        )),
    };
    result.unwrap_or_else(|e| e)
}

/// kubectl's `get` asks `application/json;as=Table;v=v1;g=meta.k8s.io, application/json`.
pub(super) fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    })
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// A ConfigMap or Secret with its resourceVersion.
fn versioned<
    T: serde::Serialize
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    o: &T,
    versions: &std::collections::BTreeMap<crate::manifest::ObjectKey, u64>,
) -> Value {
    let mut v = to_json(o);
    watch::stamp(&mut v, watch::version_of(versions, o.metadata()));
    v
}

pub(super) fn selectors(
    req: &Request,
    fields: Fields,
) -> Result<(LabelSelector, FieldSelector), Reply> {
    let bad = |e: super::selector::SelectorError| status(400, "BadRequest", &e.to_string());
    let labels =
        LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default()).map_err(bad)?;
    let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or_default(), fields)
        .map_err(bad)?;
    Ok((labels, fields))
}

pub(super) fn list(kind: &str, version: u64, items: Vec<Value>) -> Reply {
    Reply::ok(json!({
        "kind": kind,
        "apiVersion": "v1",
        "metadata": {"resourceVersion": version.to_string()},
        "items": items,
    }))
}

fn pods(req: &Request, s: &Snapshot, ns: Option<&str>, table: bool) -> Result<Reply, Reply> {
    let (labels, fields) = selectors(req, Fields::Pod)?;
    let selected: Vec<(&Pod, Value)> = s
        .pods
        .iter()
        .filter(|p| ns.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns)))
        .filter(|p| labels.matches(p.metadata.labels.as_ref()))
        .map(|p| (p, to_json(p)))
        .filter(|(_, json)| fields.matches(json))
        .collect();
    if table {
        let include = Include::parse(req.query.get("includeObject"));
        return Ok(Reply::ok(table::pods(&selected, s.version, include, req.now)));
    }
    Ok(list("PodList", s.version, selected.into_iter().map(|(_, v)| v).collect()))
}

/// `kubectl top pod`: metrics of the selected pods that have any.
fn pod_metrics(req: &Request, ctx: &Context, ns: Option<&str>) -> Result<Reply, Reply> {
    let (labels, fields) = selectors(req, Fields::Pod)?;
    let pods = ctx
        .snapshot
        .pods
        .iter()
        .filter(|p| ns.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns)))
        .filter(|p| labels.matches(p.metadata.labels.as_ref()))
        .filter(|p| fields.matches(&to_json(p)));
    Ok(Reply::ok(usage::pod_metrics_list(
        pods,
        &ctx.config.cgroup_root,
        &ctx.metrics.usage,
        req.now,
    )))
}

pub(super) fn find_pod<'a>(s: &'a Snapshot, ns: &str, name: &str) -> Result<&'a Pod, Reply> {
    s.pods
        .iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| not_found("pods", name))
}

pub(super) fn log(req: &Request, ctx: &Context, ns: &str, name: &str) -> Result<Reply, Reply> {
    let pod = find_pod(ctx.snapshot, ns, name)?;
    let bad = |m: String| status(400, "BadRequest", &m);
    let params = LogParams::parse(&req.query, req.now).map_err(bad)?;
    let source = logs::resolve(pod, params, &ctx.config.state_dir).map_err(bad)?;
    Ok(Reply { status: 200, body: Body::Log(Box::new(source)) })
}

/// The hostname, the node name when a pod does not say.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn all_events(
    s: &Snapshot,
) -> impl Iterator<Item = k8s_openapi::api::core::v1::Event> + '_ {
    let node = hostname();
    s.events.iter().enumerate().map(move |(i, r)| {
        let mut e = events::to_event(r, &s.pods, &node);
        e.metadata.resource_version = s.versions.events.get(i).map(u64::to_string);
        e
    })
}

fn events(req: &Request, s: &Snapshot, ns: Option<&str>, table: bool) -> Result<Reply, Reply> {
    let (labels, fields) = selectors(req, Fields::Event)?;
    let selected: Vec<_> = all_events(s)
        .filter(|e| ns.is_none_or(|ns| e.metadata.namespace.as_deref() == Some(ns)))
        .filter(|e| labels.matches(e.metadata.labels.as_ref()))
        .map(|e| {
            let json = to_json(&e);
            (e, json)
        })
        .filter(|(_, json)| fields.matches(json))
        .collect();
    if table {
        let include = Include::parse(req.query.get("includeObject"));
        return Ok(Reply::ok(table::events(&selected, s.version, include, req.now)));
    }
    Ok(list("EventList", s.version, selected.into_iter().map(|(_, v)| v).collect()))
}

fn event(s: &Snapshot, ns: &str, name: &str) -> Result<Reply, Reply> {
    all_events(s)
        .find(|e| {
            e.metadata.namespace.as_deref() == Some(ns) && e.metadata.name.as_deref() == Some(name)
        })
        .map(|e| Reply::ok(to_json(&e)))
        .ok_or_else(|| not_found("events", name))
}

fn configmaps(req: &Request, s: &Snapshot, ns: Option<&str>) -> Result<Reply, Reply> {
    let (labels, fields) = selectors(req, Fields::Object)?;
    let items = objects::config_maps(&s.desired, ns)
        .filter(|c| labels.matches(c.metadata.labels.as_ref()))
        .map(|c| versioned(c, &s.versions.config_maps))
        .filter(|v| fields.matches(v))
        .collect();
    Ok(list("ConfigMapList", s.version, items))
}

fn secrets(req: &Request, ctx: &Context, ns: Option<&str>) -> Result<Reply, Reply> {
    let (labels, fields) = selectors(req, Fields::Object)?;
    let s = ctx.snapshot;
    let items = objects::secrets(&s.desired, ns, ctx.config.show_secrets)
        .filter(|c| labels.matches(c.metadata.labels.as_ref()))
        .map(|c| versioned(&c, &s.versions.secrets))
        .filter(|v| fields.matches(v))
        .collect();
    Ok(list("SecretList", s.version, items))
}

pub(super) fn not_found(kind: &str, name: &str) -> Reply {
    let mut r = status(404, "NotFound", &format!("{kind} \"{name}\" not found"));
    if let Body::Json(body) = &mut r.body {
        body["details"] = json!({"name": name, "kind": kind});
    }
    r
}

/// A Kubernetes `Status` object, the error shape kubectl understands.
pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply {
        status: code,
        body: Body::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        })),
    }
}
