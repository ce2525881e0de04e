//! `kubectl top pod` and `outpost top pod` against an in-process server whose cgroup root is a
//! fake v1 tree: the same table from both, exact memory, and kubectl's messages when there is
//! nothing to show. The containers' CPU counters stay at 0, so every rate is 0 whenever the
//! readings happen (the rate arithmetic is unit-tested in `api::resource_metrics`).

use std::path::Path;

use crate::api_support::*;
use k8s_openapi::api::core::v1::Container;

const DAY: i64 = 86_400;

fn write(root: &Path, rel: &str, file: &str, text: &str) {
    let dir = root.join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
}

/// A v1 cgroup (cpuacct + memory) with this CPU time and working set.
fn cgroup(root: &Path, cg: &str, cpu_ns: u64, working_set: u64) {
    let inactive = 4 << 20;
    write(root, &format!("cpuacct/{cg}"), "cpuacct.usage", &format!("{cpu_ns}\n"));
    write(
        root,
        &format!("memory/{cg}"),
        "memory.usage_in_bytes",
        &format!("{}\n", working_set + inactive),
    );
    write(
        root,
        &format!("memory/{cg}"),
        "memory.stat",
        &format!("total_inactive_file {inactive}\n"),
    );
}

fn outpost(s: &Server, args: &[&str]) -> (i32, String, String) {
    crate::runner::outpost(&[args, &["--server", &s.url()]].concat())
}

#[test]
fn kubectl_top_and_outpost_top_print_the_same() {
    let cgroups = tempfile::tempdir().unwrap();
    let root = cgroups.path().to_path_buf();
    let s = Server::start(|c| c.cgroup_root = root.clone());
    let r = cgroups.path();
    // web: BestEffort, its `app` on instance 3, plus a sidecar-less second container.
    let mut web = running_pod("web", DAY, 3, DAY);
    let mut side = web.spec.as_ref().unwrap().containers[0].clone();
    side.name = "log-shipper".into();
    web.spec.as_mut().unwrap().containers.push(Container { ..side });
    let mut side_status =
        web.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].clone();
    side_status.name = "log-shipper".into();
    side_status.restart_count = 0;
    web.status.as_mut().unwrap().container_statuses.as_mut().unwrap().push(side_status);
    cgroup(r, "outpost/besteffort/uid-web", 9_000_000_000_000, 30 << 20);
    cgroup(r, "outpost/besteffort/uid-web/app.3", 0, 20 << 20);
    cgroup(r, "outpost/besteffort/uid-web/log-shipper.0", 0, 1536 << 10);
    let db = running_pod("db", DAY, 0, DAY);
    cgroup(r, "outpost/besteffort/uid-db", 1, 8 << 20);
    cgroup(r, "outpost/besteffort/uid-db/app.0", 0, 7 << 20);
    // edge/mqtt runs but has no cgroup (yet): no metrics.
    let mut mqtt = running_pod("mqtt", DAY, 0, DAY);
    mqtt.metadata.namespace = Some("edge".into());
    let job = exited(running_pod("job", DAY, 0, DAY));
    s.publish(vec![web, db, mqtt, job], vec![], Default::default());

    let (kc, kout, kerr) = kubectl(&s.url(), &["top", "pod"]);
    assert_eq!(kc, 0, "kubectl top pod: {kerr}");
    let (oc, oout, oerr) = outpost(&s, &["top", "pod"]);
    assert_eq!(oc, 0, "outpost top pod: {oerr}");
    assert_eq!(
        kout,
        "NAME   CPU(cores)   MEMORY(bytes)   \n\
         db     0m           7Mi             \n\
         web    0m           21Mi            \n"
    );
    assert_eq!(oout, kout, "outpost top differs from kubectl top");

    let (kc, kout, kerr) = kubectl(&s.url(), &["top", "pod", "web", "--containers"]);
    assert_eq!(kc, 0, "{kerr}");
    assert_eq!(
        kout,
        "POD   NAME          CPU(cores)   MEMORY(bytes)   \n\
         web   app           0m           20Mi            \n\
         web   log-shipper   0m           1Mi             \n"
    );
    let (_, oout, oerr) = outpost(&s, &["top", "pod", "web", "--containers"]);
    assert_eq!(oout, kout, "{oerr}");

    let (kc, kout, kerr) = kubectl(&s.url(), &["top", "pod", "-A", "-l", "app=web"]);
    assert_eq!(kc, 0, "{kerr}");
    assert_eq!(
        kout,
        "NAMESPACE   NAME   CPU(cores)   MEMORY(bytes)   \n\
         default     web    0m           21Mi            \n"
    );
    let (_, oout, _) = outpost(&s, &["top", "pod", "-A", "-l", "app=web"]);
    assert_eq!(oout, kout);

    // Nothing to show: the same messages and exit codes (each client measures the pod's age
    // in the second message itself: compared up to it).
    let until_age = |e: &str| e.split("age: 24h0m").next().unwrap_or_default().trim().to_string();
    for args in
        [&["top", "pod", "nope"][..], &["top", "pod", "-n", "edge"], &["top", "pod", "-n", "void"]]
    {
        let (kc, kout, kerr) = kubectl(&s.url(), args);
        let (oc, oout, oerr) = outpost(&s, args);
        assert_eq!((oc, oout, until_age(&oerr)), (kc, kout, until_age(&kerr)), "{args:?}");
    }
    let (_, _, err) = outpost(&s, &["top", "pod", "nope"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): podmetrics.metrics.k8s.io \"default/nope\" not found"
    );
    let (_, _, err) = outpost(&s, &["top", "pod", "-n", "edge"]);
    assert!(err.starts_with("error: Metrics not available for pod edge/mqtt, age: 24h0m"), "{err}");
    let (_, _, err) = outpost(&s, &["top", "pod", "-n", "void"]);
    assert_eq!(err.trim(), "No resources found in void namespace.");

    // describe shows them per running container.
    let (code, out, err) = outpost(&s, &["describe", "pod", "web"]);
    assert_eq!(code, 0, "{err}");
    let words: Vec<String> =
        out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    let usage: Vec<&[String]> = words.windows(3).filter(|w| w[0] == "Usage:").collect();
    assert_eq!(
        usage,
        [
            &["Usage:".to_string(), "cpu: 0m".into(), "memory: 20Mi".into()][..],
            &["Usage:".to_string(), "cpu: 0m".into(), "memory: 1Mi".into()][..],
        ],
        "{out}"
    );
    let (_, out, _) = outpost(&s, &["describe", "pod", "job"]);
    assert!(!out.contains("Usage:"), "{out}");

    // The same figures on /metrics, under the kubelet's names.
    let (code, _, metrics) = http(s.addr, "GET", "/metrics", &[]);
    assert_eq!(code, 200);
    for line in [
        "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 20971520",
        "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 0",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 31457280",
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 9000",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let usage_of = |pod: &str| {
        let label = format!("pod=\"{pod}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("container_") || l.starts_with("pod_"))
            .filter(|l| l.contains(&label))
            .count()
    };
    assert_eq!(usage_of("web"), 6, "{metrics}");
    assert_eq!(usage_of("job"), 0, "an exited pod has no usage:\n{metrics}");
}
