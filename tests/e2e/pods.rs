//! Real pods through `outpost run`: busybox containers on libcontainer, as root.

use crate::support::{container_status, phase, pod, Agent, T};

#[test]
fn a_container_runs_to_completion_with_its_exit_code() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("ok.yaml", &pod("ok", "echo done", "", "  restartPolicy: Never\n"));
    agent.apply("fail.yaml", &pod("fail", "exit 3", "", "  restartPolicy: Never\n"));
    let ok = agent.wait_pod("ok", T, |p| phase(p) == "Succeeded");
    let term = &container_status(&ok, "app")["state"]["terminated"];
    assert_eq!((term["exitCode"].as_i64(), term["reason"].as_str()), (Some(0), Some("Completed")));
    let fail = agent.wait_pod("fail", T, |p| phase(p) == "Failed");
    let term = &container_status(&fail, "app")["state"]["terminated"];
    assert_eq!((term["exitCode"].as_i64(), term["reason"].as_str()), (Some(3), Some("Error")));
    assert_eq!(agent.logs("ok", "app", 0), "done");
}

#[test]
fn containers_share_localhost_an_empty_dir_and_the_pod_hostname() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let yaml = r#"apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumeMounts:
    - {name: www, mountPath: /www}
  - name: client
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "hostname; echo shared-data > /www/index.html; until wget -q -O - http://127.0.0.1:8080/index.html; do sleep 0.2; done; sleep 3600"]
    volumeMounts:
    - {name: www, mountPath: /www}
  volumes:
  - name: www
    emptyDir: {}
"#;
    agent.apply("shared.yaml", yaml);
    agent.wait_pod("shared", T, |p| phase(p) == "Running");
    let logs = agent.wait_logs("shared", "client", "shared-data", T);
    assert_eq!(logs.lines().next(), Some("shared"), "hostname is the pod name: {logs}");
}

#[test]
fn pod_ip_is_assigned_and_visible_inside_the_pod() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let yaml = pod(
        "ip",
        "echo POD_IP=$POD_IP; ip=$(ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'); echo ETH0=$ip; sleep 3600",
        "    env:\n    - name: POD_IP\n      valueFrom:\n        fieldRef: {fieldPath: status.podIP}\n",
        "",
    );
    agent.apply("ip.yaml", &yaml);
    let p = agent.wait_pod("ip", T, |p| phase(p) == "Running" && p["status"]["podIP"].is_string());
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let logs = agent.wait_logs("ip", "app", "ETH0=", T);
    assert!(logs.contains(&format!("POD_IP={ip}")), "{logs}");
    assert!(logs.contains(&format!("ETH0={ip}")), "{logs}");
}

#[test]
fn env_expansion_and_config_maps_and_secrets_as_env_and_files() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let yaml = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  GREETING: hello
  app.conf: "mode=one"
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData:
  TOKEN: s3cr3t
---
apiVersion: v1
kind: Pod
metadata: {name: cfg}
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo '$(MSG)' \"$TOKEN $CFG_GREETING\" '$$(KEEP)'; while true; do cat /etc/app/app.conf; echo; ls /etc/sec; sleep 0.3; done"]
    env:
    - name: WHO
      value: world
    - name: MSG
      value: "$(GREETING) $(WHO)"
    - name: GREETING
      valueFrom:
        configMapKeyRef: {name: cfg, key: GREETING}
    envFrom:
    - secretRef: {name: sec}
    - configMapRef: {name: cfg}
      prefix: CFG_
    volumeMounts:
    - {name: conf, mountPath: /etc/app}
    - {name: sec, mountPath: /etc/sec}
  volumes:
  - name: conf
    configMap: {name: cfg}
  - name: sec
    secret: {secretName: sec}
"#;
    agent.apply("cfg.yaml", yaml);
    agent.wait_pod("cfg", T, |p| phase(p) == "Running");
    // MSG is expanded from variables defined before it only: GREETING comes later.
    let logs = agent.wait_logs("cfg", "app", "mode=one", T);
    assert_eq!(logs.lines().next(), Some("$(GREETING) world s3cr3t hello $(KEEP)"), "{logs}");
    assert!(logs.contains("TOKEN"), "secret volume lists its key: {logs}");
    // A ConfigMap edit reaches the mounted file without a restart.
    agent.apply("cfg.yaml", &yaml.replace("mode=one", "mode=two"));
    agent.wait_logs("cfg", "app", "mode=two", T);
    let p = agent.pod("cfg").unwrap();
    assert_eq!(container_status(&p, "app")["restartCount"], 0);
}

#[test]
fn command_and_args_follow_the_kubernetes_rules() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    // busybox's image has Cmd ["sh"] and no Entrypoint.
    let args_only = "apiVersion: v1\nkind: Pod\nmetadata: {name: args}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    args: [\"echo\", \"from-args\"]\n";
    let both = "apiVersion: v1\nkind: Pod\nmetadata: {name: both}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"echo\"]\n    args: [\"from\", \"both\"]\n";
    let neither = "apiVersion: v1\nkind: Pod\nmetadata: {name: neither}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n";
    agent.apply("args.yaml", args_only);
    agent.apply("both.yaml", both);
    agent.apply("neither.yaml", neither);
    agent.wait_pod("args", T, |p| phase(p) == "Succeeded");
    agent.wait_pod("both", T, |p| phase(p) == "Succeeded");
    // `sh` with stdin at /dev/null exits 0 at once.
    agent.wait_pod("neither", T, |p| phase(p) == "Succeeded");
    assert_eq!(agent.logs("args", "app", 0), "from-args");
    assert_eq!(agent.logs("both", "app", 0), "from both");
}

#[test]
fn security_context_read_only_root_and_run_as_user() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let ro = pod(
        "ro",
        "touch /probe 2>&1; echo uid=$(id -u) gid=$(id -g)",
        "    securityContext:\n      readOnlyRootFilesystem: true\n      runAsUser: 1000\n      runAsGroup: 3000\n",
        "  restartPolicy: Never\n",
    );
    agent.apply("ro.yaml", &ro);
    agent.wait_pod("ro", T, |p| phase(p) == "Succeeded");
    let logs = agent.logs("ro", "app", 0);
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(logs.contains("uid=1000 gid=3000"), "{logs}");
}

#[test]
fn termination_message_is_reported() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply(
        "msg.yaml",
        &pod(
            "msg",
            "echo 'all done' > /dev/termination-log; exit 2",
            "",
            "  restartPolicy: Never\n",
        ),
    );
    let p = agent.wait_pod("msg", T, |p| phase(p) == "Failed");
    let term = &container_status(&p, "app")["state"]["terminated"];
    assert_eq!(term["message"].as_str(), Some("all done\n"));
    let fallback = pod(
        "fallback",
        "echo last words; exit 1",
        "    terminationMessagePolicy: FallbackToLogsOnError\n",
        "  restartPolicy: Never\n",
    );
    agent.apply("fallback.yaml", &fallback);
    let p = agent.wait_pod("fallback", T, |p| phase(p) == "Failed");
    assert_eq!(
        container_status(&p, "app")["state"]["terminated"]["message"].as_str(),
        Some("last words")
    );
}

#[test]
fn deleting_a_pod_leaves_nothing_behind() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent
        .apply("gone.yaml", &pod("gone", "sleep 3600", "", "  terminationGracePeriodSeconds: 2\n"));
    agent.wait_pod("gone", T, |p| phase(p) == "Running");
    // The supervisor.
    assert!(!agent.supervisors().is_empty());
    assert!(!agent.mounts().is_empty(), "a running pod has mounts (shm)");
    agent.delete("gone.yaml");
    agent.wait_gone("gone", T);
    let deadline = std::time::Instant::now() + T;
    while (!agent.supervisors().is_empty() || !agent.mounts().is_empty())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(agent.supervisors(), Vec::<i32>::new(), "supervisor still running");
    assert_eq!(agent.mounts(), Vec::<String>::new(), "mounts left behind");
    let pods = std::fs::read_dir(agent.state.join("pods")).map(|d| d.count()).unwrap_or(0);
    let data = std::fs::read_dir(agent.state.join("pod-data")).map(|d| d.count()).unwrap_or(0);
    assert_eq!((pods, data), (0, 0), "pod directories left behind");
}

#[test]
fn bad_pods_show_kubernetes_reasons_and_others_keep_running() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("good.yaml", &pod("good", "sleep 3600", "", ""));
    agent.apply(
        "noimage.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers:\n  - name: app\n    image: example.invalid/none:1\n    imagePullPolicy: Never\n",
    );
    agent.apply(
        "nokey.yaml",
        &pod(
            "nokey",
            "sleep 3600",
            "    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {name: missing, key: k}\n",
            "",
        ),
    );
    agent.apply(
        "nohost.yaml",
        &pod(
            "nohost",
            "sleep 3600",
            "    volumeMounts:\n    - {name: h, mountPath: /h}\n",
            "  volumes:\n  - name: h\n    hostPath: {path: /nonexistent/outpost-e2e, type: Directory}\n",
        ),
    );
    agent.wait_pod("good", T, |p| phase(p) == "Running");
    let reason = |p: &serde_json::Value| {
        container_status(p, "app")["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let p = agent.wait_pod("noimage", T, |p| reason(p) == "ErrImageNeverPull");
    assert_eq!(phase(&p), "Pending");
    assert_eq!(
        container_status(&p, "app")["state"]["waiting"]["message"],
        "Container image \"example.invalid/none:1\" is not present with pull policy of Never"
    );
    let p = agent.wait_pod("nokey", T, |p| reason(p) == "CreateContainerConfigError");
    assert_eq!(
        container_status(&p, "app")["state"]["waiting"]["message"],
        "configmap \"missing\" not found"
    );
    let p = agent.wait_pod("nohost", T, |p| reason(p) == "ContainerCreating");
    assert_eq!(phase(&p), "Pending");
    // The healthy pod was never disturbed.
    let good = agent.pod("good").unwrap();
    assert_eq!(
        (phase(&good), container_status(&good, "app")["restartCount"].as_i64()),
        ("Running", Some(0))
    );
}

#[test]
fn exec_probe_liveness_restarts_a_failing_container() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let yaml = pod(
        "live",
        "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600",
        "    livenessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/healthy\"]\n      periodSeconds: 1\n      failureThreshold: 2\n",
        "  terminationGracePeriodSeconds: 1\n",
    );
    agent.apply("live.yaml", &yaml);
    let p = agent
        .wait_pod("live", T, |p| container_status(p, "app")["restartCount"].as_i64() >= Some(1));
    let last = &container_status(&p, "app")["lastState"]["terminated"];
    assert_eq!(last["exitCode"].as_i64(), Some(137), "{last}");
}

#[test]
fn outpost_exec_runs_in_the_container_with_its_exit_code() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("ex.yaml", &pod("ex", "echo hi > /tmp/marker; sleep 3600", "", ""));
    agent.wait_pod("ex", T, |p| container_status(p, "app")["started"] == true);
    agent.wait_logs("ex", "app", "", T);
    let out = std::process::Command::new(crate::support::BIN)
        .args(["exec", "--state"])
        .arg(&agent.state)
        .args(["ex", "--", "sh", "-c", "hostname; cat /tmp/marker; echo oops >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ex\nhi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));
    let missing = std::process::Command::new(crate::support::BIN)
        .args(["exec", "--state"])
        .arg(&agent.state)
        .args(["nosuchpod", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "error: pod default/nosuchpod is not running on this device\n"
    );
}

/// A container whose spec is larger than the supervisor takes (five ~0.9 MiB ConfigMaps in
/// `envFrom`) fails alone with CreateContainerError saying why; its sandbox and its healthy
/// sibling keep running (the request must not cut the pod's supervisor connection, which would
/// recreate the sandbox every 10 s).
#[test]
fn an_oversized_container_spec_fails_that_container_alone() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let mut env_from = String::new();
    for i in 0..5 {
        let mut cm = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big{i}\ndata:\n");
        for k in 0..900 {
            cm.push_str(&format!("  K{i}_{k}: \"{}\"\n", "x".repeat(1000)));
        }
        agent.apply(&format!("big{i}.yaml"), &cm);
        env_from.push_str(&format!("    - configMapRef: {{name: big{i}}}\n"));
    }
    let yaml = format!(
        "{}    envFrom:\n{env_from}  - name: healthy\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo up; sleep 3600\"]\n",
        pod("big", "sleep 3600", "", "")
    );
    agent.apply("big.yaml", &yaml);
    let p = agent.wait_pod("big", T, |p| {
        container_status(p, "app")["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let message = container_status(&p, "app")["state"]["waiting"]["message"].as_str().unwrap_or("");
    assert!(message.contains("over the runtime's limit"), "{message}");
    agent.wait_logs("big", "healthy", "up", T);
    std::thread::sleep(std::time::Duration::from_secs(12));
    let p = agent.pod("big").unwrap();
    let healthy = container_status(&p, "healthy");
    assert_eq!(healthy["restartCount"].as_i64(), Some(0), "{healthy}");
    assert!(healthy["state"]["running"].is_object(), "{healthy}");
    let log = agent.agent_log();
    assert!(!log.iter().any(|l| l.contains("supervisor is gone")), "the supervisor was lost");
}
