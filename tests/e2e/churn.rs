//! Database and runtime consistency under repeated `kill -9` of the agent during heavy churn:
//! 100 pods added and removed, the agent killed at random moments and restarted on
//! the same state directory. At the end every wanted pod runs with its original container,
//! nothing of a removed pod is left (API, store, pod dirs, pod data, supervisors, mounts, CNI
//! cache) and the SQLite database is intact.
//!
//! The run is random; its seed is printed and `CHURN_SEED=<n>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{container_status, phase, pod, Agent};

/// Pods created over the run.
const TOTAL: usize = 100;
/// At most this many manifests at once (2 cores).
const MAX_ALIVE: usize = 20;
const KILLS: usize = 5;
/// How long the final state may take to settle after the last restart.
const SETTLE: Duration = Duration::from_secs(120);

/// xorshift64*: enough randomness for a schedule, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn manifest(name: &str) -> String {
    pod(name, "sleep 3600", "", "  terminationGracePeriodSeconds: 1\n")
}

fn file(name: &str) -> String {
    format!("{name}.yaml")
}

/// The first container's PID of each pod the API reports Running, by UID.
fn running_pids(agent: &Agent) -> BTreeMap<String, i32> {
    let (_, list) = agent.get("/api/v1/pods");
    let mut out = BTreeMap::new();
    for p in list["items"].as_array().into_iter().flatten() {
        if phase(p) != "Running" {
            continue;
        }
        let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if let Some(pid) = app_pid(&agent.state, &uid) {
            out.insert(uid, pid);
        }
    }
    out
}

fn app_pid(state: &Path, uid: &str) -> Option<i32> {
    let status = state.join("pods").join(uid).join("containers").join("app.0").join("status.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(status).ok()?).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Pod UIDs named in the command lines of this agent's supervisors (and pause processes).
fn supervised_uids(agent: &Agent) -> BTreeSet<String> {
    let pods = agent.state.join("pods").display().to_string();
    agent
        .supervisors()
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let rest = cmd.split(&format!("{pods}/")).nth(1)?;
            Some(rest.split([' ', '/']).next()?.to_string())
        })
        .collect()
}

/// The UIDs in the store's pods table, read-only, after checking the database's integrity.
fn store_uids(state: &Path) -> BTreeSet<String> {
    let db = rusqlite::Connection::open_with_flags(
        state.join("outpost.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the state database read-only");
    let check: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(check, vec!["ok".to_string()], "integrity_check of outpost.db");
    let mut stmt = db.prepare("SELECT uid FROM pods").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn repeated_kill_9_during_churn_leaves_a_consistent_node() {
    let _guard = crate::support::exclusive();
    let seed = std::env::var("CHURN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(nanos);
    eprintln!("churn: CHURN_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut agent = Agent::start();

    // The schedule: every operation adds the next pod or removes a random live one (the last
    // pod is added by a targeted kill below); kills fall
    // after random operations, a random few milliseconds in, so they land mid-action.
    let ops = TOTAL * 2 - MAX_ALIVE / 2;
    let mut kill_at: BTreeSet<usize> = BTreeSet::new();
    while kill_at.len() < KILLS {
        kill_at.insert(10 + rng.below(ops as u64 - 20) as usize);
    }
    let mut alive: Vec<String> = Vec::new();
    let mut created = 0;
    // The first container PID seen for each pod; it must never change.
    let mut pids: BTreeMap<String, i32> = BTreeMap::new();
    let mut up = true;
    for op in 0..ops {
        let add = created < TOTAL - 1 && (alive.len() < MAX_ALIVE / 2 || rng.below(2) == 0);
        if (add || alive.is_empty()) && created < TOTAL - 1 && alive.len() < MAX_ALIVE {
            let name = format!("churn-{created:03}");
            agent.apply(&file(&name), &manifest(&name));
            alive.push(name);
            created += 1;
        } else if !alive.is_empty() {
            let name = alive.swap_remove(rng.below(alive.len() as u64) as usize);
            agent.delete(&file(&name));
        }
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        if up {
            for (uid, pid) in running_pids(&agent) {
                pids.entry(uid).or_insert(pid);
            }
        }
        if kill_at.contains(&op) {
            if !up {
                agent.spawn();
                std::thread::sleep(Duration::from_millis(rng.below(300)));
            }
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            eprintln!("churn: kill -9 after operation {op}");
            agent.kill();
            up = false;
        } else if !up && rng.below(3) == 0 {
            eprintln!("churn: restart after operation {op}");
            agent.spawn();
            up = true;
        }
    }
    if !up {
        agent.spawn();
    }
    // Two kills at the moments random ones rarely hit: during a removal's grace period, and
    // between a sandbox's start and its network setup (that pod stays wanted to the end).
    if let Some(name) = alive.pop() {
        let mark = agent.agent_log().len();
        agent.delete(&file(&name));
        kill_on(&mut agent, mark, &format!("pod default/{name}: container app: Killing"));
        agent.spawn();
    }
    let name = format!("churn-{created:03}");
    let mark = agent.agent_log().len();
    agent.apply(&file(&name), &manifest(&name));
    alive.push(name.clone());
    created += 1;
    kill_on(&mut agent, mark, &format!("pod default/{name} ("));
    agent.spawn();
    while created < TOTAL {
        let name = format!("churn-{created:03}");
        agent.apply(&file(&name), &manifest(&name));
        alive.push(name);
        created += 1;
    }
    eprintln!(
        "churn: {} operations done in {:?}, {} pods wanted",
        ops,
        started.elapsed(),
        alive.len()
    );

    // Settle: exactly the wanted pods, all Running and ready.
    let want: BTreeSet<String> = alive.iter().cloned().collect();
    let deadline = Instant::now() + SETTLE;
    let (pods, uids) = loop {
        let (_, list) = agent.get("/api/v1/pods");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let names: BTreeSet<String> =
            items.iter().filter_map(|p| p["metadata"]["name"].as_str().map(String::from)).collect();
        let settled = names == want
            && items.iter().all(|p| {
                phase(p) == "Running"
                    && container_status(p, "app")["ready"] == true
                    && p["metadata"]["deletionTimestamp"].is_null()
            });
        if settled {
            let uids: BTreeSet<String> = items
                .iter()
                .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
                .collect();
            break (items, uids);
        }
        if Instant::now() > deadline {
            let states: Vec<String> =
                items.iter().map(|p| format!("{} {}", p["metadata"]["name"], phase(p))).collect();
            panic!(
                "not settled within {SETTLE:?}: wanted {want:?}\nAPI has: {states:?}\nmissing: {:?}\nextra: {:?}",
                want.difference(&names).collect::<Vec<_>>(),
                names.difference(&want).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(uids.len(), want.len());

    // kill -9 of the agent restarts no container: restartCount 0 and the PID first seen.
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert_eq!(container_status(p, "app")["restartCount"], 0, "pod {name}");
        if let Some(first) = pids.get(uid) {
            assert_eq!(app_pid(&agent.state, uid), Some(*first), "pod {name}: container replaced");
        }
    }
    let checked =
        pods.iter().filter(|p| pids.contains_key(p["metadata"]["uid"].as_str().unwrap())).count();
    eprintln!(
        "churn: {checked} of {} final pods had their container PID recorded earlier",
        pods.len()
    );

    // Removal is complete: runtime pod dirs, pod data, supervisors and store rows are exactly
    // the wanted pods (a removal still finishing after the API dropped the pod gets a moment).
    let settle = Instant::now();
    loop {
        let dirs = dir_names(&agent.state.join("pods"));
        let data = dir_names(&agent.state.join("pod-data"));
        let supervised = supervised_uids(&agent);
        let stored = store_uids(&agent.state);
        if (dirs == uids && data == uids && supervised == uids && stored == uids)
            || settle.elapsed() > Duration::from_secs(15)
        {
            assert_eq!(dirs, uids, "runtime pod dirs <state>/pods/*");
            assert_eq!(data, uids, "pod data dirs <state>/pod-data/*");
            assert_eq!(supervised, uids, "pods with a live supervisor");
            assert_eq!(stored, uids, "pods in the store");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // One process (the supervisor; no pause without a shared pid namespace) per pod, no orphan.
    assert_eq!(agent.supervisors().len(), uids.len(), "one supervisor per pod");
    // Pinned network namespaces are named by sandbox ID, not pod UID: counted below.
    let netns = agent.state.join("cni").join("netns").display().to_string();
    let (pins, mounts): (Vec<String>, Vec<String>) =
        agent.mounts().into_iter().partition(|m| m.starts_with(&netns));
    assert_eq!(pins.len(), uids.len(), "pinned network namespaces mounted: {pins:?}");
    for m in mounts {
        assert!(uids.iter().any(|u| m.contains(u.as_str())), "mount of a removed pod left: {m}");
    }
    // One network attachment (a cached result and a pinned namespace) per pod, each pod with
    // its own IP: an adopted sandbox must not have lost or leaked its network.
    let cni = agent.state.join("cni");
    let results = dir_names(&cni.join("results"));
    assert_eq!(results.len(), uids.len(), "CNI cached results: {results:?} for pods {uids:?}");
    assert_eq!(dir_names(&cni.join("netns")).len(), uids.len(), "CNI pinned namespaces");
    let ips: BTreeSet<&str> = pods.iter().filter_map(|p| p["status"]["podIP"].as_str()).collect();
    assert_eq!(ips.len(), uids.len(), "distinct pod IPs");

    // The database survives one more kill -9 with all pods running.
    agent.kill();
    assert_eq!(store_uids(&agent.state), uids, "pods in the store after a last kill -9");
    agent.spawn();
    eprintln!("churn: done in {:?}", started.elapsed());
}

/// Kills the agent as soon as it logs a line containing `needle` (after line `from`).
fn kill_on(agent: &mut Agent, from: usize, needle: &str) {
    let start = Instant::now();
    while !agent.agent_log().iter().skip(from).any(|l| l.contains(needle)) {
        assert!(start.elapsed() < Duration::from_secs(30), "agent never logged {needle:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("churn: kill -9 on {needle:?}");
    agent.kill();
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
