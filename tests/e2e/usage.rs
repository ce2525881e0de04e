//! Usage of a real pod through every window users have on it: `kubectl top pod`, `outpost
//! top pod`, `outpost describe pod`, `/metrics` and the raw metrics API. The pod writes 20 MiB
//! into a memory-backed emptyDir, which the kernel charges to the writing container's memory
//! cgroup, so its working set is at least that much.

use crate::support::*;

const FILL: u64 = 20 << 20;

fn outpost(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let server = format!("http://{}", agent.addr);
    crate::runner::outpost(&[args, &["--server", &server]].concat())
}

/// `12Mi` → bytes, `3m` → millicores: the cells kubectl prints.
fn cell(value: &str, suffix: &str, unit: u64) -> u64 {
    let n = value.strip_suffix(suffix).unwrap_or_else(|| panic!("{value:?} lacks {suffix}"));
    n.parse::<u64>().unwrap_or_else(|e| panic!("{value:?}: {e}")) * unit
}

/// The rows of a `top` table after its header, split into cells.
fn rows(table: &str, header: &[&str]) -> Vec<Vec<String>> {
    let mut lines = table.lines().map(|l| l.split_whitespace().map(String::from).collect());
    assert_eq!(lines.next(), Some(header.iter().map(|h| h.to_string()).collect()), "{table}");
    lines.collect()
}

#[test]
fn a_pods_memory_and_cpu_show_in_top_describe_and_metrics() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let fill = pod(
        "fill",
        "dd if=/dev/zero of=/cache/fill bs=1M count=20 && echo filled && exec sleep 3600",
        "    resources:\n      requests: {memory: 16Mi}\n      limits: {memory: 96Mi}\n    \
         volumeMounts:\n    - {name: cache, mountPath: /cache}\n",
        "  volumes:\n  - name: cache\n    emptyDir: {medium: Memory}\n",
    );
    agent.apply("fill.yaml", &fill);
    let p = agent.wait_pod("fill", T, |p| phase(p) == "Running");
    assert_eq!(p["status"]["qosClass"], "Burstable");
    agent.wait_logs("fill", "app", "filled", T);

    // kubectl top pod: the pod's memory is at least the 20 MiB written; CPU is millicores.
    let row = eventually(T, || {
        let (code, out, err) = kubectl(&agent, &["top", "pod"]);
        if code != 0 {
            return Err(err);
        }
        Ok(rows(&out, &["NAME", "CPU(cores)", "MEMORY(bytes)"]))
    });
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(row[0][0], "fill");
    cell(&row[0][1], "m", 1);
    assert!(cell(&row[0][2], "Mi", 1 << 20) >= FILL, "{row:?}");

    let (code, out, err) = outpost(&agent, &["top", "pod", "--containers"]);
    assert_eq!(code, 0, "{err}");
    let row = rows(&out, &["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]);
    assert_eq!((row[0][0].as_str(), row[0][1].as_str()), ("fill", "app"));
    cell(&row[0][2], "m", 1);
    assert!(cell(&row[0][3], "Mi", 1 << 20) >= FILL, "{out}");

    // The raw API object kubectl decoded.
    let (code, m) = agent.get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/fill");
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["kind"], "PodMetrics");
    let usage = &m["containers"][0]["usage"];
    let memory: outpost::quantity::Quantity = usage["memory"].as_str().unwrap().parse().unwrap();
    assert!(memory.value() as u64 >= FILL, "{m}");
    assert!(usage["cpu"].as_str().unwrap().parse::<outpost::quantity::Quantity>().is_ok());

    // /metrics, under the kubelet's names; the pod level includes the container.
    let metrics = {
        let mut s = std::net::TcpStream::connect(agent.addr).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
    };
    let c = "{container=\"app\",namespace=\"default\",pod=\"fill\"}";
    let container_ws = value(&format!("container_memory_working_set_bytes{c}"));
    assert!(container_ws >= FILL as f64, "{container_ws}");
    let pod_ws = value("pod_memory_working_set_bytes{namespace=\"default\",pod=\"fill\"}");
    assert!(pod_ws >= container_ws, "pod {pod_ws} < container {container_ws}");
    let container_cpu = value(&format!("container_cpu_usage_seconds_total{c}"));
    let pod_cpu = value("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"fill\"}");
    assert!(container_cpu > 0.0 && pod_cpu >= container_cpu, "{container_cpu} {pod_cpu}");

    // describe: the container's current usage.
    let (code, out, err) = outpost(&agent, &["describe", "pod", "fill"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    let at = lines.iter().position(|l| l == &["Usage:"]).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(lines[at + 1][0], "cpu:");
    cell(lines[at + 1][1], "m", 1);
    assert_eq!(lines[at + 2][0], "memory:");
    assert!(cell(lines[at + 2][1], "Mi", 1 << 20) >= FILL, "{out}");
}
