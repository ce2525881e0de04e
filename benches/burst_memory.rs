//! Issue 28's memory figures: 110 pod files dropped at once → the agent's peak RSS (VmHWM)
//! under 48 MB, and its RSS once every pod is gone again under 16 MB.
//!
//! Starts an agent (`OUTPOST_AGENT_BIN` picks the binary: measure a release build), drops
//! N busybox pod files into its directory at once, waits until all run, removes them all,
//! waits until the API lists none, lets two housekeeping rounds pass, and prints the agent's
//! RSS at each step (the agent process only; each pod's supervisor is its own process, in the
//! pod's cgroup). Needs root.
//! Run: `OUTPOST_AGENT_BIN=target/release/outpost cargo bench --profile dev --bench burst_memory`
//! (`BURST_PODS=<n>` for another N).

#[path = "../tests/e2e/support.rs"]
mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{phase, pod, Agent};

/// `VmRSS` and `VmHWM` (peak) of a process, in kB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

fn running(agent: &Agent) -> usize {
    let (_, list) = agent.get("/api/v1/pods");
    list["items"].as_array().map_or(0, |a| a.iter().filter(|p| phase(p) == "Running").count())
}

fn listed(agent: &Agent) -> usize {
    let (_, list) = agent.get("/api/v1/pods");
    list["items"].as_array().map_or(0, Vec::len)
}

fn main() {
    let n: usize = std::env::var("BURST_PODS").ok().and_then(|s| s.parse().ok()).unwrap_or(110);
    let agent = Agent::start();
    let pid = agent.pid().expect("agent pid");
    std::thread::sleep(Duration::from_secs(2));
    let (idle, _) = rss(pid);
    println!("idle: RSS {:.1} MB, {} threads", idle as f64 / 1024.0, threads(pid));

    // Written aside, then renamed in: all N appear within milliseconds.
    let aside = agent.dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for i in 0..n {
        let name = format!("burst-{i:03}");
        let yaml = pod(&name, "sleep 3600", "", "  terminationGracePeriodSeconds: 1\n");
        std::fs::write(aside.join(format!("{name}.yaml")), yaml).unwrap();
    }
    let t0 = Instant::now();
    for i in 0..n {
        let file = format!("burst-{i:03}.yaml");
        std::fs::rename(aside.join(&file), agent.manifests.join(&file)).unwrap();
    }
    let mut max_threads = 0;
    let mut peak_starting = 0;
    while running(&agent) < n {
        max_threads = max_threads.max(threads(pid));
        peak_starting = peak_starting.max(rss(pid).0);
        assert!(t0.elapsed() < Duration::from_secs(900), "{n} pods not Running in 900 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (all_running, _) = rss(pid);
    println!(
        "{n} pods Running after {:.1} s: RSS {:.1} MB, at most {max_threads} threads",
        t0.elapsed().as_secs_f64(),
        all_running as f64 / 1024.0
    );

    for i in 0..n {
        std::fs::remove_file(agent.manifests.join(format!("burst-{i:03}.yaml"))).unwrap();
    }
    let t1 = Instant::now();
    let mut peak_stopping = 0;
    while listed(&agent) > 0 {
        max_threads = max_threads.max(threads(pid));
        peak_stopping = peak_stopping.max(rss(pid).0);
        assert!(t1.elapsed() < Duration::from_secs(900), "pods not gone in 900 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "all {n} pods gone after {:.1} s; sampled RSS peaks: {:.1} MB starting, {:.1} MB stopping",
        t1.elapsed().as_secs_f64(),
        peak_starting as f64 / 1024.0,
        peak_stopping as f64 / 1024.0
    );
    // Two housekeeping rounds (10 s each), when the agent gives memory back.
    std::thread::sleep(Duration::from_secs(25));
    let (after, peak) = rss(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let parts: Vec<&str> = status.lines().filter(|l| l.starts_with("Rss")).collect();
    println!("after removal: {}", parts.join(", ").replace('\t', ""));
    println!(
        "burst of {n} pods: peak RSS {:.1} MB (target < 48), after removal {:.1} MB (target < 16), idle before {:.1} MB, at most {max_threads} threads, {} now",
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
        idle as f64 / 1024.0,
        threads(pid)
    );
}
