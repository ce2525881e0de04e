//! Safe updates (issue 23) through `outpost run`: a bad edit is rolled back to the last Ready
//! version within its deadline, with the RolledBack event; a good edit afterwards rolls forward.

use std::process::Command;

use serde_json::Value;

use crate::support::{eventually, phase, Agent, BIN, T};

/// Pod `web` running `command`, with a short rollout deadline. Labelled by test: pod UIDs come
/// from the content, and two agents running one UID side by side share its cgroup (the second
/// clears what it takes for the first's leftovers).
fn web(command: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut test = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().name().hash(&mut test);
    let test = test.finish() as u32;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    test: t{test:08x}\n  annotations:\n    outpost.dev/rollout-deadline-seconds: \"20\"\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: {command}\n"
    )
}

/// No orphan: one pod's supervisor (no pause without a shared pid namespace), and only the
/// running version's pod directory.
fn only_version_left(agent: &Agent, running: &str) {
    eventually(T, || {
        let dirs: Vec<String> = std::fs::read_dir(agent.state.join("pods"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        match (agent.supervisors().len(), dirs.as_slice()) {
            (1, [only]) if only == running => Ok(()),
            (n, dirs) => Err(format!("{n} supervisor processes, pod directories {dirs:?}")),
        }
    });
}

/// `outpost rollout history pod web` on the agent's state: (stdout, stderr).
fn history(agent: &Agent) -> (String, String) {
    let out = Command::new(BIN)
        .args(["rollout", "history", "pod", "web", "--state"])
        .arg(&agent.state)
        .output()
        .expect("run outpost rollout history");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// Waits until the history has `hash` Ready: a first version counts as the version to go
/// back to once Ready for the stable period (10 s).
fn wait_recorded(agent: &Agent, hash: &str) {
    eventually(T, || {
        let (text, err) = history(agent);
        match text.lines().last() {
            Some(last) if last.contains(&hash[..8]) && last.ends_with("Ready") => Ok(()),
            _ => Err(format!("{text}{err}")),
        }
    });
}

/// What goes down in the middle of a rollout: the agent alone (`kill -9`), or the whole
/// device (a reboot: pods, cgroups, mounts and the bridge with it).
#[derive(Clone, Copy, PartialEq)]
enum Down {
    Agent,
    Host,
}

impl Down {
    fn restart(self, agent: &mut Agent) {
        match self {
            Down::Agent => agent.restart(),
            Down::Host => agent.reboot(),
        }
    }
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

fn events(agent: &Agent, reason: &str) -> Vec<String> {
    let (_, list) = agent.get("/api/v1/namespaces/default/events");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_bad_edit_is_rolled_back_and_a_good_edit_rolls_forward() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = uid(&agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p)));
    wait_recorded(&agent, &v1);

    // A typo in the shell's command: the container starts (Ready: no readiness probe), exits
    // 127 a moment later, and crash-loops.
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v2; slep 3600"]"#));
    let message = eventually(T, || {
        events(&agent, "RolledBack").pop().ok_or_else(|| "no RolledBack event yet".to_string())
    });
    assert!(message.contains("(CrashLoopBackOff)"), "{message}");
    agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));

    // A command that does not exist: RunContainerError, then CrashLoopBackOff.
    agent.apply("web.yaml", &web(r#"["/no/such/command"]"#));
    let message = eventually(T, || {
        let all = events(&agent, "RolledBack");
        all.get(1).cloned().ok_or_else(|| format!("one RolledBack event only: {all:?}"))
    });
    let back = agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));
    let failed = back["metadata"]["annotations"]["outpost.dev/failed-revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!failed.is_empty() && failed != v1, "{back}");
    assert!(message.starts_with(&format!("Revision {} failed (", &failed[..8])), "{message}");
    assert!(message.ends_with(&format!("rolled back to revision {}", &v1[..8])), "{message}");
    let condition = back["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "outpost.dev/RolledBack").cloned())
        .unwrap_or_default();
    assert_eq!(condition["status"], "True", "{back}");
    // `outpost describe` of the running pod shows both revisions and the event.
    let out = Command::new(BIN)
        .args(["describe", "pod", "web", "--server", &format!("http://{}", agent.addr)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("outpost.dev/failed-revision: {failed}")), "{text}");
    assert!(text.contains("outpost.dev/RolledBack"), "{text}");
    assert!(text.contains("RolledBack") && text.contains(&message), "{text}");
    // kubectl's too.
    let (code, text, err) = crate::support::kubectl(&agent, &["describe", "pod", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("outpost.dev/failed-revision: {failed}")), "{text}");
    assert!(text.contains("outpost.dev/RolledBack") && text.contains(&message), "{text}");
    // The failed version is not retried while the file stays as it is.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let still = agent.pod("web").unwrap();
    assert_eq!(uid(&still), v1);
    assert_eq!(events(&agent, "RolledBack").len(), 2);

    // A good edit goes through the same gate and stays.
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v3; sleep 3600"]"#));
    let v3 = uid(&agent.wait_pod("web", T, |p| uid(p) != v1 && uid(p) != failed && ready(p)));
    agent.wait_logs("web", "app", "v3", T);
    let history = eventually(T, || {
        let (text, err) = history(&agent);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        match rows.as_slice() {
            [_, _, _, last] if last.contains(&v3[..8]) && last.ends_with("Ready") => Ok(text),
            _ => Err(format!("{text}{err}")),
        }
    });
    let rows: Vec<&str> = history.lines().collect();
    assert!(rows[0].starts_with("REVISION"), "{history}");
    assert!(rows[1].contains(&v1[..8]) && rows[1].ends_with("Ready"), "{history}");
    assert!(rows[2].ends_with("Failed (CrashLoopBackOff)"), "{history}");
    assert!(rows[3].contains(&failed[..8]) && rows[3].contains("Failed ("), "{history}");
    assert_eq!(events(&agent, "RolledBack").len(), 2);
}

/// An edit naming an image no registry has: the running version never stops.
#[test]
fn a_missing_image_keeps_the_running_version() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p));
    let started = v1["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let v1 = uid(&v1);
    wait_recorded(&agent, &v1);
    // Nothing listens on the discard port: the pull fails at once.
    let edit = web(r#"["sh", "-c", "echo v2; sleep 3600"]"#)
        .replace("image: busybox", "image: 127.0.0.1:9/missing:1");
    agent.apply("web.yaml", &edit);
    let failed = eventually(T, || {
        events(&agent, "ErrImagePull").pop().ok_or_else(|| "no ErrImagePull event yet".to_string())
    });
    assert!(failed.contains("127.0.0.1:9/missing:1"), "{failed}");
    assert!(failed.contains(&format!("the running revision {} stays", &v1[..8])), "{failed}");
    let rolled = events(&agent, "RolledBack");
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    assert!(rolled[0].contains("(ErrImagePull)"), "{rolled:?}");
    let p = agent.pod("web").unwrap();
    assert_eq!(uid(&p), v1);
    assert!(ready(&p), "{p}");
    // The same instance: never stopped.
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started);
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
}

/// `web` whose readiness probe never passes, with a deadline of `deadline` seconds.
fn never_ready(deadline: u32) -> String {
    web(r#"["sh", "-c", "echo v2; sleep 3600"]"#)
        .replace("seconds: \"20\"", &format!("seconds: \"{deadline}\""))
        + "    readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}\n"
}

#[test]
fn a_readiness_probe_that_never_passes_is_rolled_back_at_the_deadline() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = uid(&agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p)));
    wait_recorded(&agent, &v1);
    agent.apply("web.yaml", &never_ready(6));
    let v2 = uid(&agent.wait_pod("web", T, |p| uid(p) != v1 && phase(p) == "Running"));
    let start = std::time::Instant::now();
    let message = eventually(T, || {
        events(&agent, "RolledBack").pop().ok_or_else(|| "no RolledBack event yet".to_string())
    });
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
    assert_eq!(
        message,
        format!(
            "Revision {} failed (ProgressDeadlineExceeded): rolled back to revision {}",
            &v2[..8],
            &v1[..8]
        )
    );
    agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));
}

/// `kill -9` of the agent while the new version is under its gate: the restarted agent
/// resumes the gate from the stored history and still rolls back; one version runs.
#[test]
fn an_agent_killed_mid_rollout_resumes_and_ends_with_one_version() {
    let _guard = crate::support::shared();
    mid_rollout(Down::Agent);
}

/// A reboot while the new version is under its gate (the old version already stopped): the
/// gate resumes from the stored history after boot, the new version fails it again and the
/// last Ready one comes back alone.
#[test]
fn a_reboot_mid_rollout_ends_with_the_last_ready_version() {
    let _guard = crate::support::shared();
    mid_rollout(Down::Host);
}

fn mid_rollout(down: Down) {
    let mut agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = uid(&agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p)));
    wait_recorded(&agent, &v1);
    agent.apply("web.yaml", &never_ready(8));
    let v2 = uid(&agent.wait_pod("web", T, |p| uid(p) != v1 && phase(p) == "Running"));
    down.restart(&mut agent);
    let message = eventually(T, || {
        events(&agent, "RolledBack").pop().ok_or_else(|| "no RolledBack event yet".to_string())
    });
    assert!(
        message.starts_with(&format!("Revision {} failed (ProgressDeadlineExceeded)", &v2[..8]))
    );
    agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));
    only_version_left(&agent, &v1);
    let (text, _) = history(&agent);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains(&v1[..8]) && rows[0].ends_with("Ready"), "{text}");
    assert!(
        rows[1].contains(&v2[..8]) && rows[1].ends_with("Failed (ProgressDeadlineExceeded)"),
        "{text}"
    );
}

/// `kill -9` of the agent as soon as the rollback is decided (its event; the failed version
/// is being stopped and, depending on timing, the last Ready one may not be back yet): the
/// restarted agent ends with that version running alone and the failure in the history once.
#[test]
fn an_agent_killed_during_the_rollback_finishes_it() {
    let _guard = crate::support::shared();
    during_the_rollback(Down::Agent);
}

/// A reboot as soon as the rollback is decided: after boot the last Ready version runs alone
/// and the failure is in the history once.
#[test]
fn a_reboot_during_the_rollback_finishes_it() {
    let _guard = crate::support::shared();
    during_the_rollback(Down::Host);
}

fn during_the_rollback(down: Down) {
    let mut agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = uid(&agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p)));
    wait_recorded(&agent, &v1);
    agent.apply("web.yaml", &never_ready(2));
    eventually(T, || {
        events(&agent, "RolledBack").pop().ok_or_else(|| "no RolledBack event yet".to_string())
    });
    down.restart(&mut agent);
    agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));
    only_version_left(&agent, &v1);
    let (text, _) = history(&agent);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains(&v1[..8]) && rows[0].ends_with("Ready"), "{text}");
    assert!(!rows[1].contains(&v1[..8]) && rows[1].contains("Failed"), "{text}");
}

/// A registry whose connections wait until `open` is set: a pull that takes as long as the
/// test wants.
fn held_registry() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let upstream = crate::registry_support::fake_registry(
        &crate::registry_support::busybox(),
        crate::registry_support::FakeAuth::None,
        false,
        false,
    )
    .port;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let gate = gate.clone();
            std::thread::spawn(move || {
                while !gate.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
                let _ = std::io::copy(&mut &server, &mut &client);
            });
        }
    });
    (port, open)
}

/// The new version's image comes from a registry while the old version keeps serving; only
/// once it is stored does the old version stop.
#[test]
fn the_new_image_is_pulled_while_the_old_version_runs() {
    let _guard = crate::support::shared();
    let (port, open) = held_registry();
    let agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p));
    let started = v1["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let v1 = uid(&v1);
    wait_recorded(&agent, &v1);
    let image = format!("127.0.0.1:{port}/{}:latest", crate::registry_support::REPO);
    let edit = web(r#"["sh", "-c", "echo v2; sleep 3600"]"#)
        .replace("image: busybox", &format!("image: {image}"));
    agent.apply("web.yaml", &edit);
    let pulling = eventually(T, || {
        events(&agent, "Pulling")
            .into_iter()
            .find(|m| m.contains(&image))
            .ok_or_else(|| "no Pulling event for the new image yet".to_string())
    });
    assert!(pulling.contains("for revision"), "{pulling}");
    // The registry holds the pull: the old version keeps running, untouched.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let p = agent.pod("web").unwrap();
    assert_eq!(uid(&p), v1);
    assert!(ready(&p), "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started);
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2 = agent.wait_pod("web", T, |p| uid(p) != v1 && ready(p));
    assert_eq!(v2["spec"]["containers"][0]["image"], image.as_str());
    agent.wait_logs("web", "app", "v2", T);
    assert!(events(&agent, "RolledBack").is_empty());
}

/// `kill -9` of the agent during the prefetch: the restarted agent keeps the old version
/// running, pulls again, and only then replaces it; one version and no orphan at the end.
#[test]
fn an_agent_killed_during_the_pull_resumes_it_without_an_outage() {
    let _guard = crate::support::shared();
    during_the_pull(Down::Agent);
}

/// A reboot during the prefetch: after boot the old version (still the running revision)
/// starts again while the new image is pulled again, and only then is replaced.
#[test]
fn a_reboot_during_the_pull_brings_the_old_version_back_until_the_new_one_is_pulled() {
    let _guard = crate::support::shared();
    during_the_pull(Down::Host);
}

fn during_the_pull(down: Down) {
    let rebooted = down == Down::Host;
    let (port, open) = held_registry();
    let mut agent = Agent::start();
    agent.apply("web.yaml", &web(r#"["sh", "-c", "echo v1; sleep 3600"]"#));
    let v1 = agent.wait_pod("web", T, |p| phase(p) == "Running" && ready(p));
    let started = v1["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let v1 = uid(&v1);
    wait_recorded(&agent, &v1);
    let image = format!("127.0.0.1:{port}/{}:latest", crate::registry_support::REPO);
    let edit = web(r#"["sh", "-c", "echo v2; sleep 3600"]"#)
        .replace("image: busybox", &format!("image: {image}"));
    agent.apply("web.yaml", &edit);
    eventually(T, || {
        events(&agent, "Pulling")
            .into_iter()
            .find(|m| m.contains(&image))
            .ok_or_else(|| "no Pulling event for the new image yet".to_string())
    });
    down.restart(&mut agent);
    // The restarted agent adopted the old version (after a reboot: started it again) and
    // fetches again, the old one untouched meanwhile.
    if rebooted {
        agent.wait_pod("web", T, |p| uid(p) == v1 && ready(p));
    }
    let p = agent.pod("web").unwrap();
    let started = if rebooted {
        let again = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
        assert_ne!(again, started, "the reboot did not stop the old version");
        again
    } else {
        started
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    let p = agent.pod("web").unwrap();
    assert_eq!(uid(&p), v1);
    assert!(ready(&p), "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started);
    assert!(
        events(&agent, "Pulling").iter().any(|m| m.contains(&image)),
        "the new image is not being pulled again"
    );
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2 = uid(&agent.wait_pod("web", T, |p| uid(p) != v1 && ready(p)));
    only_version_left(&agent, &v2);
    assert!(events(&agent, "RolledBack").is_empty());
}
