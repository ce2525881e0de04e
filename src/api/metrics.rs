//! Prometheus `/metrics`, text format 0.0.4, written by hand: pods by phase and container
//! restarts (from the snapshot), probe and image counters (updated by the agent), and the
//! agent's own memory and CPU (from /proc/self).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::engine::ProbeKind;

use super::Snapshot;

/// Upper bounds of the probe duration histogram, in seconds (the kubelet's prober uses the
/// Prometheus defaults; these stop at 10 s, a long probe timeout).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const KINDS: [(ProbeKind, &str); 3] = [
    (ProbeKind::Startup, "Startup"),
    (ProbeKind::Liveness, "Liveness"),
    (ProbeKind::Readiness, "Readiness"),
];

#[derive(Debug, Default)]
struct ProbeStats {
    successful: AtomicU64,
    failed: AtomicU64,
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
}

/// Counters the agent bumps; lock-free so probes never wait for a scrape.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The last CPU readings of running containers, for rates (`kubectl top`).
    pub usage: super::UsageTracker,
    /// The node's last CPU readings (`kubectl top node`).
    pub node_usage: super::UsageTracker,
    probes: [ProbeStats; 3],
    image_pulls_ok: AtomicU64,
    image_pulls_failed: AtomicU64,
    /// The manifest URLs' statuses, updated by their poller.
    sources: std::sync::OnceLock<crate::watch::SourceStatuses>,
    rollbacks: AtomicU64,
}

impl Metrics {
    /// One probe run finished, after `took`.
    pub fn probe(&self, kind: ProbeKind, success: bool, took: Duration) {
        let i = KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        let p = &self.probes[i];
        if success { &p.successful } else { &p.failed }.fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (bucket, le) in p.buckets.iter().zip(BUCKETS) {
            if secs <= le {
                bucket.fetch_add(1, Relaxed);
            }
        }
        p.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// One image pull (a lookup in the local store) finished.
    pub fn image_pull(&self, success: bool) {
        if success { &self.image_pulls_ok } else { &self.image_pulls_failed }.fetch_add(1, Relaxed);
    }

    /// Where the manifest URLs' statuses are read (set once at start).
    pub fn set_sources(&self, statuses: crate::watch::SourceStatuses) {
        let _ = self.sources.set(statuses);
    }

    /// The manifest URLs' statuses now, in flag order.
    pub fn sources(&self) -> Vec<crate::watch::SourceStatus> {
        self.sources
            .get()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Revisions that failed their rollout since the agent started (safe updates).
    pub fn set_rollbacks(&self, n: u64) {
        self.rollbacks.store(n, Relaxed);
    }

    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        header(o, "outpost_pods", "gauge", "Pods on this node by phase.");
        for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
            let n = snapshot
                .pods
                .iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == phase
                })
                .count();
            let _ = writeln!(o, "outpost_pods{{phase=\"{phase}\"}} {n}");
        }
        header(
            o,
            "outpost_container_restarts_total",
            "counter",
            "Restarts of each container (its restartCount).",
        );
        for pod in &snapshot.pods {
            let (ns, name) = (
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
            );
            let status = pod.status.as_ref();
            let all = status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten()
                .chain(status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten());
            for cs in all {
                let _ = writeln!(
                    o,
                    "outpost_container_restarts_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {}",
                    escape(ns),
                    escape(name),
                    escape(&cs.name),
                    cs.restart_count
                );
            }
        }
        header(o, "outpost_probe_total", "counter", "Probe runs by type and result.");
        for ((_, kind), p) in KINDS.iter().zip(&self.probes) {
            for (result, n) in [("successful", &p.successful), ("failed", &p.failed)] {
                let _ = writeln!(
                    o,
                    "outpost_probe_total{{probe_type=\"{kind}\",result=\"{result}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        header(o, "outpost_probe_duration_seconds", "histogram", "Probe run durations.");
        for ((_, kind), p) in KINDS.iter().zip(&self.probes) {
            for (le, n) in BUCKETS.iter().zip(&p.buckets) {
                let _ = writeln!(
                    o,
                    "outpost_probe_duration_seconds_bucket{{probe_type=\"{kind}\",le=\"{le}\"}} {}",
                    n.load(Relaxed)
                );
            }
            let count = p.successful.load(Relaxed) + p.failed.load(Relaxed);
            let _ = writeln!(o, "outpost_probe_duration_seconds_bucket{{probe_type=\"{kind}\",le=\"+Inf\"}} {count}");
            let sum = p.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ =
                writeln!(o, "outpost_probe_duration_seconds_sum{{probe_type=\"{kind}\"}} {sum}");
            let _ = writeln!(
                o,
                "outpost_probe_duration_seconds_count{{probe_type=\"{kind}\"}} {count}"
            );
        }
        header(
            o,
            "outpost_image_pulls_total",
            "counter",
            "Image pulls (local store lookups) by result.",
        );
        let _ = writeln!(
            o,
            "outpost_image_pulls_total{{result=\"success\"}} {}",
            self.image_pulls_ok.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "outpost_image_pulls_total{{result=\"failure\"}} {}",
            self.image_pulls_failed.load(Relaxed)
        );
        render_sources(o, &self.sources());
        header(
            o,
            "outpost_rollbacks_total",
            "counter",
            "Pod revisions that failed their rollout (health gate or pull) and were rolled back.",
        );
        let _ = writeln!(o, "outpost_rollbacks_total {}", self.rollbacks.load(Relaxed));
        let (rss, cpu) = process_usage();
        header(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(o, "process_resident_memory_bytes {rss}");
        header(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(o, "process_cpu_seconds_total {cpu}");
        out
    }
}

/// Per manifest URL: when it last answered, how often it was polled and failed, and how
/// many objects its version in force has.
fn render_sources(o: &mut String, sources: &[crate::watch::SourceStatus]) {
    type Value = fn(&crate::watch::SourceStatus) -> u64;
    let families: [(&str, &str, &str, Value); 4] = [
        (
            "outpost_manifest_source_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the manifest URL's last valid or unchanged answer (0: none since start).",
            |s| s.last_success.unwrap_or(0).max(0) as u64,
        ),
        ("outpost_manifest_source_fetches_total", "counter", "Manifest URL polls.", |s| {
            s.fetches_total
        }),
        (
            "outpost_manifest_source_errors_total",
            "counter",
            "Manifest URL polls that failed (unreachable, error status, invalid body).",
            |s| s.errors_total,
        ),
        (
            "outpost_manifest_source_objects",
            "gauge",
            "Objects of the manifest URL's version in force.",
            |s| s.objects as u64,
        ),
    ];
    if sources.is_empty() {
        return;
    }
    for (name, kind, help, value) in families {
        header(o, name, kind, help);
        for s in sources {
            let _ = writeln!(o, "{name}{{url=\"{}\"}} {}", escape(&s.url), value(s));
        }
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// (resident bytes, CPU seconds) of this process; zeros if /proc cannot be read.
fn process_usage() -> (u64, f64) {
    let page =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page as u64);
    // utime and stime.
    let [utime, stime] = crate::runtime::procfs::own_stat_fields([14, 15]);
    let cpu = utime.zip(stime).map_or(0.0, |(u, s)| (u + s) as f64 / ticks as f64);
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_sources_per_url_and_none_without_them() {
        let m = Metrics::default();
        assert!(!m.render(&Snapshot::default()).contains("outpost_manifest_source"));
        let status = crate::watch::SourceStatus {
            url: "https://fleet/a.yaml".into(),
            last_success: Some(1_700_000_000),
            objects: 3,
            fetches_total: 9,
            errors_total: 2,
            ..Default::default()
        };
        let never =
            crate::watch::SourceStatus { url: "http://b/\"x\"".into(), ..Default::default() };
        m.set_sources(std::sync::Arc::new(std::sync::Mutex::new(vec![status, never])));
        let text = m.render(&Snapshot::default());
        for line in [
            "outpost_manifest_source_last_success_timestamp_seconds{url=\"https://fleet/a.yaml\"} 1700000000",
            "outpost_manifest_source_last_success_timestamp_seconds{url=\"http://b/\\\"x\\\"\"} 0",
            "outpost_manifest_source_fetches_total{url=\"https://fleet/a.yaml\"} 9",
            "outpost_manifest_source_errors_total{url=\"https://fleet/a.yaml\"} 2",
            "outpost_manifest_source_objects{url=\"https://fleet/a.yaml\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn rollbacks_are_counted() {
        let m = Metrics::default();
        m.set_rollbacks(2);
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains("# TYPE outpost_rollbacks_total counter\noutpost_rollbacks_total 2\n"),
            "{text}"
        );
    }

    #[test]
    fn probe_histogram_and_counters() {
        let m = Metrics::default();
        m.probe(ProbeKind::Liveness, true, Duration::from_millis(3));
        m.probe(ProbeKind::Liveness, false, Duration::from_millis(300));
        m.image_pull(true);
        let text = m.render(&Snapshot::default());
        for line in [
            "outpost_probe_total{probe_type=\"Liveness\",result=\"successful\"} 1",
            "outpost_probe_total{probe_type=\"Liveness\",result=\"failed\"} 1",
            "outpost_probe_total{probe_type=\"Readiness\",result=\"failed\"} 0",
            "outpost_probe_duration_seconds_bucket{probe_type=\"Liveness\",le=\"0.005\"} 1",
            "outpost_probe_duration_seconds_bucket{probe_type=\"Liveness\",le=\"0.25\"} 1",
            "outpost_probe_duration_seconds_bucket{probe_type=\"Liveness\",le=\"0.5\"} 2",
            "outpost_probe_duration_seconds_bucket{probe_type=\"Liveness\",le=\"+Inf\"} 2",
            "outpost_probe_duration_seconds_sum{probe_type=\"Liveness\"} 0.303",
            "outpost_probe_duration_seconds_count{probe_type=\"Liveness\"} 2",
            "outpost_image_pulls_total{result=\"success\"} 1",
            "outpost_pods{phase=\"Running\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let rss =
            text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap();
        assert!(rss.parse::<u64>().unwrap() > 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
