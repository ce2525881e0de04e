//! The pod runtime for real (root): supervisor, sandbox, containers, logs, exec, adoption.

use std::time::Duration;

use crate::runtime_support::*;
use outpost::runtime::{Event, ExitInfo, InstanceId, Runtime, SandboxDeath, Signal};

fn exit_of(event: &Event, name: &str) -> Option<ExitInfo> {
    match event {
        Event::ContainerExited { id, exit, .. } if id.name == name => Some(exit.clone()),
        _ => None,
    }
}

async fn wait_exit(events: &smol::channel::Receiver<Event>, name: &str) -> ExitInfo {
    let event = wait_event(events, |e| exit_of(e, name).is_some()).await;
    exit_of(&event, name).expect("exit")
}

#[test]
fn sandbox_hostname_loopback_and_shared_localhost() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let events = rt.events();
        let info = rt.create_sandbox(env.sandbox("uid-net", "web-1")).await.expect("sandbox");
        // No pause process: the namespaces are pinned in the pod directory.
        assert_eq!(info.pause_pid, None);
        assert_eq!(info.netns, Some(info.pod_dir.join("ns/net")));
        // `-e`: a shell reads the socket (its stdout is the socket, so it logs on stderr); nc
        // itself never reads its stdin, whose EOF could end it before the data arrives.
        let server_args =
            ["nc", "-l", "-p", "8080", "-e", "sh", "-c", "read l; echo \"got $l\" >&2"];
        let server = container("server", 0, &env.layer, &server_args);
        rt.start_container("uid-net", server).await.expect("server");
        let client_script = "hostname; for i in $(seq 100); do echo hello | nc 127.0.0.1 8080 && exit 0; sleep 0.05; done; exit 1";
        let client = container("client", 0, &env.layer, &["sh", "-c", client_script]);
        let client = rt.start_container("uid-net", client).await.expect("client");

        let mut exits = std::collections::BTreeMap::new();
        while exits.len() < 2 {
            let event = wait_event(&events, |e| matches!(e, Event::ContainerExited { .. })).await;
            if let Event::ContainerExited { id, exit, .. } = event {
                exits.insert(id.name, exit.exit_code);
            }
        }
        assert_eq!(exits, [("client".to_string(), 0), ("server".to_string(), 0)].into());
        let server_log = std::fs::read_to_string(outpost::runtime::log_path(
            info.pod_dir.parent().unwrap().parent().unwrap(),
            &info.pod_uid,
            "server",
            0,
        ))
        .expect("server log");
        assert!(server_log.ends_with(" stderr F got hello\n"), "{server_log}");
        let lines = cri_lines(&client.log_path);
        assert_eq!(lines[0], ("stdout".into(), "F".into(), "web-1".into()));

        // The supervisor is detached: its own session, not the agent's child.
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", info.supervisor_pid)).expect("stat");
        let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split(' ').collect();
        let (ppid, session): (i32, i32) =
            (fields[1].parse().expect("ppid"), fields[3].parse().expect("sid"));
        assert_ne!(ppid, std::process::id() as i32);
        assert_eq!(session, info.supervisor_pid);

        // The pins are the pod's own namespaces, and the supervisor stepped back to the host's.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(p).expect(p).ino();
        for ns in ["net", "uts", "ipc"] {
            let pin = info.pod_dir.join("ns").join(ns);
            let pinned = std::fs::metadata(&pin).expect("pin").ino();
            assert_ne!(pinned, ino(&format!("/proc/self/ns/{ns}")), "{ns}");
            assert_eq!(
                ino(&format!("/proc/{}/ns/{ns}", info.supervisor_pid)),
                ino(&format!("/proc/self/ns/{ns}")),
                "{ns}"
            );
        }
        rt.remove_sandbox("uid-net", None).await.expect("remove");
    });
}

#[test]
fn loopback_is_up_and_exec_returns_output_and_code() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let info = rt.create_sandbox(env.sandbox("uid-exec", "exec-pod")).await.expect("sandbox");
        let mut app = container("app", 0, &env.layer, &["sleep", "1000"]);
        app.spec.process_mut().as_mut().expect("process").set_oom_score_adj(Some(500));
        let app = rt.start_container("uid-exec", app).await.expect("start");
        // libcontainer writes oomScoreAdj into its caller: the supervisor keeps its own.
        let oom_adj = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj")
        };
        assert_eq!(oom_adj(app.pid), "500\n");
        assert_eq!(oom_adj(info.supervisor_pid), oom_adj(std::process::id() as i32));
        // The workload gets default signal handling (Rust ignores SIGPIPE in the supervisor).
        let signals = |pid: &str| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
            status
                .lines()
                .filter(|l| l.starts_with("SigIgn") || l.starts_with("SigBlk"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            signals(&app.pid.to_string()),
            "SigBlk:\t0000000000000000,SigIgn:\t0000000000000000"
        );
        // Run grep directly: busybox sh itself ignores SIGQUIT for what it starts.
        let status_of_exec = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"];
        let r = rt
            .exec("uid-exec", exec("app", &status_of_exec, Duration::from_secs(10)))
            .await
            .expect("exec");
        assert_eq!(r.stdout, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");

        let second = Duration::from_secs(10);
        let r = rt
            .exec("uid-exec", exec("app", &["cat", "/sys/class/net/lo/flags"], second))
            .await
            .expect("exec");
        assert_eq!(r.stdout, "0x9\n", "lo is UP|LOOPBACK");
        let r = rt
            .exec("uid-exec", exec("app", &["sh", "-c", "echo out; echo err >&2; exit 3"], second))
            .await
            .expect("exec");
        assert_eq!(
            (r.exit_code, r.timed_out, r.stdout.as_str(), r.stderr.as_str(), r.truncated),
            (Some(3), false, "out\n", "err\n", false)
        );
        let mut small = exec("app", &["echo", "123456789"], second);
        small.output_limit = 4;
        let r = rt.exec("uid-exec", small).await.expect("exec");
        assert_eq!((r.exit_code, r.stdout.as_str(), r.truncated), (Some(0), "1234", true));

        let r = rt
            .exec("uid-exec", exec("app", &["sleep", "30"], Duration::from_millis(300)))
            .await
            .expect("exec");
        assert_eq!((r.exit_code, r.timed_out), (None, true));
        // The loop was not blocked and the timed-out process is gone.
        let r = rt
            .exec(
                "uid-exec",
                exec(
                    "app",
                    &["sh", "-c", "hostname; ps -o args | grep -c '^sleep 30$' || true"],
                    second,
                ),
            )
            .await
            .expect("exec");
        assert_eq!(r.stdout, "exec-pod\n0\n");
        let state_dir = env.state_dir().join("pods/uid-exec/state/app.0");
        let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
            .expect("state dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("tenant-notify"))
            .collect();
        assert_eq!(leftovers.len(), 0, "tenant notify sockets are cleaned up");
        rt.remove_sandbox("uid-exec", None).await.expect("remove");
    });
}

#[test]
fn exit_code_and_cri_logs() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let events = rt.events();
        rt.create_sandbox(env.sandbox("uid-exit", "exit")).await.expect("sandbox");
        let script = "echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; printf tail; exit 42";
        let status = rt
            .start_container("uid-exit", container("app", 0, &env.layer, &["sh", "-c", script]))
            .await
            .expect("start");
        let exit = wait_exit(&events, "app").await;
        assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (42, None, false));

        let pod = rt.status("uid-exit").await.expect("status");
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].exit, Some(exit));
        assert_eq!(pod.containers[0].pid, status.pid);

        // Wait for the pipes' EOF (after the exit) before reading the file.
        eventually("the log's last line", || {
            std::fs::read_to_string(&status.log_path).is_ok_and(|l| l.contains("F tail"))
        })
        .await;
        let lines = cri_lines(&status.log_path);
        let stdout: Vec<(String, usize)> =
            lines.iter().filter(|l| l.0 == "stdout").map(|l| (l.1.clone(), l.2.len())).collect();
        assert_eq!(
            stdout,
            vec![
                ("F".into(), 4),
                ("P".into(), 16384),
                ("F".into(), 20000 - 16384),
                ("F".into(), 4)
            ]
        );
        let stderr: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").cloned().collect();
        assert_eq!(stderr, vec![("stderr".into(), "F".into(), "err1".into())]);
        assert_eq!(status.log_path, env.state_dir().join("logs/uid-exit/app/0.log"));

        // A restart is a new instance with its own log; the previous one stays.
        rt.remove_container("uid-exit", &InstanceId::new("app", 0)).await.expect("remove");
        let next = rt
            .start_container("uid-exit", container("app", 1, &env.layer, &["echo", "second"]))
            .await
            .expect("restart");
        assert_eq!(wait_exit(&events, "app").await.exit_code, 0);
        assert!(status.log_path.exists(), "the previous instance's log is kept");
        assert_eq!(next.log_path, env.state_dir().join("logs/uid-exit/app/1.log"));
        rt.remove_sandbox("uid-exit", None).await.expect("remove");
    });
}

#[test]
fn term_ignored_then_kill_gives_137() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let events = rt.events();
        rt.create_sandbox(env.sandbox("uid-kill", "kill")).await.expect("sandbox");
        let script = "trap '' TERM; echo ready; while true; do sleep 1; done";
        let status = rt
            .start_container("uid-kill", container("app", 0, &env.layer, &["sh", "-c", script]))
            .await
            .expect("start");
        eventually("ready", || {
            std::fs::read_to_string(&status.log_path).is_ok_and(|l| l.contains("ready"))
        })
        .await;
        let id = InstanceId::new("app", 0);
        rt.kill_container("uid-kill", &id, Signal::SIGTERM).await.expect("term");
        // An exec round trip after the signal: the container still runs it.
        let r = rt
            .exec("uid-kill", exec("app", &["true"], Duration::from_secs(10)))
            .await
            .expect("exec");
        assert_eq!(r.exit_code, Some(0));
        let pod = rt.status("uid-kill").await.expect("status");
        assert_eq!(pod.containers[0].exit, None);
        assert!(!process_gone(status.pid));

        rt.kill_container("uid-kill", &id, Signal::SIGKILL).await.expect("kill");
        let exit = wait_exit(&events, "app").await;
        assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), false));
        // Killing an exited container is a no-op, like the kubelet's repeated kills.
        rt.kill_container("uid-kill", &id, Signal::SIGKILL).await.expect("kill again");
        rt.remove_sandbox("uid-kill", None).await.expect("remove");
    });
}

#[test]
fn memory_limit_oom_is_reported() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let events = rt.events();
        rt.create_sandbox(env.sandbox("uid-oom", "oom")).await.expect("sandbox");
        // `tail` keeps the last lines of a stream without newlines: it grows until killed.
        let mut config = container("hog", 0, &env.layer, &[]);
        config.spec = spec(&["tail", "/dev/zero"], Some(8 << 20));
        rt.start_container("uid-oom", config).await.expect("start");
        let exit = wait_exit(&events, "hog").await;
        assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), true));
        rt.remove_sandbox("uid-oom", None).await.expect("remove");
    });
}

#[test]
fn shared_process_namespace_and_host_network() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let mut config = env.sandbox("uid-share", "share");
        config.share_process_namespace = true;
        config.host_network = true;
        let info = rt.create_sandbox(config).await.expect("sandbox");
        assert_eq!(info.netns, None);
        rt.start_container("uid-share", container("a", 0, &env.layer, &["sleep", "1000"]))
            .await
            .expect("a");
        rt.start_container("uid-share", container("b", 0, &env.layer, &["sleep", "2000"]))
            .await
            .expect("b");
        let ps = "cat /proc/1/comm; ps -o args | grep -c '^sleep [12]000'";
        let r = rt
            .exec("uid-share", exec("b", &["sh", "-c", ps], Duration::from_secs(10)))
            .await
            .expect("exec");
        assert_eq!(r.stdout, "pause\n2\n");
        // The pause never execs: it must not keep the supervisor's socket or pipes open.
        let pause = info.pause_pid.expect("a pause holds the shared pid namespace");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pause}/fd"))
            .expect("pause fds")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            fds.iter().filter(|fd| fd.parse::<i32>().is_ok_and(|n| n > 2)).count(),
            0,
            "{fds:?}"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        let r = rt
            .exec("uid-share", exec("a", &["hostname"], Duration::from_secs(10)))
            .await
            .expect("exec");
        assert_eq!(r.stdout, host);
        rt.remove_sandbox("uid-share", Some(Duration::from_secs(5))).await.expect("remove");
    });
}

#[test]
fn adoption_after_agent_restart_reports_missed_exit() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let (info, a, b) = {
            let rt = env.runtime();
            let info = rt.create_sandbox(env.sandbox("uid-adopt", "adopt")).await.expect("sandbox");
            let a = rt
                .start_container("uid-adopt", container("a", 0, &env.layer, &["sleep", "1000"]))
                .await
                .expect("a");
            let script = "until [ -e /tmp/go ]; do sleep 0.05; done; exit 7";
            let b = rt
                .start_container("uid-adopt", container("b", 0, &env.layer, &["sh", "-c", script]))
                .await
                .expect("b");
            (info, a, b)
        }; // The agent "dies": the runtime and its connections are dropped.
        std::fs::write(info.pod_dir.join("containers/b.0/rootfs/tmp/go"), "").expect("trigger");
        eventually("b to exit", || process_gone(b.pid)).await;

        let rt = env.runtime();
        let events = rt.events();
        let pods = rt.list().await.expect("list");
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        assert!(pod.supervisor_alive && pod.sandbox_running);
        assert_eq!(
            pod.sandbox.as_ref().map(|s| (s.supervisor_pid, s.pause_pid)),
            Some((info.supervisor_pid, info.pause_pid))
        );
        let summary: Vec<(String, i32, Option<i32>)> = pod
            .containers
            .iter()
            .map(|c| (c.id.name.clone(), c.pid, c.exit.as_ref().map(|e| e.exit_code)))
            .collect();
        assert_eq!(summary, vec![("a".into(), a.pid, None), ("b".into(), b.pid, Some(7))]);

        // The new connection gets the events from now on.
        rt.kill_container("uid-adopt", &InstanceId::new("a", 0), Signal::SIGKILL)
            .await
            .expect("kill");
        assert_eq!(wait_exit(&events, "a").await.exit_code, 137);
        rt.remove_sandbox("uid-adopt", None).await.expect("remove");
    });
}

#[test]
fn remove_sandbox_leaves_no_mounts_cgroups_or_processes() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let info = rt.create_sandbox(env.sandbox("uid-clean", "clean")).await.expect("sandbox");
        let script = "trap 'exit 0' TERM; sleep 1000 & wait";
        let a = rt
            .start_container("uid-clean", container("a", 0, &env.layer, &["sh", "-c", script]))
            .await
            .expect("a");
        let b = rt
            .start_container("uid-clean", container("b", 0, &env.layer, &["sleep", "1000"]))
            .await
            .expect("b");
        let mut mounts = mounts_under(&info.pod_dir);
        mounts.sort();
        let under = |p: &str| info.pod_dir.join(p).to_string_lossy().into_owned();
        let want = ["containers/a.0/rootfs", "containers/b.0/rootfs", "ns/ipc", "ns/net", "ns/uts"];
        assert_eq!(mounts, want.map(under), "two overlays and three pins while running");
        assert!(!cgroups_left(&info.cgroup).is_empty());

        // b ignores SIGTERM (pid-namespace init without handler): the grace ends in SIGKILL.
        rt.remove_sandbox("uid-clean", Some(Duration::from_millis(500))).await.expect("remove");
        assert_eq!(mounts_under(&info.pod_dir), Vec::<String>::new());
        assert_eq!(cgroups_left(&info.cgroup), Vec::<std::path::PathBuf>::new());
        for pid in [info.supervisor_pid, a.pid, b.pid] {
            eventually("processes to end", || process_gone(pid)).await;
        }
        assert!(!info.pod_dir.exists());
        assert_eq!(rt.list().await.expect("list"), vec![]);
    });
}

#[test]
fn dead_supervisor_is_reported_and_cleaned_up() {
    let _guard = crate::support::shared();
    let env = Env::new();
    smol::block_on(async {
        let rt = env.runtime();
        let events = rt.events();
        let info = rt.create_sandbox(env.sandbox("uid-dead", "dead")).await.expect("sandbox");
        let a = rt
            .start_container("uid-dead", container("a", 0, &env.layer, &["sleep", "1000"]))
            .await
            .expect("a");
        // SAFETY: kill(2) on the supervisor this test started.
        unsafe { libc::kill(info.supervisor_pid, libc::SIGKILL) };
        let died = wait_event(&events, |e| matches!(e, Event::SandboxDied { .. })).await;
        assert_eq!(
            died,
            Event::SandboxDied { pod_uid: "uid-dead".into(), cause: SandboxDeath::SupervisorLost }
        );
        eventually("the supervisor to be gone", || process_gone(info.supervisor_pid)).await;

        let pod = rt.status("uid-dead").await.expect("status");
        assert!(!pod.supervisor_alive);
        assert_eq!(pod.containers.iter().map(|c| c.pid).collect::<Vec<_>>(), vec![a.pid]);
        rt.remove_sandbox("uid-dead", None).await.expect("gc");
        assert_eq!(mounts_under(&info.pod_dir), Vec::<String>::new());
        assert_eq!(cgroups_left(&info.cgroup), Vec::<std::path::PathBuf>::new());
        for pid in [a.pid] {
            eventually("processes to end", || process_gone(pid)).await;
        }
        assert!(!info.pod_dir.exists());
    });
}
