//! A lost or damaged state database never takes a running pod down: the
//! agent adopts what runs, keeps the damaged files aside and says so with a Warning event.
//! The damage is what a power cut leaves: a truncated database, a torn WAL, a missing `-shm`;
//! and a database deleted outright.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{container_status, phase, pod, Agent, T};
use serde_json::Value;

/// What must not change across an agent restart: pid and start of the running instance.
#[derive(Debug, PartialEq)]
struct Running {
    pid: i64,
    started_at: Value,
    restart_count: Value,
    /// The exit code of the instance before (lastState).
    last_exit: Value,
}

fn uid(agent: &Agent, name: &str) -> String {
    agent.pod(name).unwrap()["metadata"]["uid"].as_str().unwrap().to_string()
}

/// The pod once Running and Ready, as the API and the supervisor's record have it.
#[track_caller]
fn running(agent: &Agent, name: &str) -> Running {
    let p = agent.wait_pod(name, T, |p| {
        phase(p) == "Running" && container_status(p, "app")["ready"] == true
    });
    let c = container_status(&p, "app");
    let attempt = c["restartCount"].as_u64().unwrap();
    let status = agent
        .state
        .join("pods")
        .join(uid(agent, name))
        .join("containers")
        .join(format!("app.{attempt}"))
        .join("status.json");
    let record: Value = serde_json::from_slice(&std::fs::read(status).unwrap()).unwrap();
    Running {
        pid: record["pid"].as_i64().unwrap(),
        started_at: c["state"]["running"]["startedAt"].clone(),
        restart_count: c["restartCount"].clone(),
        last_exit: c["lastState"]["terminated"]["exitCode"].clone(),
    }
}

fn db(agent: &Agent) -> PathBuf {
    agent.state.join("outpost.db")
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// The database sets kept aside, oldest first.
fn kept_aside(agent: &Agent) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&agent.state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("outpost.db.damaged-") && !name.ends_with("-wal")
        })
        .filter(|p| !p.to_string_lossy().ends_with("-shm"))
        .collect();
    v.sort();
    v
}

/// The node's `StateDatabaseRecovered` events, as the API serves them.
fn recovered_events(agent: &Agent) -> Vec<Value> {
    let (_, list) = agent.get("/api/v1/events");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "StateDatabaseRecovered")
        .cloned()
        .collect()
}

#[track_caller]
fn wait_for(what: &str, pred: impl Fn() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < T, "{what}: not within {T:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Restarts the agent and checks that nothing was restarted for it.
#[track_caller]
fn restart_keeps(agent: &mut Agent, before: &[(&str, Running)]) {
    agent.spawn();
    for (name, was) in before {
        assert_eq!(&running(agent, name), was, "pod {name} was restarted");
    }
    let log = agent.agent_log();
    let removed = log.iter().find(|l| l.contains("removing a sandbox no record knows"));
    assert!(removed.is_none(), "{removed:?}");
}

/// One damage after the other on the same pods, each followed by an agent restart.
#[test]
fn a_damaged_state_database_never_restarts_running_pods() {
    let _guard = crate::support::shared();
    let mut agent = Agent::start();
    let probe =
        "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n";
    agent.apply("steady.yaml", &pod("steady", "sleep 3600", probe, ""));
    // Fails once, then runs: restart count 1. The marker is in an emptyDir, which outlives the
    // container's instances.
    let data = "    volumeMounts:\n    - name: data\n      mountPath: /data\n";
    let script = "[ -e /data/ran ] && exec sleep 3600; touch /data/ran; exit 1";
    agent.apply(
        "flaky.yaml",
        &pod("flaky", script, data, "  volumes:\n  - name: data\n    emptyDir: {}\n"),
    );
    // Deleted while the agent is down and its record lost: stopped with SIGTERM, which its
    // trap writes down in a hostPath.
    let seen = agent.dir.path().join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    let trap = "trap 'echo term > /seen/term; exit 0' TERM; while true; do sleep 1; done";
    let volume =
        format!("  terminationGracePeriodSeconds: 7\n  volumes:\n  - name: seen\n    hostPath:\n      path: {}\n", seen.display());
    let mount = "    volumeMounts:\n    - name: seen\n      mountPath: /seen\n";
    agent.apply("doomed.yaml", &pod("doomed", trap, mount, &volume));

    let steady = running(&agent, "steady");
    agent.wait_pod("flaky", Duration::from_secs(60), |p| {
        container_status(p, "app")["restartCount"] == 1
            && container_status(p, "app")["ready"] == true
    });
    let flaky = running(&agent, "flaky");
    agent.wait_pod("doomed", T, |p| phase(p) == "Running");
    let doomed = agent.state.join("pods").join(uid(&agent, "doomed"));
    let before = [("steady", steady), ("flaky", flaky)];
    assert_eq!((&before[1].1.restart_count, &before[1].1.last_exit), (&1.into(), &1.into()));
    assert!(kept_aside(&agent).is_empty());

    // (a) The database truncated to 0 bytes, the WAL beside it (SQLite would delete it).
    agent.kill();
    agent.delete("doomed.yaml");
    std::fs::File::create(db(&agent)).unwrap();
    restart_keeps(&mut agent, &before);
    let kept = kept_aside(&agent);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().len(), 0, "the truncated file, as it was");
    wait_for("the recovery event", || recovered_events(&agent).len() == 1);
    let event = &recovered_events(&agent)[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["kind"], "Node");
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("(the database file is empty (truncated to 0 bytes))"), "{message}");
    assert!(message.contains(&kept[0].display().to_string()), "{message}");
    // The pod nobody wants any more went through the graceful path, with its own grace
    // period (kept with its sandbox) although its spec is gone.
    let stopping = format!(
        "pod {}: a sandbox that neither a record nor a manifest wants: stopping it (7s grace)",
        doomed.file_name().unwrap().to_string_lossy()
    );
    assert!(agent.agent_log().iter().any(|l| l.ends_with(&stopping)), "{stopping}");
    wait_for("the doomed pod's SIGTERM trap", || seen.join("term").exists());
    wait_for("the doomed pod's removal", || !doomed.exists());
    assert!(agent.pod("doomed").is_none());

    // (b) Garbage in the WAL's first frame: SQLite would silently drop every transaction.
    wait_for("records in the WAL", || {
        companion(&db(&agent), "-wal").metadata().is_ok_and(|m| m.len() > 32 * 1024)
    });
    agent.kill();
    let wal = companion(&db(&agent), "-wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[32 + 24 + 100..32 + 24 + 164].fill(0xa5);
    std::fs::write(&wal, bytes).unwrap();
    std::thread::sleep(Duration::from_secs(1)); // another second for the aside name
    restart_keeps(&mut agent, &before);
    let kept = kept_aside(&agent);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(companion(&kept[1], "-wal").exists(), "the torn WAL is kept with its database");
    wait_for("the second recovery event", || {
        recovered_events(&agent).iter().any(|e| {
            e["message"].as_str().unwrap().contains("WAL frame 0 is torn and committed frames")
        })
    });

    // (c) The -shm gone: only an index of the WAL, which SQLite rebuilds. Nothing is lost, so
    // nothing is kept aside and the records (the last event among them) are still there.
    wait_for("records in the WAL", || companion(&db(&agent), "-wal").exists());
    agent.kill();
    std::fs::remove_file(companion(&db(&agent), "-shm")).unwrap();
    restart_keeps(&mut agent, &before);
    assert_eq!(kept_aside(&agent).len(), 2);
    assert_eq!(recovered_events(&agent).len(), 1, "only the last recovery's, from the records");
    let log = agent.agent_log();
    let unrecorded = log.iter().filter(|l| l.contains("has no saved record")).count();
    assert_eq!(unrecorded, 4, "two pods adopted without records after (a) and after (b)");

    // (d) The database deleted with its WAL: nothing damaged to keep, records lost all the same.
    agent.kill();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(companion(&db(&agent), suffix));
    }
    restart_keeps(&mut agent, &before);
    assert_eq!(kept_aside(&agent).len(), 2);
    wait_for("the event for pods without records", || recovered_events(&agent).len() == 1);
    let message = recovered_events(&agent)[0]["message"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        "The state database had no record of running pods (lost, or behind the runtime): took them over from the runtime (adopted without records: flaky, steady)"
    );
}
