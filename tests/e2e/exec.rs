//! `outpost exec` for real (root): streamed output, stdin, exit codes, and that the process is
//! the container's (rootfs, hostname, env, cwd, user, groups, capabilities, cgroups,
//! namespaces), as with `kubectl exec`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};

use crate::support::{container_status, Agent, BIN, T};

fn exec_command(agent: &Agent, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("exec").arg("--state").arg(&agent.state).args(args);
    cmd
}

fn exec(agent: &Agent, args: &[&str]) -> Output {
    exec_command(agent, args).stdin(Stdio::null()).output().expect("run outpost exec")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn started(agent: &Agent, pod: &str, containers: &[&str]) {
    agent
        .wait_pod(pod, T, |p| containers.iter().all(|c| container_status(p, c)["started"] == true));
}

#[test]
fn output_is_streamed_while_the_command_runs_and_its_exit_code_is_returned() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("stream.yaml", &crate::support::pod("stream", "sleep 3600", "", ""));
    started(&agent, "stream", &["app"]);
    // The command cannot end before /tmp/go exists, and the test creates it only after it has
    // read "first": reading it proves the output arrived while the command was running.
    let script =
        "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second; echo oops >&2; exit 3";
    let mut child: Child = exec_command(&agent, &["stream", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outpost exec");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read the first line");
    assert_eq!(first, "first\n");
    assert!(child.try_wait().expect("try_wait").is_none(), "the command is still waiting");

    let go = exec(&agent, &["stream", "--", "touch", "/tmp/go"]);
    assert_eq!(go.status.code(), Some(0), "{go:?}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read the rest");
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    let status = child.wait().expect("wait");
    assert_eq!((rest.as_str(), err.as_str(), status.code()), ("second\n", "oops\n", Some(3)));
}

#[test]
fn stdin_is_passed_with_dash_i_and_dev_null_without() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("in.yaml", &crate::support::pod("in", "sleep 3600", "", ""));
    started(&agent, "in", &["app"]);
    let mut child =
        exec_command(&agent, &["-i", "in", "--", "sh", "-c", "read l; echo got $l; cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn outpost exec -i");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"hello\nworld\n").expect("write stdin");
    // EOF on our stdin closes the command's: `cat` ends.
    drop(input);
    let out = child.wait_with_output().expect("wait");
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("got hello\nworld\n", Some(0)));

    // Without -i the command reads EOF at once, whatever our stdin holds.
    let mut child = exec_command(&agent, &["in", "--", "sh", "-c", "cat; echo end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn outpost exec");
    child.stdin.take().expect("stdin").write_all(b"ignored\n").expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "end\n");
}

#[test]
fn signals_and_missing_commands_give_kubectl_like_results() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("sig.yaml", &crate::support::pod("sig", "sleep 3600", "", ""));
    started(&agent, "sig", &["app"]);
    let killed = exec(&agent, &["sig", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.status.code(), Some(137));
    let missing = exec(&agent, &["sig", "--", "no-such-command"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.ends_with("exec: \"no-such-command\": executable file not found in $PATH\n"),
        "{stderr}"
    );
    let timed_out = exec(&agent, &["--timeout", "1", "sig", "--", "sleep", "30"]);
    assert_eq!(
        (timed_out.status.code(), String::from_utf8_lossy(&timed_out.stderr).as_ref()),
        (Some(124), "error: command timed out after 1 s\n")
    );
}

#[test]
fn a_disconnected_client_kills_its_command() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("gone.yaml", &crate::support::pod("gone", "sleep 3600", "", ""));
    started(&agent, "gone", &["app"]);
    let mut child =
        exec_command(&agent, &["gone", "--", "sh", "-c", "echo started; exec sleep 1234"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn outpost exec");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line, "started\n");
    let running = || {
        let ps = exec(&agent, &["gone", "--", "ps", "-o", "args"]);
        stdout(&ps).lines().any(|l| l == "sleep 1234")
    };
    assert!(running(), "the command runs while its client is connected");
    // Like Ctrl-C on `kubectl exec`: the client dies, the supervisor kills the process.
    child.kill().expect("kill outpost exec");
    child.wait().expect("wait");
    let start = std::time::Instant::now();
    while running() {
        assert!(start.elapsed() < T, "sleep 1234 still runs after its client died");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Lines of `/proc/<pid>/status` that describe identity and privileges.
const STATUS: &str = "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):'";

/// Prints what the process sees of itself, then the same of the container's init (pid 1 of
/// the container's pid namespace), separated by `---`.
const COMPARE: &str = "for p in self 1; do \
    GREP /proc/$p/status; cat /proc/$p/cgroup /proc/$p/oom_score_adj; \
    for n in mnt net uts ipc pid cgroup; do readlink /proc/$p/ns/$n; done; echo ---; done";

fn self_and_init(agent: &Agent, container: &str) -> (String, String) {
    let script = COMPARE.replace("GREP", STATUS);
    let out = exec(agent, &["-c", container, "who", "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{text}");
    (parts[0].to_string(), parts[1].to_string())
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{field} missing in {status}"))
}

#[test]
fn the_process_is_the_containers_user_groups_capabilities_cgroups_and_namespaces() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let yaml = r#"apiVersion: v1
kind: Pod
metadata:
  name: who
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    supplementalGroups: [4000]
  containers:
  - name: user
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo from-init > /tmp/marker; exec sleep 3600"]
    workingDir: /tmp
    env:
    - {name: FOO, value: bar}
    securityContext:
      runAsUser: 1000
      runAsGroup: 3000
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
  - name: root
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    securityContext:
      capabilities: {drop: [NET_RAW, CHOWN]}
    resources:
      limits: {memory: 64Mi}
"#;
    agent.apply("who.yaml", yaml);
    started(&agent, "who", &["user", "root"]);

    let script = "id -u; id -g; id -G; pwd; echo $FOO; hostname; cat /tmp/marker; cat /proc/1/comm";
    let out = exec(&agent, &["-c", "user", "who", "--", "sh", "-c", script]);
    assert_eq!(
        (stdout(&out).as_str(), out.status.code()),
        ("1000\n3000\n3000 4000\n/tmp\nbar\nwho\nfrom-init\nsleep\n", Some(0))
    );

    let (me, init) = self_and_init(&agent, "user");
    assert_eq!(me, init, "the exec'd process matches the container's init");
    // A non-root user keeps no capabilities past execve; the bounding set is the container's.
    assert_eq!(status_field(&me, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&me, "CapBnd"), "0000000000000400", "NET_BIND_SERVICE only");
    assert_eq!(status_field(&me, "NoNewPrivs"), "1");

    let (me, init) = self_and_init(&agent, "root");
    assert_eq!(me, init, "the exec'd process matches the container's init");
    let eff = u64::from_str_radix(status_field(&me, "CapEff"), 16).expect("CapEff hex");
    // containerd's default set without NET_RAW (13) and CHOWN (0).
    assert_eq!(eff, 0x00000000a80425fb & !(1 << 13) & !1, "{me}");
    assert_eq!(status_field(&me, "NoNewPrivs"), "0");
    // The container's own cgroup (instance 0 of "root"), not the supervisor's.
    assert!(me.lines().any(|l| l.ends_with("/root.0")), "{me}");
}
