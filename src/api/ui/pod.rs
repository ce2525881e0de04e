//! `GET /ui/pods/NS/NAME`: one pod for a person: its containers and why they are in their
//! state, probes, restarts, events, where it comes from, and the end of each container's log.

use std::fmt::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;

use super::super::table::{pod_cells, since};
use super::health::{health, why};
use super::html::{esc, pod_href, url_part};
use crate::engine::{FAILED_REVISION_ANNOTATION, REVISION_ANNOTATION};

/// Lines of each container's log on the page.
pub const LOG_LINES: usize = 200;

/// One container's log tail, or why there is none.
pub struct LogTail {
    pub container: String,
    pub text: Result<String, String>,
}

pub fn render(
    pod: &Pod,
    source: Option<&Path>,
    events: &[&Event],
    logs: &[LogTail],
    now: Timestamp,
) -> String {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let h = health(pod, now);
    let mut b = String::new();
    let _ = write!(
        b,
        "<nav><a href=\"/\">\u{2190} All pods</a></nav><header><h1>{} \
         <span class=\"badge {}\">{}</span></h1>",
        esc(&name),
        h.class(),
        h.label()
    );
    if let Some(why) = why(pod).filter(|_| h != super::health::Health::Ok) {
        let _ = write!(b, "<p class=\"why\">{}</p>", esc(&why));
    }
    b.push_str("</header><main>");
    facts(&mut b, pod, source, now);
    containers(&mut b, pod, events, now);
    events_section(&mut b, events, now);
    logs_section(&mut b, &ns, &name, logs);
    b.push_str("</main>");
    super::html::page(&format!("{ns}/{name}"), None, &b, true)
}

fn facts(b: &mut String, pod: &Pod, source: Option<&Path>, now: Timestamp) {
    let cells = pod_cells(pod, now);
    let cell = |i: usize| cells.get(i).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let status = pod.status.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    b.push_str("<section aria-labelledby=\"pod\"><h2 id=\"pod\">Pod</h2><dl class=\"facts\">");
    let mut fact = |k: &str, v: &str| {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    };
    fact("Namespace", pod.metadata.namespace.as_deref().unwrap_or_default());
    fact("Status", &cell(2));
    fact("Phase", status.phase.as_deref().unwrap_or("Pending"));
    fact("Ready", &cell(1));
    fact("Restarts", &cell(3));
    fact("Age", &cell(4));
    fact("IP", &cell(5));
    if let Some(q) = status.qos_class.as_deref() {
        fact("QoS class", q);
    }
    let from = match source {
        Some(path) => path.display().to_string(),
        None => annotations.get(crate::manifest::CONFIG_SOURCE).cloned().unwrap_or_default(),
    };
    fact("Manifest", &from);
    if let Some(r) = annotations.get(REVISION_ANNOTATION) {
        fact("Revision", r);
    }
    if let Some(r) = annotations.get(FAILED_REVISION_ANNOTATION) {
        fact("Failed revision", r);
    }
    if let Some(uid) = pod.metadata.uid.as_deref() {
        fact("UID", uid);
    }
    b.push_str("</dl><ul class=\"conds\" aria-label=\"Conditions\">");
    for c in status.conditions.iter().flatten() {
        let class = if c.status == "True" { "ok" } else { "problem" };
        let _ = write!(
            b,
            "<li><span class=\"badge {class}\">{}: {}</span></li>",
            esc(&c.type_),
            esc(&c.status)
        );
    }
    b.push_str("</ul></section>");
}

fn state_text(state: &ContainerState, now: Timestamp) -> (String, String) {
    if let Some(r) = &state.running {
        let at = r.started_at.as_ref().map(|t| t.0);
        return (format!("Running for {}", since(at, now)), String::new());
    }
    if let Some(w) = &state.waiting {
        return (
            format!("Waiting: {}", w.reason.as_deref().unwrap_or("")),
            w.message.clone().unwrap_or_default(),
        );
    }
    if let Some(t) = &state.terminated {
        let ago = since(t.finished_at.as_ref().map(|t| t.0), now);
        return (
            format!(
                "Terminated: {} (exit code {}) {ago} ago",
                t.reason.as_deref().unwrap_or(""),
                t.exit_code
            ),
            t.message.clone().unwrap_or_default(),
        );
    }
    ("Unknown".into(), String::new())
}

fn probes(c: Option<&Container>) -> Vec<&'static str> {
    let Some(c) = c else { return Vec::new() };
    [
        (c.startup_probe.is_some(), "startup"),
        (c.liveness_probe.is_some(), "liveness"),
        (c.readiness_probe.is_some(), "readiness"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

fn containers(b: &mut String, pod: &Pod, events: &[&Event], now: Timestamp) {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut all: Vec<(&Container, bool)> = inits.iter().map(|c| (c, true)).collect();
    all.extend(spec.containers.iter().map(|c| (c, false)));
    let statuses: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    b.push_str(
        "<section aria-labelledby=\"containers\"><h2 id=\"containers\">Containers</h2>\
         <div class=\"scroll\"><table><thead><tr><th scope=\"col\">Container</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Ready</th><th scope=\"col\">Restarts</th>\
         <th scope=\"col\">Last termination</th><th scope=\"col\">Probes</th>\
         <th scope=\"col\" class=\"wide\">Image</th></tr></thead><tbody>",
    );
    for (c, init) in all {
        let cs = statuses.iter().find(|s| s.name == c.name);
        let (state, message) = match cs.and_then(|s| s.state.as_ref()) {
            Some(st) => state_text(st, now),
            None => ("Waiting: ContainerCreating".into(), String::new()),
        };
        let bad = state.starts_with("Waiting: ")
            && !state.ends_with("ContainerCreating")
            && !state.ends_with("PodInitializing")
            || state.starts_with("Terminated") && !state.contains("(exit code 0)");
        let _ = write!(
            b,
            "<tr{}><th scope=\"row\">{}{}</th><td class=\"msg\">{}",
            if bad { " class=\"problem\"" } else { "" },
            esc(&c.name),
            if init { " <span class=\"mute\">(init)</span>" } else { "" },
            esc(&state)
        );
        if !message.is_empty() {
            let _ = write!(b, "<div class=\"why\">{}</div>", esc(&message));
        }
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        let _ = write!(
            b,
            "</td><td>{}</td><td>{}</td><td class=\"msg\">",
            yes_no(cs.map(|s| s.ready)),
            cs.map_or(0, |s| s.restart_count)
        );
        match cs.and_then(|s| s.last_state.as_ref()).and_then(|s| s.terminated.as_ref()) {
            Some(t) => {
                let _ = write!(
                    b,
                    "{} (exit code {}) {} ago",
                    esc(t.reason.as_deref().unwrap_or("")),
                    t.exit_code,
                    since(t.finished_at.as_ref().map(|t| t.0), now)
                );
                if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                    let _ = write!(b, "<div class=\"why\">{}</div>", esc(m));
                }
            }
            None => b.push_str("<span class=\"mute\">none</span>"),
        }
        b.push_str("</td><td class=\"msg\">");
        let configured = probes(Some(c));
        if configured.is_empty() {
            b.push_str("<span class=\"mute\">none</span>");
        } else {
            let _ = write!(b, "{}", configured.join(", "));
            if let Some(started) = cs.and_then(|s| s.started) {
                let _ = write!(b, "; started: {}", yes_no(Some(started)));
            }
            // The kubelet reports probe failures as Unhealthy events only.
            let field = format!("{{{}}}", c.name);
            let failed = events.iter().rev().find(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.involved_object.field_path.as_deref().is_some_and(|f| f.ends_with(&field))
            });
            if let Some(e) = failed {
                let _ = write!(
                    b,
                    "<div class=\"why\">{} ({} ago)</div>",
                    esc(e.message.as_deref().unwrap_or_default()),
                    since(e.last_timestamp.as_ref().map(|t| t.0), now)
                );
            }
        }
        let _ = write!(
            b,
            "</td><td class=\"wide\">{}</td></tr>",
            esc(c.image.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</tbody></table></div></section>");
}

fn events_section(b: &mut String, events: &[&Event], now: Timestamp) {
    b.push_str("<section aria-labelledby=\"events\"><h2 id=\"events\">Events</h2>");
    if events.is_empty() {
        b.push_str("<p class=\"mute\">No events.</p></section>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Last seen</th>\
         <th scope=\"col\">Type</th><th scope=\"col\">Reason</th><th scope=\"col\">Count</th>\
         <th scope=\"col\">Message</th></tr></thead><tbody>",
    );
    // Newest first.
    let mut sorted: Vec<&&Event> = events.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.last_timestamp.as_ref().map(|t| t.0)));
    for e in sorted {
        let type_ = e.type_.as_deref().unwrap_or_default();
        let _ = write!(
            b,
            "<tr{}><td>{} ago</td><td>{}</td><td>{}</td><td>{}</td><td class=\"msg\">{}</td></tr>",
            if type_ == "Warning" { " class=\"problem\"" } else { "" },
            since(e.last_timestamp.as_ref().map(|t| t.0), now),
            esc(type_),
            esc(e.reason.as_deref().unwrap_or_default()),
            e.count.unwrap_or(1),
            esc(e.message.as_deref().unwrap_or_default()),
        );
    }
    b.push_str("</tbody></table></div></section>");
}

fn logs_section(b: &mut String, ns: &str, name: &str, logs: &[LogTail]) {
    let _ = write!(
        b,
        "<section aria-labelledby=\"logs\"><h2 id=\"logs\">Logs (last {LOG_LINES} lines)</h2>"
    );
    for (i, log) in logs.iter().enumerate() {
        let src = format!(
            "{}/log?container={}&amp;follow=true&amp;tailLines={LOG_LINES}",
            pod_href(ns, name),
            url_part(&log.container)
        );
        let _ = write!(
            b,
            "<h3>{}</h3><p><button type=\"button\" hidden data-log=\"log-{i}\" data-src=\"{src}\">\
             Follow</button> <a href=\"{src}\">Follow as text</a></p>",
            esc(&log.container)
        );
        match &log.text {
            Ok(text) if text.is_empty() => {
                let _ = write!(
                    b,
                    "<pre id=\"log-{i}\" aria-label=\"log of {0}\"></pre>",
                    esc(&log.container)
                );
            }
            Ok(text) => {
                let _ = write!(
                    b,
                    "<pre id=\"log-{i}\" aria-label=\"log of {}\">{}</pre>",
                    esc(&log.container),
                    esc(text)
                );
            }
            Err(why) => {
                let _ = write!(b, "<p class=\"mute\" id=\"log-{i}\">{}</p>", esc(why));
            }
        }
    }
    b.push_str("</section>");
}
