//! seccomp for real (root): the default profile (outpost's `--seccomp-default`), Unconfined,
//! Localhost profiles, and the filter of exec'd processes.

use std::process::{Command, Stdio};

use crate::support::{container_status, Agent, BIN, T};

/// Prints the shell's seccomp mode and capability sets, then whether `unshare -U` (a new user namespace: no
/// capability needed, but the default profile allows unshare only with CAP_SYS_ADMIN) and
/// `mkdir` work, then sleeps.
const PROBE: &str = "grep -E '^(Seccomp|CapPrm|CapEff|CapBnd):' /proc/self/status; \
    if unshare -U true 2>/tmp/err; then echo unshare-ok; else echo unshare-failed: $(cat /tmp/err); fi; \
    if mkdir /tmp/d 2>/tmp/err; then echo mkdir-ok; else echo mkdir-failed: $(cat /tmp/err); fi; \
    echo done; exec sleep 3600";

fn container(name: &str, security: &str) -> String {
    format!(
        "  - name: {name}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {PROBE:?}]\n{security}"
    )
}

fn pod(name: &str, pod_security: &str, containers: &[String]) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n{pod_security}  containers:\n{}",
        containers.concat()
    )
}

/// containerd's default capabilities as a mask (docker's `00000000a80425fb`).
const DEFAULT_CAPS: u64 = 0xa80425fb;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// The container's capability sets: (permitted, effective, bounding).
fn caps(agent: &Agent, pod: &str, container: &str) -> (u64, u64, u64) {
    let logs = agent.wait_logs(pod, container, "done", T);
    let set = |name: &str| {
        let hex = logs
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{pod}/{container}: no {name} line in {logs}"));
        u64::from_str_radix(hex.trim(), 16).expect("hex mask")
    };
    (set("CapPrm:"), set("CapEff:"), set("CapBnd:"))
}

/// The container's report: (Seccomp mode, unshare line, mkdir line).
fn report(agent: &Agent, pod: &str, container: &str) -> (String, String, String) {
    let logs = agent.wait_logs(pod, container, "done", T);
    let line = |prefix: &str| {
        logs.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{pod}/{container}: no {prefix} line in {logs}"))
            .to_string()
    };
    let mode = line("Seccomp:").trim_start_matches("Seccomp:").trim().to_string();
    (mode, line("unshare-"), line("mkdir-"))
}

fn exec(agent: &Agent, pod: &str, container: &str, script: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["exec", "--state"])
        .arg(&agent.state)
        .args(["-c", container, pod, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run outpost exec");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

const SECCOMP_OF_SELF: &str = "grep Seccomp: /proc/self/status";

#[test]
fn default_profile_unconfined_and_exec() {
    let _guard = crate::support::shared();
    let agent = Agent::start();

    agent.apply(
        "a.yaml",
        &pod(
            "a",
            "",
            &[
                container("plain", ""),
                // no_new_privs and a user: libcontainer loads the filter last; so does exec.
                container(
                    "nnp",
                    "    securityContext:\n      runAsUser: 1000\n      allowPrivilegeEscalation: false\n",
                ),
                // A user without no_new_privs: the filter is loaded with a CAP_SYS_ADMIN
                // the process gives up right after.
                container("user", "    securityContext:\n      runAsUser: 1000\n"),
                container("unconfined", "    securityContext:\n      seccompProfile: {type: Unconfined}\n"),
                container("admin", "    securityContext:\n      capabilities: {add: [SYS_ADMIN]}\n"),
            ],
        ),
    );
    // Pod-level RuntimeDefault, overridden by one container.
    agent.apply(
        "b.yaml",
        &pod(
            "b",
            "  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n",
            &[
                container("inherits", ""),
                container(
                    "overrides",
                    "    securityContext:\n      seccompProfile: {type: Unconfined}\n",
                ),
            ],
        ),
    );

    let (mode, unshare, mkdir) = report(&agent, "a", "plain");
    assert_eq!(mode, "2", "no profile: outpost's default RuntimeDefault");
    // EPERM from the filter: the same call works unconfined (below) and with CAP_SYS_ADMIN,
    // which the default profile honours.
    assert!(unshare.contains("Operation not permitted"), "{unshare}");
    assert_eq!(mkdir, "mkdir-ok");
    let (mode, unshare, _) = report(&agent, "a", "user");
    assert_eq!(mode, "2");
    assert!(unshare.contains("Operation not permitted"), "{unshare}");
    // Exactly the spec's sets: the CAP_SYS_ADMIN kept to load the filter is gone.
    assert_eq!(caps(&agent, "a", "plain"), (DEFAULT_CAPS, DEFAULT_CAPS, DEFAULT_CAPS));
    assert_eq!(caps(&agent, "a", "user"), (0, 0, DEFAULT_CAPS));
    assert_eq!(caps(&agent, "a", "nnp"), (0, 0, DEFAULT_CAPS));
    let all = DEFAULT_CAPS | CAP_SYS_ADMIN;
    assert_eq!(caps(&agent, "a", "admin"), (all, all, all));
    let (mode, unshare, _) = report(&agent, "a", "unconfined");
    assert_eq!((mode.as_str(), unshare.as_str()), ("0", "unshare-ok"));
    // Privileged containers (never filtered) are checked on the spec only
    // (runtime::spec::seccomp's tests): they do not start on these hosts (libcontainer's
    // "failed syscall", before and without this change).
    let (mode, unshare, _) = report(&agent, "a", "admin");
    assert_eq!((mode.as_str(), unshare.as_str()), ("2", "unshare-ok"));
    let (mode, unshare, _) = report(&agent, "a", "nnp");
    assert_eq!(mode, "2");
    assert!(unshare.contains("Operation not permitted"), "{unshare}");
    assert_eq!(report(&agent, "b", "inherits").0, "2");
    assert_eq!(report(&agent, "b", "overrides").0, "0");

    // Processes started with `outpost exec` get the container's filter (with and without
    // no_new_privs), and none when the container has none.
    for (c, want) in [("plain", "2"), ("nnp", "2"), ("unconfined", "0")] {
        let (code, out) = exec(&agent, "a", c, SECCOMP_OF_SELF);
        assert_eq!((code, out.split_whitespace().nth(1)), (Some(0), Some(want)), "{c}: {out}");
    }
    let (code, out) = exec(&agent, "a", "plain", "unshare -U true");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
fn localhost_profiles_are_read_from_the_state_directory() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let dir = agent.state.join("seccomp/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    let deny_mkdir = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    std::fs::write(dir.join("deny-mkdir.json"), deny_mkdir.to_string()).unwrap();
    let local = |file: &str| {
        format!("    securityContext:\n      seccompProfile: {{type: Localhost, localhostProfile: profiles/{file}}}\n")
    };
    agent.apply("l.yaml", &pod("l", "", &[container("app", &local("deny-mkdir.json"))]));
    agent.apply("m.yaml", &pod("m", "", &[container("app", &local("missing.json"))]));

    let (mode, unshare, mkdir) = report(&agent, "l", "app");
    assert_eq!((mode.as_str(), unshare.as_str()), ("2", "unshare-ok"));
    assert!(mkdir.contains("Permission denied"), "the profile's errno (EACCES): {mkdir}");
    let (code, out) = exec(&agent, "l", "app", "mkdir /tmp/e");
    assert!(code != Some(0) && out.contains("Permission denied"), "{code:?} {out}");

    let missing = dir.join("missing.json");
    let p = agent.wait_pod("m", T, |p| {
        container_status(p, "app")["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let message = container_status(&p, "app")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert!(message.contains("No such file"), "{message}");
}

#[test]
fn seccomp_default_false_leaves_pods_without_a_profile_unconfined() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--seccomp-default=false"]);
    agent.apply(
        "k.yaml",
        &pod(
            "k",
            "",
            &[
                container("plain", ""),
                container(
                    "asks",
                    "    securityContext:\n      seccompProfile: {type: RuntimeDefault}\n",
                ),
            ],
        ),
    );
    let (mode, unshare, _) = report(&agent, "k", "plain");
    assert_eq!((mode.as_str(), unshare.as_str()), ("0", "unshare-ok"));
    assert_eq!(report(&agent, "k", "asks").0, "2");
}
