//! `describe pod`: kubectl's `describePod` output (describe.go), same sections, same order,
//! same alignment (Go's tabwriter, padding 2).

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Event, Pod, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::top::ContainerMetrics;
use super::TabWriter;
use crate::format::human_duration;

const L1: &str = "  ";
const L2: &str = "    ";
const L3: &str = "      ";
/// kubectl shortens longer annotations.
const MAX_ANNOTATION_LEN: usize = 140;

/// Go's `time.RFC1123Z` in UTC; the zero time for a missing one, as Go prints it.
fn rfc1123z(t: Option<&Time>) -> String {
    match t {
        Some(t) => t.0.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string(),
        None => "Mon, 01 Jan 0001 00:00:00 +0000".into(),
    }
}

fn since(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        Some(t) => {
            let nanos = now.as_nanosecond() - t.0.as_nanosecond();
            human_duration(
                std::time::Duration::from_nanos(nanos.max(0) as u64),
                nanos < -1_999_999_999,
            )
        }
        None => "<unknown>".into(),
    }
}

fn bool_word(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

pub fn describe_pod(pod: &Pod, events: &[Event], now: Timestamp) -> String {
    describe_pod_with_usage(pod, events, &BTreeMap::new(), now)
}

/// `describe_pod` plus each running container's current usage (from `outpost top`'s API),
/// which kubectl's describe does not show.
pub fn describe_pod_with_usage(
    pod: &Pod,
    events: &[Event],
    usage: &BTreeMap<String, ContainerMetrics>,
    now: Timestamp,
) -> String {
    let mut w = String::new();
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let _ = writeln!(w, "Name:\t{}", meta.name.as_deref().unwrap_or_default());
    let _ = writeln!(w, "Namespace:\t{}", meta.namespace.as_deref().unwrap_or_default());
    if let Some(p) = spec.priority {
        let _ = writeln!(w, "Priority:\t{p}");
    }
    if let Some(p) = spec.priority_class_name.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Priority Class Name:\t{p}");
    }
    if let Some(r) = spec.runtime_class_name.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Runtime Class Name:\t{r}");
    }
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Service Account:\t{sa}");
    }
    match spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        Some(n) => {
            let _ = writeln!(w, "Node:\t{n}/{}", status.host_ip.as_deref().unwrap_or_default());
        }
        None => w.push_str("Node:\t<none>\n"),
    }
    if let Some(t) = &status.start_time {
        let _ = writeln!(w, "Start Time:\t{}", rfc1123z(Some(t)));
    }
    labels(&mut w, "", "Labels", meta.labels.as_ref());
    annotations(&mut w, meta.annotations.as_ref());
    let phase = status.phase.clone().unwrap_or_default();
    match &meta.deletion_timestamp {
        Some(t) if phase != "Failed" && phase != "Succeeded" => {
            let _ = writeln!(w, "Status:\tTerminating (lasts {})", since(Some(t), now));
            let _ = writeln!(
                w,
                "Termination Grace Period:\t{}s",
                meta.deletion_grace_period_seconds.unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(w, "Status:\t{phase}");
        }
    }
    if let Some(r) = status.reason.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Reason:\t{r}");
    }
    if let Some(m) = status.message.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Message:\t{m}");
    }
    let _ = writeln!(w, "IP:\t{}", status.pod_ip.as_deref().unwrap_or_default());
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => {
            w.push_str("IPs:\n");
            for ip in ips {
                let _ = writeln!(w, "{L1}IP:\t{}", ip.ip);
            }
        }
        _ => w.push_str("IPs:\t<none>\n"),
    }
    if let Some(n) = status.nominated_node_name.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "NominatedNodeName:\t{n}");
    }
    let inits = spec.init_containers.clone().unwrap_or_default();
    if !inits.is_empty() {
        containers(
            &mut w,
            "Init Containers",
            &inits,
            status.init_container_statuses.as_deref().unwrap_or_default(),
            usage,
        );
    }
    containers(
        &mut w,
        "Containers",
        &spec.containers,
        status.container_statuses.as_deref().unwrap_or_default(),
        usage,
    );
    let conditions = status.conditions.clone().unwrap_or_default();
    if let Some(gates) = spec.readiness_gates.as_deref().filter(|g| !g.is_empty()) {
        w.push_str("Readiness Gates:\n  Type\tStatus\n");
        for g in gates {
            let s = conditions
                .iter()
                .find(|c| c.type_ == g.condition_type)
                .map_or("<none>", |c| c.status.as_str());
            let _ = writeln!(w, "{L1}{} \t{s} ", g.condition_type);
        }
    }
    if !conditions.is_empty() {
        w.push_str("Conditions:\n  Type\tStatus\n");
        for c in &conditions {
            let _ = writeln!(w, "{L1}{} \t{} ", c.type_, c.status);
        }
    }
    volumes(&mut w, spec.volumes.as_deref().unwrap_or_default());
    let _ = writeln!(w, "QoS Class:\t{}", status.qos_class.as_deref().unwrap_or("BestEffort"));
    // Not kubectl's (it shows the field nowhere): a pod in its own user namespace says so.
    if spec.host_users == Some(false) {
        w.push_str("Host Users:\tfalse (own user namespace)\n");
    }
    labels(&mut w, "", "Node-Selectors", spec.node_selector.as_ref());
    tolerations(&mut w, spec.tolerations.as_deref().unwrap_or_default());
    let mut out = TabWriter::new(0, 2);
    out.write(&w);
    let mut text = out.finish();
    // kubectl flushes before the events: they align on their own.
    text.push_str(&describe_events(events, now));
    text
}

fn labels(w: &mut String, indent: &str, title: &str, labels: Option<&BTreeMap<String, String>>) {
    let _ = write!(w, "{indent}{title}:\t");
    match labels.filter(|l| !l.is_empty()) {
        None => w.push_str("<none>\n"),
        Some(l) => {
            for (i, (k, v)) in l.iter().enumerate() {
                if i > 0 {
                    let _ = write!(w, "{indent}\t");
                }
                let _ = writeln!(w, "{k}={v}");
            }
        }
    }
}

fn annotations(w: &mut String, annotations: Option<&BTreeMap<String, String>>) {
    w.push_str("Annotations:\t");
    let keys: Vec<(&String, &String)> = annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    if keys.is_empty() {
        w.push_str("<none>\n");
        return;
    }
    for (i, (k, v)) in keys.into_iter().enumerate() {
        if i > 0 {
            w.push('\t');
        }
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            let _ = writeln!(w, "{k}:");
            for s in v.split('\n') {
                let short = if s.len() > MAX_ANNOTATION_LEN - 2 {
                    format!(
                        "{}...",
                        &s[..crate::format::floor_char_boundary(s, MAX_ANNOTATION_LEN - 2 - 3)]
                    )
                } else {
                    s.to_string()
                };
                let _ = writeln!(w, "\t  {short}");
            }
        } else {
            let _ = writeln!(w, "{k}: {v}");
        }
    }
}

fn containers(
    w: &mut String,
    label: &str,
    containers: &[Container],
    statuses: &[ContainerStatus],
    usage: &BTreeMap<String, ContainerMetrics>,
) {
    if containers.is_empty() {
        let _ = writeln!(w, "{label}: <none>");
        return;
    }
    let _ = writeln!(w, "{label}:");
    for c in containers {
        let st = statuses.iter().find(|s| s.name == c.name);
        let _ = writeln!(w, "{L1}{}:", c.name);
        if let Some(s) = st {
            let _ =
                writeln!(w, "{L2}Container ID:\t{}", s.container_id.as_deref().unwrap_or_default());
        }
        let _ = writeln!(w, "{L2}Image:\t{}", c.image.as_deref().unwrap_or_default());
        if let Some(s) = st {
            let _ = writeln!(w, "{L2}Image ID:\t{}", s.image_id);
        }
        let ports = c.ports.as_deref().unwrap_or_default();
        let proto = |p: &k8s_openapi::api::core::v1::ContainerPort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        let port_list: Vec<String> =
            ports.iter().map(|p| format!("{}/{}", p.container_port, proto(p))).collect();
        let host_list: Vec<String> =
            ports.iter().map(|p| format!("{}/{}", p.host_port.unwrap_or(0), proto(p))).collect();
        let or_none = |s: String| if s.is_empty() { "<none>".to_string() } else { s };
        if port_list.len() > 1 {
            let _ = writeln!(w, "{L2}Ports:\t{}", port_list.join(", "));
        } else {
            let _ = writeln!(w, "{L2}Port:\t{}", or_none(port_list.join(", ")));
        }
        if host_list.len() > 1 {
            let _ = writeln!(w, "{L2}Host Ports:\t{}", host_list.join(", "));
        } else {
            let _ = writeln!(w, "{L2}Host Port:\t{}", or_none(host_list.join(", ")));
        }
        if let Some(p) = &c.restart_policy {
            let _ = writeln!(w, "{L2}Restart Policy:\t{p}");
        }
        for (title, list) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(list) = list.as_deref().filter(|l| !l.is_empty()) {
                let _ = writeln!(w, "{L2}{title}:");
                for line in list.iter().flat_map(|a| a.split('\n')) {
                    let _ = writeln!(w, "{L3}{line}");
                }
            }
        }
        if let Some(s) = st {
            state(w, "State", s.state.as_ref());
            if let Some(last) = s.last_state.as_ref().filter(|l| l.terminated.is_some()) {
                state(w, "Last State", Some(last));
            }
            let _ = writeln!(w, "{L2}Ready:\t{}", bool_word(s.ready));
            let _ = writeln!(w, "{L2}Restart Count:\t{}", s.restart_count);
        }
        if let Some(u) = usage.get(&c.name) {
            let _ = writeln!(w, "{L2}Usage:");
            let _ = writeln!(w, "{L3}cpu:\t{}", u.cpu_cell());
            let _ = writeln!(w, "{L3}memory:\t{}", u.memory_cell());
        }
        if let Some(r) = &c.resources {
            for (title, map) in [("Limits", &r.limits), ("Requests", &r.requests)] {
                if let Some(map) = map.as_ref().filter(|m| !m.is_empty()) {
                    let _ = writeln!(w, "{L2}{title}:");
                    for (k, q) in map {
                        let _ = writeln!(w, "{L3}{k}:\t{}", q.0);
                    }
                }
            }
        }
        for (title, probe) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                let _ = writeln!(w, "{L2}{title}:\t{}", describe_probe(p));
            }
        }
        env(w, c);
        let mut mounts = c.volume_mounts.clone().unwrap_or_default();
        if mounts.is_empty() {
            let _ = writeln!(w, "{L2}Mounts:\t<none>");
        } else {
            let _ = writeln!(w, "{L2}Mounts:");
            mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
            for m in mounts {
                let mut flags = vec![if m.read_only == Some(true) {
                    "ro".to_string()
                } else {
                    "rw".to_string()
                }];
                if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    flags.push(format!("path={sp:?}"));
                }
                let _ = writeln!(w, "{L3}{} from {} ({})", m.mount_path, m.name, flags.join(","));
            }
        }
    }
}

fn state(w: &mut String, name: &str, state: Option<&ContainerState>) {
    let st = state.cloned().unwrap_or_default();
    if let Some(r) = &st.running {
        let _ = writeln!(w, "{L2}{name}:\tRunning");
        let _ = writeln!(w, "{L3}Started:\t{}", rfc1123z(r.started_at.as_ref()));
    } else if let Some(wt) = &st.waiting {
        let _ = writeln!(w, "{L2}{name}:\tWaiting");
        if let Some(r) = wt.reason.as_deref().filter(|s| !s.is_empty()) {
            let _ = writeln!(w, "{L3}Reason:\t{r}");
        }
    } else if let Some(t) = &st.terminated {
        let _ = writeln!(w, "{L2}{name}:\tTerminated");
        if let Some(r) = t.reason.as_deref().filter(|s| !s.is_empty()) {
            let _ = writeln!(w, "{L3}Reason:\t{r}");
        }
        if let Some(m) = t.message.as_deref().filter(|s| !s.is_empty()) {
            let _ = writeln!(w, "{L3}Message:\t{m}");
        }
        let _ = writeln!(w, "{L3}Exit Code:\t{}", t.exit_code);
        if let Some(s) = t.signal.filter(|s| *s > 0) {
            let _ = writeln!(w, "{L3}Signal:\t{s}");
        }
        let _ = writeln!(w, "{L3}Started:\t{}", rfc1123z(t.started_at.as_ref()));
        let _ = writeln!(w, "{L3}Finished:\t{}", rfc1123z(t.finished_at.as_ref()));
    } else {
        let _ = writeln!(w, "{L2}{name}:\tWaiting");
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// kubectl's `DescribeProbe`: the object's values (the agent's loader fills in the defaults).
fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(0),
        p.period_seconds.unwrap_or(0),
        p.success_threshold.unwrap_or(0),
        p.failure_threshold.unwrap_or(0)
    );
    if let Some(e) = &p.exec {
        return format!("exec [{}] {attrs}", e.command.clone().unwrap_or_default().join(" "));
    }
    if let Some(h) = &p.http_get {
        let scheme = h.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_lowercase();
        let host = h.host.clone().unwrap_or_default();
        let port = int_or_string(&h.port);
        let host = if port.is_empty() { host } else { format!("{host}:{port}") };
        return format!("http-get {scheme}://{host}{} {attrs}", h.path.clone().unwrap_or_default());
    }
    if let Some(t) = &p.tcp_socket {
        return format!(
            "tcp-socket {}:{} {attrs}",
            t.host.clone().unwrap_or_default(),
            int_or_string(&t.port)
        );
    }
    if let Some(g) = &p.grpc {
        return format!("grpc <pod>:{} {} {attrs}", g.port, g.service.clone().unwrap_or_default());
    }
    format!("unknown {attrs}")
}

fn env(w: &mut String, c: &Container) {
    if let Some(from) = c.env_from.as_deref().filter(|f| !f.is_empty()) {
        let _ = writeln!(w, "{L2}Environment Variables from:");
        for e in from {
            let (name, kind, optional) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), _) => (r.name.clone(), "ConfigMap", r.optional.unwrap_or(false)),
                (None, Some(r)) => (r.name.clone(), "Secret", r.optional.unwrap_or(false)),
                (None, None) => (String::new(), "", false),
            };
            match e.prefix.as_deref().filter(|p| !p.is_empty()) {
                None => {
                    let _ = writeln!(w, "{L3}{name}\t{kind}\tOptional: {optional}");
                }
                Some(p) => {
                    let _ =
                        writeln!(w, "{L3}{name}\t{kind} with prefix '{p}'\tOptional: {optional}");
                }
            }
        }
    }
    let vars = c.env.clone().unwrap_or_default();
    if vars.is_empty() {
        let _ = writeln!(w, "{L2}Environment:\t<none>");
        return;
    }
    let _ = writeln!(w, "{L2}Environment:");
    for e in vars {
        let Some(from) = &e.value_from else {
            for (i, line) in e.value.clone().unwrap_or_default().split('\n').enumerate() {
                if i == 0 {
                    let _ = writeln!(w, "{L3}{}:\t{line}", e.name);
                } else {
                    let _ = writeln!(w, "{L3}\t{line}");
                }
            }
            continue;
        };
        if let Some(f) = &from.field_ref {
            let _ = writeln!(
                w,
                "{L3}{}:\t ({}:{})",
                e.name,
                f.api_version.clone().unwrap_or_else(|| "v1".into()),
                f.field_path
            );
        } else if let Some(r) = &from.resource_field_ref {
            let _ = writeln!(w, "{L3}{}:\t ({})", e.name, r.resource);
        } else if let Some(s) = &from.secret_key_ref {
            let _ = writeln!(
                w,
                "{L3}{}:\t<set to the key '{}' in secret '{}'>\tOptional: {}",
                e.name,
                s.key,
                s.name,
                s.optional.unwrap_or(false)
            );
        } else if let Some(s) = &from.config_map_key_ref {
            let _ = writeln!(
                w,
                "{L3}{}:\t<set to the key '{}' of config map '{}'>\tOptional: {}",
                e.name,
                s.key,
                s.name,
                s.optional.unwrap_or(false)
            );
        }
    }
}

fn volumes(w: &mut String, volumes: &[Volume]) {
    if volumes.is_empty() {
        w.push_str("Volumes:\t<none>\n");
        return;
    }
    w.push_str("Volumes:\n");
    for v in volumes {
        let _ = writeln!(w, "{L1}{}:", v.name);
        if let Some(h) = &v.host_path {
            let t = h.type_.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "<none>".into());
            let _ = write!(
                w,
                "{L2}Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{t}\n",
                h.path
            );
        } else if let Some(e) = &v.empty_dir {
            let size =
                e.size_limit.as_ref().map(|q| q.0.clone()).filter(|q| !q.is_empty() && q != "0");
            let _ = write!(
                w,
                "{L2}Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{}\n",
                e.medium.clone().unwrap_or_default(),
                size.unwrap_or_else(|| "<unset>".into())
            );
        } else if let Some(s) = &v.secret {
            let _ = write!(
                w,
                "{L2}Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
                s.secret_name.clone().unwrap_or_default(),
                s.optional.unwrap_or(false)
            );
        } else if let Some(c) = &v.config_map {
            let _ = write!(
                w,
                "{L2}Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n",
                c.name,
                c.optional.unwrap_or(false)
            );
        } else {
            let _ = writeln!(w, "{L1}<unknown>");
        }
    }
}

fn tolerations(w: &mut String, tolerations: &[k8s_openapi::api::core::v1::Toleration]) {
    w.push_str("Tolerations:\t");
    if tolerations.is_empty() {
        w.push_str("<none>\n");
        return;
    }
    for (i, t) in tolerations.iter().enumerate() {
        if i > 0 {
            w.push('\t');
        }
        let (key, value, effect) = (
            t.key.clone().unwrap_or_default(),
            t.value.clone().unwrap_or_default(),
            t.effect.clone().unwrap_or_default(),
        );
        w.push_str(&key);
        if !value.is_empty() {
            let _ = write!(w, "={value}");
        }
        if !effect.is_empty() {
            let _ = write!(w, ":{effect}");
        }
        if t.operator.as_deref() == Some("Exists") && value.is_empty() {
            w.push_str(if key.is_empty() && effect.is_empty() {
                "op=Exists"
            } else {
                " op=Exists"
            });
        }
        if let Some(s) = t.toleration_seconds {
            let _ = write!(w, " for {s}s");
        }
        w.push('\n');
    }
}

/// kubectl's `DescribeEvents`: sorted by last time, `AGE (xN over FIRST)` for repeats.
fn describe_events(events: &[Event], now: Timestamp) -> String {
    if events.is_empty() {
        let mut tw = TabWriter::new(0, 2);
        tw.write("Events:\t<none>\n");
        return tw.finish();
    }
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    let mut w = String::from("Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    w.push_str("  ----\t------\t----\t----\t-------\n");
    for e in &events {
        let first = since(e.first_timestamp.as_ref(), now);
        let count = e.count.unwrap_or(0);
        let interval = if count > 1 {
            format!("{} (x{count} over {first})", since(e.last_timestamp.as_ref(), now))
        } else {
            first
        };
        let source = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|c| !c.is_empty())
            .or(e.reporting_component.clone())
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "{L1}{}\t{}\t{interval}\t{source}\t{}",
            e.type_.as_deref().unwrap_or_default(),
            e.reason.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default().trim()
        );
    }
    let mut tw = TabWriter::new(0, 2);
    tw.write(&w);
    tw.finish()
}
