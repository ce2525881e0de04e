//! Container isolation for real (root): what a container can reach of the host through
//! processes the runtime starts in it (exec, probes, hooks) and its own init, and the cgroup
//! filesystem it sees.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{container_status, Agent, BIN, T};

fn started(agent: &Agent, pod: &str) {
    agent.wait_pod(pod, T, |p| container_status(p, "app")["started"] == true);
}

fn exec(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("exec")
        .arg("--state")
        .arg(&agent.state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run outpost exec")
}

/// Scans every process of the container (except itself) for host objects: descriptors that
/// name an outpost path or a namespace, an `exe` that is not the image's busybox, an
/// environment with the agent's `RUST_LOG`. Each finding is logged as a `HIT` line.
const SCANNER: &str = r#"
while :; do
  ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -e outpost -e 'pid:\[' -e 'mnt:\[' -e 'net:\[' | sed 's/^/HIT fd /'
  readlink /proc/[0-9]*/exe 2>/dev/null | grep -v '^/bin/busybox$' | sed 's/^/HIT exe /'
  cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep RUST_LOG | sed 's/^/HIT environ /'
done
"#;

#[test]
fn exec_d_processes_never_expose_host_objects_before_execve() {
    let _guard = crate::support::shared();
    exec_d_processes_expose_nothing("");
}

/// The body of [`exec_d_processes_never_expose_host_objects_before_execve`]; `extra_spec` is
/// added to the pod's spec (`hostUsers: false` runs it again in a user namespace).
pub fn exec_d_processes_expose_nothing(extra_spec: &str) {
    let agent = Agent::start();
    let probe =
        "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n";
    // A shared pid namespace: the scanner also sees the pause, a clone of the supervisor.
    let shared = format!("  shareProcessNamespace: true\n{extra_spec}");
    agent.apply("scan.yaml", &crate::support::pod("scan", SCANNER, probe, &shared));
    let (execs, hits) = execs_while_scanning(&agent, "scan");
    assert!(hits.is_empty(), "after {execs} execs the container reached host objects:\n{hits:#?}");
}

/// Runs `outpost exec POD -- true` for up to 20 s (600 times) while the pod's scanner logs
/// `HIT` lines; the number of execs and the hits.
fn execs_while_scanning(agent: &Agent, pod: &str) -> (usize, Vec<String>) {
    started(agent, pod);
    let start = Instant::now();
    let mut execs = 0;
    while start.elapsed() < Duration::from_secs(20) && execs < 600 {
        let out = exec(agent, &[pod, "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        execs += 1;
        if execs % 50 == 0 && agent.logs(pod, "app", 0).contains("HIT") {
            break;
        }
    }
    // Let the scanner finish its last round.
    std::thread::sleep(Duration::from_millis(500));
    let logs = agent.logs(pod, "app", 0);
    (execs, logs.lines().filter(|l| l.starts_with("HIT")).map(String::from).collect())
}

/// An exec'd process appears in the container's pid namespace only once it is in the
/// container's mount and network namespaces: a container allowed to trace it
/// (`capabilities.add: [SYS_PTRACE]`, non-dumpable is no obstacle then) must never find one
/// of its processes still in the host's, where taking it over would be an escape.
#[test]
fn exec_d_processes_join_the_container_before_it_can_see_them() {
    let _guard = crate::support::shared();
    exec_d_processes_join_first("");
}

/// The body of [`exec_d_processes_join_the_container_before_it_can_see_them`], as
/// [`exec_d_processes_expose_nothing`].
pub fn exec_d_processes_join_first(extra_spec: &str) {
    let ns = |name: &str| std::fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
    let (mnt, net) = (ns("mnt"), ns("net"));
    let pattern = |link: std::path::PathBuf| link.display().to_string().replace('[', "\\[");
    let scanner = format!(
        "while :; do ls -l /proc/[0-9]*/ns/ 2>/dev/null | grep -e '{}' -e '{}' | sed 's/^/HIT /'; done",
        pattern(mnt),
        pattern(net)
    );
    let agent = Agent::start();
    let ptrace = "    securityContext:\n      capabilities:\n        add: [SYS_PTRACE]\n";
    agent.apply("tracer.yaml", &crate::support::pod("tracer", &scanner, ptrace, extra_spec));
    let (execs, hits) = execs_while_scanning(&agent, "tracer");
    assert!(
        hits.is_empty(),
        "after {execs} execs the container saw processes in host namespaces:\n{hits:#?}"
    );
}

fn waiting_reason(pod: &serde_json::Value, container: &str) -> String {
    container_status(pod, container)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .into()
}

#[test]
fn a_container_sees_only_its_stdio_and_never_starts_in_an_inherited_descriptor() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("fds.yaml", &crate::support::pod("fds", "exec sleep 3600", "", ""));
    // CVE-2024-21626: a working directory naming a descriptor the runtime leaked would be a
    // host directory.
    let mut containers = String::new();
    for n in 3..=10 {
        containers.push_str(&format!(
            "  - name: c{n}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    workingDir: /proc/self/fd/{n}\n    command: [\"sh\", \"-c\", \"echo cwd: $(pwd); ls; sleep 3600\"]\n"
        ));
    }
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cwd\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n{containers}"
    );
    agent.apply("cwd.yaml", &manifest);
    started(&agent, "fds");
    // The container's init (sleep, exec'd by the shell) and an exec'd shell.
    let out = exec(&agent, &["fds", "--", "ls", "/proc/1/fd"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n", "{out:?}");
    let out = exec(&agent, &["fds", "--", "sh", "-c", "ls /proc/$$/fd; true"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n", "{out:?}");
    let pod =
        agent.wait_pod("cwd", T, |p| (3..=10).all(|n| start_error(p, &format!("c{n}")).is_some()));
    for n in 3..=10 {
        let c = format!("c{n}");
        assert_ne!(container_status(&pod, &c)["started"], true, "{c} started");
        assert_eq!(agent.logs("cwd", &c, 0), "", "{c} ran");
        // The reason is said (runc's words), not libcontainer's bare "failed to unix syscall".
        let message = start_error(&pod, &c).unwrap_or_default();
        assert!(message.contains("possible container breakout detected"), "{c}: {message}");
    }
}

#[test]
fn the_cgroup_filesystem_is_read_only_unless_privileged() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    // 1 GiB as in the report, then a lower limit, which a writable cgroupfs always accepts
    // (a higher one than memory.memsw.limit_in_bytes, no swap, gets EINVAL).
    let file = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
    let script = format!(
        "echo 1073741824 > {file}; echo 16777216 > {file}; echo rc=$?; echo limit=$(cat {file}); mkdir /sys/fs/cgroup/x; echo mkdir=$?; sleep 3600"
    );
    let limits = "    resources:\n      limits:\n        memory: 32Mi\n";
    agent.apply("limited.yaml", &crate::support::pod("limited", &script, limits, ""));
    let privileged = format!("{limits}    securityContext:\n      privileged: true\n");
    agent.apply("privileged.yaml", &crate::support::pod("privileged", &script, &privileged, ""));
    let logs = agent.wait_logs("limited", "app", "mkdir=", T);
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(!logs.contains("rc=0"), "{logs}");
    assert!(logs.contains("limit=33554432"), "{logs}");
    assert!(!logs.contains("mkdir=0"), "{logs}");
    let logs = agent.wait_logs("privileged", "app", "mkdir=", T);
    assert!(logs.contains("rc=0") && logs.contains("limit=16777216"), "{logs}");
}

#[test]
fn a_missing_working_directory_is_created_in_the_rootfs_or_its_volume() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply(
        "wd.yaml",
        &crate::support::pod(
            "wd",
            "echo cwd: $(pwd); sleep 3600",
            "    workingDir: /does/not/exist\n",
            "",
        ),
    );
    let in_volume =
        "    workingDir: /data/x/y\n    volumeMounts:\n    - name: data\n      mountPath: /data\n";
    let volumes = "  volumes:\n  - name: data\n    emptyDir: {}\n";
    agent.apply(
        "wdvol.yaml",
        &crate::support::pod(
            "wdvol",
            "echo cwd: $(pwd); ls -d /data/x/y; sleep 3600",
            in_volume,
            volumes,
        ),
    );
    let logs = agent.wait_logs("wd", "app", "cwd:", T);
    assert!(logs.contains("cwd: /does/not/exist"), "{logs}");
    let logs = agent.wait_logs("wdvol", "app", "cwd:", T);
    assert!(logs.contains("cwd: /data/x/y"), "{logs}");
}

#[test]
fn a_missing_command_is_named_in_the_containers_status() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nocmd\nspec:\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"no-such-command\", \"arg\"]\n";
    agent.apply("nocmd.yaml", manifest);
    // RunContainerError lasts until the back-off starts; the StartError termination stays.
    let pod = agent.wait_pod("nocmd", T, |p| {
        waiting_reason(p, "app").ends_with("ContainerError") || start_error(p, "app").is_some()
    });
    let message = start_error(&pod, "app").unwrap_or_else(|| {
        container_status(&pod, "app")["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    assert!(
        message.contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{message}"
    );
}

/// The kubelet's view of a container that was created but could not run: `RunContainerError`
/// (or back-off after it) with a `StartError` termination (exit code 128) carrying the message.
fn start_error(pod: &serde_json::Value, container: &str) -> Option<String> {
    let terminated = &container_status(pod, container)["lastState"]["terminated"];
    (terminated["reason"] == "StartError" && terminated["exitCode"] == 128)
        .then(|| terminated["message"].as_str().unwrap_or_default().to_string())
}

/// The agent, its fork server and the supervisors (whose forks become the pause, container
/// inits and exec'd processes) run from a copy of outpost that nobody can write. A container
/// allowed to trace those forks could keep `/proc/PID/exe` open and write through it once no
/// process runs the file any more (CVE-2019-5736): through the kept descriptors, the open for
/// writing must fail with EROFS (the private overlay) or the write with EPERM (a sealed memfd),
/// never reach the host's file.
#[test]
fn outpost_processes_never_run_from_a_writable_binary() {
    let _guard = crate::support::shared();
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;

    let mut agent = Agent::start();
    agent.apply("exe.yaml", &crate::support::pod("exe", "exec sleep 3600", "", ""));
    started(&agent, "exe");
    let mut pids = agent.supervisors();
    assert!(!pids.is_empty(), "no supervisor found");
    pids.push(agent.pid().unwrap() as i32);
    let kept: Vec<(i32, OwnedFd)> = pids
        .iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/exe");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            (*pid, file.into())
        })
        .collect();
    for (pid, fd) in &kept {
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let kind = outpost::runtime::sealed_exe::kind_of(std::path::Path::new(&through)).unwrap();
        assert_ne!(kind, outpost::runtime::sealed_exe::ExeKind::HostFile, "process {pid}");
    }
    agent.delete("exe.yaml");
    agent.wait_gone("exe", T);
    agent.kill();
    let deadline = Instant::now() + T;
    while pids.iter().any(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) {
        assert!(Instant::now() < deadline, "outpost processes still run: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (pid, fd) in &kept {
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // Opened without O_TRUNC and never written unless sealed: the host's file is safe.
        match std::fs::OpenOptions::new().write(true).open(&through) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "process {pid}: {e}"),
            Ok(mut f) => {
                let kind = outpost::runtime::sealed_exe::kind_of(std::path::Path::new(&through));
                assert_eq!(
                    kind.unwrap(),
                    outpost::runtime::sealed_exe::ExeKind::SealedMemfd,
                    "process {pid}: the executable it ran opens for writing"
                );
                let e = std::io::Write::write(&mut f, b"x").unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "process {pid}");
            }
        }
    }
}
