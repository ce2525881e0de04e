//! The status page for people: `GET /` from a browser (`Accept: text/html`) shows the device
//! and its pods, problems first; `/ui/pods/NS/NAME` one pod with its containers, events and
//! logs. Built from the snapshot and the same functions the API's handlers use (kubectl's pod
//! cells, the events as served, the log reader, NodeMetrics), so it shows what the API
//! serves; read-only, under the listener's access rules. Plain HTML with inline CSS, served
//! from the binary; a page works without script (the overview refreshes itself), and one
//! small script adds following a log.
//!
//! Everything from manifests, events and logs goes through [`html::esc`].

mod health;
pub mod html;
pub mod login;
mod overview;
mod pod;

use std::path::Path;
use std::time::Duration;

use super::logs::{self, LogParams};
use super::node;
use super::routes::{self, Body, Context, Reply, Request};
use crate::manifest::ObjectKey;
use crate::quantity::Quantity;

/// A browser asking for a page (kubectl and other API clients never list `text/html`).
pub fn wants_html(accept: &str) -> bool {
    accept.split(',').any(|m| m.split(';').next().is_some_and(|t| t.trim() == "text/html"))
}

/// The UI's own paths under `/ui/`.
const PREFIX: &str = "/ui/";

pub const LOGIN: &str = "/ui/login";
pub const LOGOUT: &str = "/ui/logout";

/// The requests the login cookie may authenticate: the UI's pages read with GET, nothing
/// else (not the API, exec, port-forward or a POST).
pub fn accepts_cookie(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && (path == "/" || path.starts_with(PREFIX)) && path != LOGIN
}

/// A browser that is not logged in is sent to the form instead of getting a 401 `Status`.
pub fn redirects_to_login(method: &str, path: &str, accept: &str) -> bool {
    accepts_cookie(method, path) && (path != "/" || wants_html(accept))
}

/// The UI's answer, `None` for the API's paths.
pub fn route(segments: &[&str], req: &Request, ctx: &Context) -> Option<Reply> {
    let html = |status: u16, page: String| Reply { status, body: Body::Html(page) };
    // Names arrive as the page's links percent-encode them.
    let decoded: Vec<String> = match segments {
        ["ui", ..] => segments.iter().map(|s| html::decode_part(s)).collect(),
        _ => Vec::new(),
    };
    let segments: Vec<&str> = if decoded.is_empty() {
        segments.to_vec()
    } else {
        decoded.iter().map(String::as_str).collect()
    };
    let reply = match segments.as_slice() {
        [] if wants_html(req.accept) => html(200, overview_page(req, ctx)),
        ["ui"] => html(200, overview_page(req, ctx)),
        ["ui", "login"] => html(200, login::form(None)),
        ["ui", "pods", ns, name] => match routes::find_pod(ctx.snapshot, ns, name) {
            Ok(pod) => html(200, pod_page(pod, req, ctx)),
            Err(_) => html(404, not_found(ns, name)),
        },
        // The raw log (followed with `follow=true`): the page's follow mode and its link.
        ["ui", "pods", ns, name, "log"] => routes::log(req, ctx, ns, name).unwrap_or_else(|e| e),
        ["ui", ..] => html(404, not_found("", "")),
        _ => return None,
    };
    Some(reply)
}

fn not_found(ns: &str, name: &str) -> String {
    let what = if name.is_empty() {
        "No such page.".to_string()
    } else {
        format!("No pod {}/{} on this device (any more).", html::esc(ns), html::esc(name))
    };
    html::page(
        "Not found",
        None,
        &format!("<main><h1>Not found</h1><p>{what}</p><p><a href=\"/\">All pods</a></p></main>"),
        false,
    )
}

fn overview_page(req: &Request, ctx: &Context) -> String {
    let s = ctx.snapshot;
    let events: Vec<_> = routes::all_events(s).collect();
    let node = s.node.as_deref();
    // NodeMetrics as `kubectl top node` reads them.
    let metrics = node.and_then(|n| {
        let usage = node::read_usage(Path::new("/proc"))?;
        node::node_metrics(n, usage, &ctx.metrics.node_usage, req.now)
    });
    let quantity = |key: &str| -> Option<i128> {
        let q: Quantity = metrics.as_ref()?.pointer(key)?.as_str()?.parse().ok()?;
        Some(q.nano_value())
    };
    let usage = overview::Usage {
        nano_cores: quantity("/usage/cpu"),
        memory_bytes: quantity("/usage/memory").map(|n| n / 1_000_000_000),
        uptime: std::fs::read_to_string("/proc/uptime").ok().and_then(|t| {
            let secs: f64 = t.split_whitespace().next()?.parse().ok()?;
            Some(Duration::from_secs(secs as u64))
        }),
    };
    overview::render(node, &routes::hostname(), &s.pods, &events, usage, req)
}

fn pod_page(pod: &k8s_openapi::api::core::v1::Pod, req: &Request, ctx: &Context) -> String {
    let s = ctx.snapshot;
    let uid = pod.metadata.uid.as_deref();
    let events: Vec<_> =
        routes::all_events(s).filter(|e| e.involved_object.uid.as_deref() == uid).collect();
    let event_refs: Vec<_> = events.iter().collect();
    let key = ObjectKey::new(
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let source = s.desired.pods.get(&key).map(|d| d.source.as_path());
    let spec = pod.spec.clone().unwrap_or_default();
    let names =
        spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.clone());
    let logs: Vec<pod::LogTail> = names
        .map(|container| {
            let params = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(pod::LOG_LINES),
                ..Default::default()
            };
            let text = logs::resolve(pod, params, &ctx.config.state_dir)
                .map(|source| String::from_utf8_lossy(&source.read_backlog()).into_owned());
            pod::LogTail { container, text }
        })
        .collect();
    pod::render(pod, source, &event_refs, &logs, req.now)
}

#[cfg(test)]
mod tests;
