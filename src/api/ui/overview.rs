//! `GET /` for a browser: the device and every pod at a glance, problems first.

use std::fmt::Write;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;

use super::super::routes::Request;
use super::super::table::{pod_cells, since};
use super::health::{health, why, Health};
use super::html::{esc, pod_href};
use crate::quantity::Quantity;

/// Seconds between the page's refreshes (no script needed).
pub const REFRESH_SECONDS: u32 = 5;

/// What is read from the device per request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub nano_cores: Option<i128>,
    pub memory_bytes: Option<i128>,
    pub uptime: Option<Duration>,
}

pub fn render(
    node: Option<&Node>,
    hostname: &str,
    pods: &[Pod],
    events: &[Event],
    usage: Usage,
    req: &Request,
) -> String {
    let now = req.now;
    let mut b = String::new();
    let name = node.and_then(|n| n.metadata.name.clone()).unwrap_or_else(|| hostname.into());
    let _ = write!(b, "<header><h1>{}</h1>", esc(&name));
    let _ = write!(
        b,
        "<nav><span class=\"mute\">outpost status · refreshes every {REFRESH_SECONDS} s</span>"
    );
    // Only a login has something to log out of (not the loopback listener's open pages).
    if req.signed_in {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">Log out</button></form>",
            super::LOGOUT
        );
    }
    b.push_str("</nav></header><main>");
    node_section(&mut b, node, usage);
    pods_section(&mut b, pods, events, now);
    b.push_str("</main>");
    super::html::page(&name, Some(REFRESH_SECONDS), &b, false)
}

fn node_section(b: &mut String, node: Option<&Node>, usage: Usage) {
    let status = node.and_then(|n| n.status.clone()).unwrap_or_default();
    let info = status.node_info.clone().unwrap_or_default();
    b.push_str(
        "<section aria-labelledby=\"device\"><h2 id=\"device\">Device</h2><dl class=\"facts\">",
    );
    let version = if info.kubelet_version.is_empty() {
        super::super::discovery::git_version()
    } else {
        info.kubelet_version.clone()
    };
    let _ = write!(b, "<dt>Version</dt><dd>{}</dd>", esc(&version));
    if let Some(up) = usage.uptime {
        let _ = write!(b, "<dt>Uptime</dt><dd>{}</dd>", crate::format::human_duration(up, false));
    }
    let capacity = |key: &str| {
        status
            .capacity
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|q| Quantity::parse(q).ok())
            .map(|q| q.nano_value())
    };
    if let Some(used) = usage.nano_cores {
        let _ = write!(b, "<dt>CPU in use</dt><dd>{}", cores(used));
        if let Some(total) = capacity("cpu").filter(|t| *t > 0) {
            let _ = write!(b, " of {} ({}%)", cores(total), used * 100 / total);
        }
        b.push_str("</dd>");
    }
    if let Some(used) = usage.memory_bytes {
        let _ = write!(b, "<dt>Memory in use</dt><dd>{}", bytes(used));
        // Quantities are in nano-units: capacity in bytes is nano / 1e9.
        if let Some(total) = capacity("memory").map(|n| n / 1_000_000_000).filter(|t| *t > 0) {
            let _ = write!(b, " of {} ({}%)", bytes(total), used * 100 / total);
        }
        b.push_str("</dd>");
    }
    if let Some(ip) = status.addresses.iter().flatten().find(|a| a.type_ == "InternalIP") {
        let _ = write!(b, "<dt>Address</dt><dd>{}</dd>", esc(&ip.address));
    }
    b.push_str("</dl><ul class=\"conds\" aria-label=\"Conditions\">");
    for c in status.conditions.iter().flatten() {
        // Ready is good when True; the pressures when False.
        let good = (c.type_ == "Ready") == (c.status == "True");
        let (class, word) = match (good, c.status.as_str()) {
            (true, _) => ("ok", if c.type_ == "Ready" { "yes" } else { "no" }),
            (false, "Unknown") => ("starting", "unknown"),
            (false, _) => ("problem", if c.type_ == "Ready" { "no" } else { "YES" }),
        };
        let _ =
            write!(b, "<li><span class=\"badge {class}\">{}: {word}</span></li>", esc(&c.type_));
    }
    b.push_str("</ul></section>");
}

fn cores(nano: i128) -> String {
    let milli = nano / 1_000_000;
    format!("{}.{:02} CPU", milli / 1000, (milli % 1000) / 10)
}

fn bytes(n: i128) -> String {
    const MI: i128 = 1024 * 1024;
    if n >= 1024 * MI {
        format!("{}.{} GiB", n / (1024 * MI), n % (1024 * MI) * 10 / (1024 * MI))
    } else {
        format!("{} MiB", n / MI)
    }
}

/// The pods with their health, problems first, then by namespace and name.
pub fn ordered(pods: &[Pod], now: Timestamp) -> Vec<(&Pod, Health)> {
    let mut rows: Vec<(&Pod, Health)> = pods.iter().map(|p| (p, health(p, now))).collect();
    rows.sort_by(|(a, ha), (b, hb)| {
        (ha, &a.metadata.namespace, &a.metadata.name).cmp(&(
            hb,
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
    rows
}

/// The pod's newest event (events have seconds: a warning wins a tie).
pub fn last_event<'a>(pod: &Pod, events: &'a [Event]) -> Option<&'a Event> {
    let uid = pod.metadata.uid.as_deref()?;
    events
        .iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        // Within one second, a warning is the news.
        .max_by_key(|e| {
            (e.last_timestamp.as_ref().map(|t| t.0), e.type_.as_deref() == Some("Warning"))
        })
}

fn pods_section(b: &mut String, pods: &[Pod], events: &[Event], now: Timestamp) {
    let rows = ordered(pods, now);
    let problems = rows.iter().filter(|(_, h)| *h == Health::Problem).count();
    let _ = write!(
        b,
        "<section aria-labelledby=\"pods\"><h2 id=\"pods\">Pods: {} ({} with problems)</h2>",
        rows.len(),
        problems
    );
    if rows.is_empty() {
        b.push_str("<p>No pods: the manifest directory has none.</p></section>");
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Health</th>\
         <th scope=\"col\">Pod</th><th scope=\"col\">Status</th><th scope=\"col\">Ready</th>\
         <th scope=\"col\">Restarts</th><th scope=\"col\" class=\"wide\">Age</th>\
         <th scope=\"col\" class=\"wide\">IP</th><th scope=\"col\">Last event</th></tr></thead><tbody>",
    );
    for (pod, h) in rows {
        // The same cells `kubectl get pods -o wide` prints.
        let cells = pod_cells(pod, now);
        let cell = |i: usize| cells.get(i).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = write!(
            b,
            "<tr class=\"{}\"><td><span class=\"badge {}\">{}</span></td>\
             <th scope=\"row\"><a href=\"{}\">{}</a>{}</th><td>{}",
            h.class(),
            h.class(),
            h.label(),
            pod_href(&ns, &name),
            esc(&name),
            if ns == "default" {
                String::new()
            } else {
                format!(" <span class=\"mute\">({})</span>", esc(&ns))
            },
            esc(&cell(2)),
        );
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase != cell(2) {
            let _ = write!(b, " <span class=\"mute\">(phase {})</span>", esc(phase));
        }
        if h != Health::Ok {
            if let Some(why) = why(pod) {
                let _ = write!(b, "<div class=\"why\">{}</div>", esc(&why));
            }
        }
        let _ = write!(
            b,
            "</td><td>{}</td><td>{}</td><td class=\"wide\">{}</td><td class=\"wide\">{}</td><td class=\"msg\">",
            esc(&cell(1)),
            esc(&cell(3)),
            esc(&cell(4)),
            esc(&cell(5)),
        );
        match last_event(pod, events) {
            Some(e) => {
                let _ = write!(
                    b,
                    "{} {}: {} <span class=\"mute\">({} ago)</span>",
                    esc(e.type_.as_deref().unwrap_or_default()),
                    esc(e.reason.as_deref().unwrap_or_default()),
                    esc(e.message.as_deref().unwrap_or_default()),
                    since(e.last_timestamp.as_ref().map(|t| t.0), now),
                );
            }
            None => b.push_str("<span class=\"mute\">none</span>"),
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table></div></section>");
}
