//! The pages rendered from synthetic snapshots: escaping, order, reasons, routing.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::super::routes::{handle, Body, Context, Request};
use super::super::{ApiConfig, Metrics, Snapshot};
use crate::store::EventRecord;

const NOW: i64 = 1_700_000_100;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn pod(name: &str, phase: &str, ready: bool, state: ContainerState) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(at(NOW - 90)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                ready,
                state: Some(state),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning { started_at: Some(at(NOW - 60)) }),
        ..Default::default()
    }
}

fn crashing() -> Pod {
    let mut p = pod(
        "crasher",
        "Running",
        false,
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some("back-off 10s restarting failed container=app pod=crasher".into()),
            }),
            ..Default::default()
        },
    );
    let cs = &mut p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0];
    cs.restart_count = 2;
    cs.last_state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 3,
            reason: Some("Error".into()),
            finished_at: Some(at(NOW - 5)),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

fn event(pod: &str, type_: &str, reason: &str, message: &str) -> EventRecord {
    EventRecord {
        pod_uid: format!("uid-{pod}"),
        namespace: "default".into(),
        pod_name: pod.into(),
        container: Some("app".into()),
        type_: type_.into(),
        reason: reason.into(),
        message: message.into(),
        count: 1,
        first_seen: NOW - 10,
        last_seen: NOW - 10,
    }
}

fn get(s: &Snapshot, config: &ApiConfig, path: &str, query: &str, accept: &str) -> (u16, Body) {
    get_as(s, config, path, query, accept, false)
}

fn get_as(
    s: &Snapshot,
    config: &ApiConfig,
    path: &str,
    query: &str,
    accept: &str,
    signed_in: bool,
) -> (u16, Body) {
    let metrics = Metrics::default();
    let mut req = Request::get(path, query);
    req.accept = accept;
    req.signed_in = signed_in;
    req.now = Timestamp::from_second(NOW).unwrap();
    let r = handle(&req, &Context { snapshot: s, config, metrics: &metrics });
    (r.status, r.body)
}

fn page(s: &Snapshot, config: &ApiConfig, path: &str) -> String {
    match get(s, config, path, "", "text/html,application/xhtml+xml,*/*;q=0.8") {
        (200, Body::Html(html)) => html,
        other => panic!("{path}: {other:?}"),
    }
}

fn config(dir: &std::path::Path) -> ApiConfig {
    ApiConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf())
}

#[test]
fn hostile_names_messages_and_log_lines_are_escaped() {
    const EVIL: &str = "<script>alert(1)</script>";
    let dir = tempfile::tempdir().unwrap();
    let name = format!("x{EVIL}\"'");
    let mut p = pod(&name, "Running", true, running());
    p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].state =
        Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some(EVIL.into()),
            }),
            ..Default::default()
        });
    let log = crate::runtime::log_path(dir.path(), &format!("uid-{name}"), "app", 0);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, format!("2024-01-01T00:00:01.000000000Z stdout F {EVIL}\n")).unwrap();
    p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].last_state =
        Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                message: Some(EVIL.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    let s = Snapshot {
        pods: vec![p],
        events: Arc::new(vec![event(&name, "Warning", "BackOff", EVIL)]),
        ..Default::default()
    };
    let config = config(dir.path());
    let overview = page(&s, &config, "/");
    let detail = page(&s, &config, &super::html::pod_href("default", &name));
    for html in [&overview, &detail] {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    }
    // The name in a link is percent-encoded, the log line is shown escaped.
    assert!(overview.contains("href=\"/ui/pods/default/x%3Cscript%3E"), "{overview}");
    assert!(detail.contains("<pre id=\"log-0\""), "{detail}");
    assert!(detail.contains("&lt;script&gt;alert(1)&lt;/script&gt;\n</pre>"), "{detail}");
}

#[test]
fn problems_come_first_and_a_failing_pod_shows_why() {
    let dir = tempfile::tempdir().unwrap();
    let pending = pod(
        "b-starting",
        "Pending",
        false,
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    );
    let s = Snapshot {
        pods: vec![pod("a-good", "Running", true, running()), pending, crashing()],
        events: Arc::new(vec![event("crasher", "Warning", "BackOff", "Back-off restarting")]),
        ..Default::default()
    };
    let html = page(&s, &config(dir.path()), "/");
    let pos = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle}: {html}"));
    assert!(pos(">crasher</a>") < pos(">b-starting</a>"));
    assert!(pos(">b-starting</a>") < pos(">a-good</a>"));
    assert!(html.contains("Pods: 3 (1 with problems)"), "{html}");
    // The reason, in words, next to the colour.
    let row = &html[pos(">crasher</a>")..pos(">b-starting</a>")];
    assert!(row.contains("CrashLoopBackOff <span class=\"mute\">(phase Running)</span>"), "{row}");
    assert!(row.contains("back-off 10s restarting failed container=app"), "{row}");
    assert!(row.contains("last exit code 3 (Error)"), "{row}");
    assert!(row.contains("Warning BackOff: Back-off restarting"), "{row}");
    let badge = &html[..pos(">crasher</a>")];
    assert!(badge.ends_with("<span class=\"badge problem\">Problem</span></td><th scope=\"row\"><a href=\"/ui/pods/default/crasher\""), "{badge}");
    assert!(html.contains("<meta http-equiv=\"refresh\""));
    assert!(html.contains("name=\"viewport\""));

    let detail = page(&s, &config(dir.path()), "/ui/pods/default/crasher");
    assert!(detail.contains("Waiting: CrashLoopBackOff"), "{detail}");
    assert!(detail.contains("Error (exit code 3) 5s ago"), "{detail}");
}

#[test]
fn a_browser_gets_the_page_and_api_clients_keep_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshot { pods: vec![pod("web", "Running", true, running())], ..Default::default() };
    let config = config(dir.path());
    let (code, body) = get(&s, &config, "/", "", "application/json");
    assert!(matches!(body, Body::Json(_)), "{body:?}");
    assert_eq!(code, 404, "today's answer to / for an API client");
    let (_, body) = get(&s, &config, "/api/v1/pods", "", "text/html");
    assert!(matches!(body, Body::Json(_)), "the API stays JSON for a browser too");
    let (code, body) = get(&s, &config, "/ui/pods/default/none", "", "text/html");
    assert!(code == 404 && matches!(body, Body::Html(_)), "{body:?}");
    let (code, body) = get(&s, &config, "/ui/pods/default/web/log", "follow=true", "");
    let Body::Log(source) = body else { panic!("{code} {body:?}") };
    assert!(source.params.follow);
}

#[test]
fn only_a_login_offers_to_log_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshot { pods: vec![pod("web", "Running", true, running())], ..Default::default() };
    let config = config(dir.path());
    let open = page(&s, &config, "/");
    assert!(open.contains(">web<") && !open.contains("Log out"), "{open}");
    let (_, body) = get_as(&s, &config, "/", "", "text/html", true);
    let Body::Html(signed_in) = body else { panic!("{body:?}") };
    assert!(signed_in.contains("action=\"/ui/logout\"") && signed_in.contains("Log out"));
}

#[test]
fn the_cookie_is_for_the_pages_alone() {
    use super::accepts_cookie;
    assert!(accepts_cookie("GET", "/"));
    assert!(accepts_cookie("GET", "/ui/pods/default/web"));
    assert!(accepts_cookie("GET", "/ui/pods/default/web/log"));
    assert!(!accepts_cookie("POST", "/ui/pods/default/web"));
    assert!(!accepts_cookie("GET", "/ui/login"));
    for path in [
        "/api/v1/pods",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/pods/web/exec",
        "/api/v1/namespaces/default/pods/web/portforward",
        "/exec/default/web/app",
        "/metrics",
    ] {
        assert!(!accepts_cookie("GET", path), "{path}");
    }
    assert!(super::redirects_to_login("GET", "/", "text/html"));
    assert!(!super::redirects_to_login("GET", "/", "application/json"));
}
