//! The device as a Node through the real kubectl: `get nodes` (Ready), `describe node`
//! (capacity, allocatable, conditions, system info, events), `top node`, `--node-labels`
//! shown by `--show-labels`, and node affinity admission on real pods.

use crate::support::*;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn kubectl_ok(agent: &Agent, args: &[&str]) -> String {
    let (code, out, err) = kubectl(agent, args);
    assert_eq!(code, 0, "kubectl {args:?}: {err}{out}");
    out
}

#[test]
fn kubectl_gets_describes_and_tops_the_node_with_its_labels() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--node-labels", "site=plant-3,example.com/floor=2"]);
    let name = hostname();

    // get nodes: one Ready row, no roles, the API's version; there from the API's start.
    let out = kubectl_ok(&agent, &["get", "nodes"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{out}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], [name.as_str(), "Ready", "<none>"], "{out}");
    assert!(row[4].starts_with("v1.37.0-outpost."), "{out}");
    assert_eq!(lines.next(), None, "{out}");

    let wide = kubectl_ok(&agent, &["get", "nodes", "-o", "wide"]);
    assert!(wide.contains("CONTAINER-RUNTIME") && wide.contains("outpost://"), "{wide}");

    let labels = kubectl_ok(&agent, &["get", "node", &name, "--show-labels"]);
    assert!(labels.starts_with("NAME ") && labels.contains(" Ready "), "{labels}");
    for l in ["site=plant-3", "example.com/floor=2", "kubernetes.io/os=linux"] {
        assert!(labels.contains(l), "{l} in {labels}");
    }
    let selected = kubectl_ok(&agent, &["get", "nodes", "-l", "site=plant-3", "-o", "name"]);
    assert_eq!(selected.trim(), format!("node/{name}"));

    // describe node: what kubectl shows of a kubelet's node, events included.
    let out = eventually(T, || {
        let out = kubectl_ok(&agent, &["describe", "node", &name]);
        match out.contains("Starting kubelet.") {
            true => Ok(out),
            false => Err(out),
        }
    });
    for needle in [
        "Capacity:",
        "Allocatable:",
        "ephemeral-storage:",
        "pods:               110",
        "MemoryPressure   False",
        "KubeletHasSufficientMemory",
        "kubelet has no disk pressure",
        "KubeletHasSufficientPID",
        "Ready            True",
        "kubelet is posting ready status",
        "System Info:",
        "Kernel Version:",
        "Operating System:           linux",
        "Container Runtime Version:  outpost://",
        "Kubelet Version:            v1.37.0-outpost.",
        "InternalIP:",
        &format!("Hostname:    {name}"),
        "NodeReady",
        &format!("HolderIdentity:  {name}"),
    ] {
        assert!(out.contains(needle), "{needle:?} in\n{out}");
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    if let Some(pretty) = os.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
        assert!(out.contains(pretty.trim_matches('"')), "{pretty} in\n{out}");
    }

    // top node: cores in millicores, memory in Mi, percentages of allocatable.
    let out = kubectl_ok(&agent, &["top", "node"]);
    let mut lines = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        lines.next().unwrap(),
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{out}"
    );
    let row = lines.next().unwrap();
    assert_eq!(row[0], name, "{out}");
    assert!(row[1].ends_with('m') && row[1][..row[1].len() - 1].parse::<u64>().is_ok(), "{out}");
    assert!(row[2].ends_with('%'), "{out}");
    let mib: u64 = row[3].strip_suffix("Mi").expect("Mi").parse().unwrap();
    assert!(mib > 0, "{out}");
    // The image store's busybox, with its size, as the kubelet lists images.
    let (code, node) = agent.get(&format!("/api/v1/nodes/{name}"));
    assert_eq!(code, 200, "{node}");
    let image = &node["status"]["images"][0];
    assert!(image["names"].to_string().contains("busybox"), "{node}");
    assert!(image["sizeBytes"].as_i64().unwrap() > 0, "{node}");
    let (code, m) = agent.get(&format!("/apis/metrics.k8s.io/v1beta1/nodes/{name}"));
    assert_eq!((code, m["kind"].as_str()), (200, Some("NodeMetrics")), "{m}");
}

#[test]
fn a_pod_not_matching_the_node_labels_fails_with_node_affinity_and_a_matching_one_runs() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--node-labels", "site=plant-3"]);
    let here = pod("here", "exec sleep 3600", "", "  nodeSelector: {site: plant-3}\n");
    let there = pod(
        "there",
        "exec sleep 3600",
        "",
        "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions: [{key: site, operator: In, values: [plant-1]}]\n",
    );
    agent.apply("here.yaml", &here);
    agent.apply("there.yaml", &there);
    let p = agent.wait_pod("there", T, |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "NodeAffinity");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    agent.wait_pod("here", T, |p| phase(p) == "Running");
    let out = kubectl_ok(&agent, &["get", "pods"]);
    let row = out.lines().find(|l| l.starts_with("there ")).unwrap_or_default();
    assert!(row.contains("NodeAffinity"), "{out}");
}

#[test]
fn a_bad_node_label_stops_the_start_with_a_clear_error() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let (state, manifests) = (dir.path().join("state"), dir.path().join("m"));
    let (state, manifests) = (state.to_str().unwrap(), manifests.to_str().unwrap());
    for (labels, needle) in [
        ("site", "\"site\" is not key=value"),
        ("bad key=x", "invalid key \"bad key\""),
        ("node-role.kubernetes.io/edge=", "reserved 'kubernetes.io'/'k8s.io' namespace"),
    ] {
        let (code, _, err) = crate::runner::outpost(&[
            "run",
            "--manifests",
            manifests,
            "--state",
            state,
            "--node-labels",
            labels,
        ]);
        assert_eq!(code, 2, "{labels}: {err}");
        assert!(err.contains("--node-labels") && err.contains(needle), "{labels}: {err}");
    }
}

/// Memory pressure (simulated with the `--test-meminfo` hook) turns the Node's
/// MemoryPressure condition True with the kubelet's reason, and records its event.
#[test]
fn memory_pressure_shows_on_the_node_condition_and_events() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let meminfo = dir.path().join("meminfo");
    let real = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total = real.lines().find(|l| l.starts_with("MemTotal:")).unwrap().to_string();
    let write = |kib: u64| {
        let tmp = meminfo.with_extension("tmp");
        std::fs::write(&tmp, format!("{total}\nMemFree: {kib} kB\nMemAvailable: {kib} kB\n"))
            .unwrap();
        std::fs::rename(&tmp, &meminfo).unwrap();
    };
    write(8 << 20);
    let agent = Agent::start_with(&[
        "--housekeeping-interval",
        "1s",
        "--test-meminfo",
        meminfo.to_str().unwrap(),
    ]);
    let name = hostname();
    write(50 * 1024);
    let condition = eventually(T, || {
        let (_, node) = agent.get(&format!("/api/v1/nodes/{name}"));
        let c = node["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "MemoryPressure").cloned())
            .unwrap_or_default();
        if c["status"] == "True" {
            Ok(c)
        } else {
            Err(node.to_string())
        }
    });
    assert_eq!(condition["reason"], "KubeletHasInsufficientMemory");
    assert_eq!(condition["message"], "kubelet has insufficient memory available");
    let out = eventually(T, || {
        let out = kubectl_ok(&agent, &["describe", "node", &name]);
        if out.contains("NodeHasInsufficientMemory") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert!(
        out.contains(&format!("Node {name} status is now: NodeHasInsufficientMemory")),
        "{out}"
    );
}
