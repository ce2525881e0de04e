//! Routing tests: `handle` on synthetic snapshots, no HTTP.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde_json::Value;

use super::routes::{handle, Context, Request};
use super::{ApiConfig, Metrics, Snapshot};
use crate::manifest::{DesiredState, ObjectKey};
use crate::store::EventRecord;

fn pod(ns: &str, name: &str, app: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "app".into(), ..Default::default() }],
            ..Default::default()
        }),
        status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
    }
}

fn event(pod: &str, reason: &str) -> EventRecord {
    EventRecord {
        pod_uid: format!("uid-{pod}"),
        namespace: "default".into(),
        pod_name: pod.into(),
        container: Some("app".into()),
        type_: if reason == "BackOff" { "Warning" } else { "Normal" }.into(),
        reason: reason.into(),
        message: format!("{reason} message"),
        count: 1,
        first_seen: 1_700_000_000,
        last_seen: 1_700_000_000,
    }
}

fn snapshot() -> Snapshot {
    let key = |name: &str| ObjectKey { namespace: "default".into(), name: name.into() };
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let mut desired = DesiredState::default();
    desired.config_maps.insert(
        key("settings"),
        ConfigMap {
            metadata: meta("settings"),
            data: Some([("mode".to_string(), "fast".to_string())].into()),
            ..Default::default()
        },
    );
    desired.secrets.insert(
        key("db"),
        Secret {
            metadata: meta("db"),
            data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        },
    );
    Snapshot {
        pods: vec![
            pod("default", "web", "web", "Running"),
            pod("default", "job", "batch", "Succeeded"),
            pod("edge", "mqtt", "mqtt", "Running"),
        ],
        events: Arc::new(vec![
            event("web", "Pulled"),
            event("web", "BackOff"),
            event("job", "Started"),
        ]),
        desired: Arc::new(desired),
        version: 7,
        ..Default::default()
    }
}

fn get_with(path: &str, query: &str, accept: &str, show_secrets: bool) -> (u16, Value) {
    let s = snapshot();
    let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    config.show_secrets = show_secrets;
    let metrics = Metrics::default();
    let mut req = Request::get(path, query);
    req.accept = accept;
    let reply = handle(&req, &Context { snapshot: &s, config: &config, metrics: &metrics });
    (reply.status, reply.json().clone())
}

fn get(path: &str, query: &str) -> (u16, Value) {
    get_with(path, query, "", false)
}

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().into())
        .collect()
}

#[test]
fn lists_pods_all_by_namespace_and_by_selectors() {
    let (code, all) = get("/api/v1/pods", "");
    assert_eq!((code, names(&all)), (200, vec!["web".to_string(), "job".into(), "mqtt".into()]));
    assert_eq!(all["kind"], "PodList");
    assert_eq!(all["metadata"]["resourceVersion"], "7");
    assert_eq!(all["items"][0]["kind"], "Pod");
    assert_eq!(names(&get("/api/v1/namespaces/edge/pods", "").1), ["mqtt"]);
    assert_eq!(
        names(&get("/api/v1/pods", "labelSelector=app%20in%20(web,mqtt)").1),
        ["web", "mqtt"]
    );
    assert_eq!(names(&get("/api/v1/namespaces/default/pods", "labelSelector=app!=web").1), ["job"]);
    assert_eq!(
        names(
            &get(
                "/api/v1/pods",
                "fieldSelector=status.phase%3DRunning,metadata.namespace%3Ddefault"
            )
            .1
        ),
        ["web"]
    );
    assert_eq!(names(&get("/pods", "").1), ["web", "job", "mqtt"]);
    let (code, bad) = get("/api/v1/pods", "fieldSelector=spec.containers=x");
    assert_eq!(
        (code, bad["message"].as_str()),
        (400, Some("field label not supported: spec.containers"))
    );
}

#[test]
fn gets_one_pod_or_a_not_found_status() {
    let (code, p) = get("/api/v1/namespaces/default/pods/web", "");
    assert_eq!((code, p["metadata"]["name"].as_str()), (200, Some("web")));
    let (code, nf) = get("/api/v1/namespaces/edge/pods/web", "");
    assert_eq!(code, 404);
    assert_eq!(nf["message"], "pods \"web\" not found");
    assert_eq!(nf["reason"], "NotFound");
    assert_eq!(nf["details"]["kind"], "pods");
}

#[test]
fn pods_as_a_table_when_asked_like_kubectl() {
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, t) = get_with("/api/v1/namespaces/default/pods", "limit=500", accept, false);
    assert_eq!(code, 200);
    assert_eq!(t["kind"], "Table");
    let rows: Vec<Vec<Value>> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"].as_array().unwrap().clone())
        .collect();
    assert_eq!(rows[0][..4], [Value::from("web"), "0/1".into(), "Running".into(), "0".into()]);
    assert_eq!(rows[1][2], "Succeeded");
    assert_eq!(t["rows"][1]["conditions"][0]["type"], "Completed");
    let (_, plain) = get_with("/api/v1/pods", "", "application/json", false);
    assert_eq!(plain["kind"], "PodList");
}

#[test]
fn events_by_namespace_selector_and_table() {
    let (code, list) = get("/api/v1/namespaces/default/events", "");
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    // What `kubectl describe pod web` asks.
    let (_, web) = get(
        "/api/v1/namespaces/default/events",
        "fieldSelector=involvedObject.name%3Dweb%2CinvolvedObject.namespace%3Ddefault%2CinvolvedObject.uid%3Duid-web&limit=500",
    );
    let reasons: Vec<&str> =
        web["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["Pulled", "BackOff"]);
    let (_, warnings) = get("/api/v1/events", "fieldSelector=type%3DWarning");
    assert_eq!(warnings["items"][0]["reason"], "BackOff");
    assert_eq!(get("/api/v1/namespaces/edge/events", "").1["items"], Value::Array(vec![]));
    let (_, t) =
        get_with("/api/v1/events", "", "application/json;as=Table;v=v1;g=meta.k8s.io", false);
    assert_eq!(
        t["rows"][1]["cells"].as_array().unwrap()[1..4],
        [Value::from("Warning"), "BackOff".into(), "pod/web".into()]
    );
    assert_eq!(t["rows"][1]["cells"][6], "BackOff message");
    let name = web["items"][0]["metadata"]["name"].as_str().unwrap();
    let (code, one) = get(&format!("/api/v1/namespaces/default/events/{name}"), "");
    assert_eq!((code, one["reason"].as_str()), (200, Some("Pulled")));
}

#[test]
fn configmaps_and_redacted_secrets() {
    let (_, cms) = get("/api/v1/namespaces/default/configmaps", "");
    assert_eq!(cms["items"][0]["data"]["mode"], "fast");
    let (code, cm) = get("/api/v1/namespaces/default/configmaps/settings", "");
    assert_eq!((code, cm["kind"].as_str()), (200, Some("ConfigMap")));
    for (path, pick) in
        [("/api/v1/secrets", "/items/0"), ("/api/v1/namespaces/default/secrets/db", "")]
    {
        let (code, body) = get(path, "");
        assert_eq!(code, 200);
        let text = body.to_string();
        assert!(!text.contains("aHVudGVyMg") && !text.contains("hunter2"), "{text}");
        assert_eq!(body.pointer(&format!("{pick}/data/password")).unwrap(), "");
    }
    let (_, shown) = get_with("/api/v1/namespaces/default/secrets/db", "", "", true);
    assert_eq!(shown["data"]["password"], "aHVudGVyMg==");
}

#[test]
fn writes_are_refused_with_the_reason() {
    let s = snapshot();
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/".into());
    let metrics = Metrics::default();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let mut req = Request::get("/api/v1/namespaces/default/pods/web", "");
        req.method = method;
        let r = handle(&req, &Context { snapshot: &s, config: &config, metrics: &metrics });
        assert_eq!(r.status, 405);
        assert_eq!(r.json()["kind"], "Status");
        assert_eq!(r.json()["reason"], "MethodNotAllowed");
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("manifest directory is the source of truth"));
    }
}

#[test]
fn log_requests_resolve_the_container_or_explain() {
    let (code, body) = get("/api/v1/namespaces/default/pods/web/log", "container=nope");
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("container nope is not valid for pod web"))
    );
    // No container status yet: the kubelet's waiting message.
    let (code, body) = get("/api/v1/namespaces/default/pods/web/log", "");
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
    );
    let (code, _) = get("/api/v1/namespaces/default/pods/none/log", "");
    assert_eq!(code, 404);
}

#[test]
fn discovery_and_health() {
    assert_eq!(get("/api", "").1["versions"][0], "v1");
    assert_eq!(get("/apis", "").1["kind"], "APIGroupList");
    let (_, resources) = get("/api/v1", "");
    let names: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pods", "pods/log", "events", "configmaps", "secrets", "nodes"]);
    assert_eq!(get("/version", "").1["major"], "1");
    assert_eq!(get("/nope", "").0, 404);
    let s = snapshot();
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), "/".into());
    let metrics = Metrics::default();
    let ctx = Context { snapshot: &s, config: &config, metrics: &metrics };
    assert_eq!(handle(&Request::get("/healthz", ""), &ctx).body, super::Body::Text("ok".into()));
    let super::Body::Text(m) = handle(&Request::get("/metrics", ""), &ctx).body else {
        panic!("text")
    };
    assert!(m.contains("\noutpost_pods{phase=\"Running\"} 2\n"), "{m}");
    assert!(m.contains("\noutpost_pods{phase=\"Succeeded\"} 1\n"), "{m}");
}
