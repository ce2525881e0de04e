//! The API and CLI against a real `outpost run` with real pods, through the real kubectl:
//! get, describe, logs (-f, --previous), events; a Secret's value appears nowhere.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn outpost(agent: &Agent, args: &[&str]) -> String {
    let server = format!("http://{}", agent.addr);
    let (code, out, err) = crate::runner::outpost(&[args, &["--server", &server]].concat());
    assert_eq!(code, 0, "outpost {args:?}: {err}");
    out
}

const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-e2e\n";

#[test]
fn kubectl_and_the_cli_see_real_pods_logs_and_events() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("db.yaml", SECRET);
    let env = "    env:\n    - name: PASSWORD\n      valueFrom:\n        secretKeyRef: {name: db, key: password}\n";
    // Each instance prints its number of previous runs, then exits after 1 s (restarts).
    let script =
        "n=$(cat /data/runs 2>/dev/null || echo 0); echo run $n; echo $((n+1)) > /data/runs; \
                  i=0; while [ $i -lt 3 ]; do echo tick $i; i=$((i+1)); sleep 0.3; done; exit 1";
    let mounts = "    volumeMounts:\n    - {name: data, mountPath: /data}\n";
    let spec = "  volumes:\n  - name: data\n    emptyDir: {}\n";
    agent.apply("web.yaml", &pod("web", script, &format!("{env}{mounts}"), spec));
    agent.wait_pod("web", T, |p| container_status(p, "app")["restartCount"].as_i64() >= Some(1));

    let (code, out, err) = kubectl(&agent, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "web");
    let (code, out, err) = kubectl(&agent, &["get", "pods", "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    let ip = agent.pod("web").unwrap()["status"]["podIP"].as_str().unwrap_or("<none>").to_string();
    assert!(out.contains(&ip), "{out}");

    // --previous: an earlier instance's complete output.
    let (code, prev, err) = kubectl(&agent, &["logs", "web", "--previous"]);
    assert_eq!(code, 0, "{err}");
    assert!(prev.starts_with("run ") && prev.ends_with("tick 0\ntick 1\ntick 2\n"), "{prev}");

    // -f: follows the current instance until it exits.
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .args(["--server", &format!("http://{}", agent.addr), "logs", "-f", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(lines.first().is_some_and(|l| l.starts_with("run ")), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("tick 2"), "{lines:?}");

    let (code, describe, err) = kubectl(&agent, &["describe", "pod", "web"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "Name:         web",
        "    Restart Count:",
        "Events:",
        "Started container app",
        "      PASSWORD:  <set to the key 'password' in secret 'db'>",
    ] {
        assert!(describe.contains(needle), "describe lacks {needle:?}:\n{describe}");
    }
    let (code, events, err) = kubectl(&agent, &["get", "events"]);
    assert_eq!(code, 0, "{err}");
    assert!(events.starts_with("LAST SEEN"), "{events}");
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(&format!(" {reason} ")), "no {reason} event:\n{events}");
    }
    // busybox is in the store and the policy IfNotPresent: no pull, as the kubelet says.
    assert!(events.contains("Container image \"busybox\" already present on machine"), "{events}");
    assert!(!events.contains(" Pulling "), "{events}");
    let cli = outpost(&agent, &["events"]);
    assert!(cli.starts_with("LAST SEEN") && cli.contains(" Started "), "{cli}");
    let cli = outpost(&agent, &["get", "pods"]);
    assert!(cli.lines().nth(1).is_some_and(|l| l.starts_with("web ")), "{cli}");
    let cli = outpost(&agent, &["logs", "web", "--tail", "1", "-p"]);
    assert_eq!(cli, "tick 2\n");

    // The secret's value: not in any API answer nor in the agent's log.
    let mut everything = String::new();
    for args in [
        &["get", "secrets", "-o", "yaml"][..],
        &["get", "pods", "-o", "json"],
        &["get", "events", "-o", "json"],
    ] {
        let (code, out, err) = kubectl(&agent, args);
        assert_eq!(code, 0, "{err}");
        everything += &out;
    }
    everything += &agent.agent_log().join("\n");
    assert!(!everything.contains("hunter2"), "the secret value leaked");
    assert!(everything.contains("password: \"\""), "the secret key is listed with an empty value");
    let _ = Duration::ZERO;
}
