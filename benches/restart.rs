//! Issue 8's figure: agent restart → all pods adopted and the API answering with all of them
//! Running and ready (target under 1 s for 100 pods), with zero container restarts.
//!
//! Starts an agent with N busybox pods, waits until all run, then ROUNDS times: `kill -9` of
//! the agent, restart on the same state directory, time from spawn until `/api/v1/pods` lists
//! all N pods Running and ready; every round checks restartCount 0 and unchanged container
//! PIDs (`<state>/pods/<uid>/containers/app.0/status.json`). Needs root.
//! Run: `cargo bench --profile dev --bench restart` (`RESTART_PODS=<n>` for another N).

#[path = "../tests/e2e/support.rs"]
mod e2e_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e_support::{container_status, phase, pod, Agent};

const ROUNDS: usize = 5;

fn app_pid(agent: &Agent, uid: &str) -> Option<i32> {
    let status =
        agent.state.join("pods").join(uid).join("containers").join("app.0").join("status.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(status).ok()?).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

/// UID → (restartCount, ready) of every pod, if all `n` are Running and ready.
fn all_ready(agent: &Agent, n: usize) -> Option<BTreeMap<String, i64>> {
    let (code, list) = agent.get("/api/v1/pods");
    let items = list["items"].as_array()?;
    if code != 200 || items.len() != n {
        return None;
    }
    let mut out = BTreeMap::new();
    for p in items {
        let app = container_status(p, "app");
        if phase(p) != "Running" || app["ready"] != true {
            return None;
        }
        out.insert(p["metadata"]["uid"].as_str()?.to_string(), app["restartCount"].as_i64()?);
    }
    Some(out)
}

fn main() {
    let n: usize = std::env::var("RESTART_PODS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut agent = Agent::start();
    let started = Instant::now();
    for i in 0..n {
        let name = format!("restart-{i:03}");
        agent.apply(
            &format!("{name}.yaml"),
            &pod(&name, "sleep 3600", "", "  terminationGracePeriodSeconds: 1\n"),
        );
    }
    let uids = loop {
        if let Some(pods) = all_ready(&agent, n) {
            break pods;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{n} pods not Running in 600 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{n} pods Running and ready in {:.1} s", started.elapsed().as_secs_f64());
    let pids: BTreeMap<String, i32> = uids
        .keys()
        .map(|u| (u.clone(), app_pid(&agent, u).expect("status.json of a running pod")))
        .collect();

    let mut api_up = Vec::new();
    let mut all_up = Vec::new();
    for round in 0..ROUNDS {
        agent.kill();
        let t0 = Instant::now();
        // spawn returns once the agent logs that its API listens.
        agent.spawn();
        let listening = t0.elapsed();
        let pods = loop {
            if let Some(pods) = all_ready(&agent, n) {
                break pods;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "pods not back within 120 s");
            std::thread::sleep(Duration::from_millis(2));
        };
        let ready = t0.elapsed();
        for (uid, restarts) in &pods {
            assert_eq!(*restarts, 0, "pod {uid}: restartCount after restart {round}");
            assert_eq!(
                app_pid(&agent, uid),
                pids.get(uid).copied(),
                "pod {uid}: container replaced"
            );
        }
        println!(
            "round {round}: API listening after {:.0} ms, all {n} pods Running and ready after {:.0} ms",
            listening.as_secs_f64() * 1000.0,
            ready.as_secs_f64() * 1000.0
        );
        api_up.push(listening);
        all_up.push(ready);
    }
    all_up.sort();
    api_up.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "restart with {n} pods: all Running and ready median {:.0} ms (min {:.0}, max {:.0}); API listening median {:.0} ms; 0 container restarts, {n} PIDs unchanged",
        ms(all_up[ROUNDS / 2]),
        ms(all_up[0]),
        ms(all_up[ROUNDS - 1]),
        ms(api_up[ROUNDS / 2])
    );
}
