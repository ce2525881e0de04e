//! `kubectl exec`, `cp` and `port-forward` with the real kubectl against a real agent: through
//! the agent's admin unix socket (`--api-socket`), reached over a small TCP forwarder since
//! kubectl speaks TCP only; and the plain listener's read-only callers refused.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{container_status, Agent, T};

/// An agent with an admin socket and a TCP forwarder to it: (agent, `http://127.0.0.1:PORT`,
/// the socket's directory).
fn admin_agent() -> (Agent, String, tempfile::TempDir) {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("api.sock");
    let agent = Agent::start_with(&["--api-socket", socket.to_str().unwrap()]);
    let server = forward_to(socket);
    (agent, server, socket_dir)
}

/// Accepts TCP connections and copies bytes to and from a new connection to `socket`.
fn forward_to(socket: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let Ok(unix) = UnixStream::connect(&socket) else { continue };
            let (tcp2, unix2) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
            std::thread::spawn(move || copy(tcp, unix));
            std::thread::spawn(move || copy(unix2, tcp2));
        }
    });
    format!("http://{addr}")
}

fn copy(mut from: impl Read + Shut, mut to: impl Write + Shut) {
    let _ = std::io::copy(&mut from, &mut to);
    to.shut();
}

trait Shut {
    fn shut(&self);
}
impl Shut for TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}
impl Shut for UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

fn kubectl(server: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", "/dev/null").arg("--server").arg(server).args(args);
    cmd
}

/// kubectl with its stdin, stdout and stderr piped to the test.
fn piped(server: &str, args: &[&str]) -> std::process::Child {
    kubectl(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl")
}

fn run(server: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = piped(server, args);
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "kubectl {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn started(agent: &Agent, pod: &str) {
    agent.wait_pod(pod, T, |p| container_status(p, "app")["started"] == true);
}

#[test]
fn exec_streams_stdin_and_output_and_returns_the_exit_code() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("shell.yaml", &crate::support::pod("shell", "sleep 3600", "", ""));
    started(&agent, "shell");

    // Without stdin: output on both streams, success.
    let out = run(&server, &["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // With stdin (-i): what is written comes back, and its end ends the command.
    let input: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    let out = run(&server, &["exec", "-i", "shell", "--", "cat"], &input);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == input, "cat returned {} bytes of {}", out.stdout.len(), input.len());

    // The exit code is kubectl's.
    let out = run(&server, &["exec", "shell", "--", "sh", "-c", "exit 3"], b"");
    assert_eq!(out.status.code(), Some(3));

    // An unknown container is named in the error.
    let out = run(&server, &["exec", "shell", "-c", "nope", "--", "true"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container nope is not valid for pod shell"), "{err}");
}

#[test]
fn exec_with_a_terminal_gets_its_size() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("tty.yaml", &crate::support::pod("tty", "sleep 3600", "", ""));
    started(&agent, "tty");
    // kubectl uses a terminal only when its own stdin and stdout are one.
    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize { ws_row: 33, ws_col: 111, ws_xpixel: 0, ws_ypixel: 0 }),
        None,
    )
    .unwrap();
    let slave = std::fs::File::from(pty.slave);
    // kubectl sends the size once connected, possibly after the command started (as with
    // the kubelet); until then busybox's stty prints an error for the 0x0 terminal (exit 0).
    let script = "test -t 0 && echo IS-A-TTY; \
                  until s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != '0 0' ]; \
                  do sleep 0.1; done; echo \"$s\"; exit 7";
    let mut child = kubectl(&server, &["exec", "-it", "tty", "--", "sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    let reader = std::thread::spawn(move || {
        let _ = master.read_to_end(&mut output); // EIO once kubectl is gone
        output
    });
    let status = wait_for(&mut child, T);
    let output = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(output.contains("IS-A-TTY"), "{output:?}");
    assert!(output.contains("33 111"), "{output:?}");
    assert_eq!(status, Some(7), "{output:?}");
}

fn wait_for(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("kubectl did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cp_copies_files_both_ways() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("files.yaml", &crate::support::pod("files", "sleep 3600", "", ""));
    started(&agent, "files");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &content).unwrap();
    let out = run(&server, &["cp", local.to_str().unwrap(), "files:/tmp/up.bin"], b"");
    assert_eq!(out.status.code(), Some(0));
    let back = dir.path().join("down.bin");
    let out = run(&server, &["cp", "files:/tmp/up.bin", back.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::read(&back).unwrap() == content, "the file came back different");
    // And the copy is really in the container.
    let out = run(&server, &["exec", "files", "--", "md5sum", "/tmp/up.bin"], b"");
    let sum = String::from_utf8_lossy(&out.stdout);
    let local_sum = Command::new("md5sum").arg(&local).output().unwrap();
    let local_sum = String::from_utf8_lossy(&local_sum.stdout);
    assert_eq!(sum.split(' ').next(), local_sum.split(' ').next());
}

#[test]
fn the_read_only_listener_is_refused_exec() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("ro.yaml", &crate::support::pod("ro", "sleep 3600", "", ""));
    started(&agent, "ro");
    let server = format!("http://{}", agent.addr);
    let out = run(&server, &["exec", "ro", "--", "true"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden") && err.contains("admin"), "{err}");
    let out = run(&server, &["port-forward", "ro", "18080:80"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden"), "{err}");
}

/// A plain HTTP/1.0 GET through `addr`; the whole answer.
fn http_get(addr: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

#[test]
fn port_forward_carries_connections_to_the_pods_ports() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    let script = "mkdir -p /tmp/a /tmp/b; echo page-A > /tmp/a/index.html; \
                  echo page-B > /tmp/b/index.html; \
                  dd if=/dev/zero of=/tmp/a/big bs=1024 count=2048 2>/dev/null; \
                  httpd -p 127.0.0.1:8080 -h /tmp/a; httpd -p 8081 -h /tmp/b; sleep 3600";
    agent.apply("web.yaml", &crate::support::pod("web", script, "", ""));
    started(&agent, "web");
    let mut child = kubectl(&server, &["port-forward", "web", ":8080", ":8081", ":9999"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let errors2 = errors.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            eprintln!("kubectl port-forward| {line}");
            errors2.lock().unwrap().push_str(&line);
        }
    });
    // "Forwarding from 127.0.0.1:41234 -> 8080", one line per port.
    let mut local = HashMap::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    while local.len() < 3 {
        let line = lines.next().expect("kubectl port-forward ended").unwrap();
        eprintln!("kubectl port-forward: {line}");
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (l, r) = rest.split_once(" -> ").unwrap();
            local.insert(r.to_string(), format!("127.0.0.1:{l}"));
        }
    }
    std::thread::spawn(move || lines.for_each(drop));

    // Two ports, several connections at once.
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (port, page) = if i % 2 == 0 { ("8080", "page-A") } else { ("8081", "page-B") };
            let addr = local[port].clone();
            std::thread::spawn(move || (page, http_get(&addr, "/index.html")))
        })
        .collect();
    for c in clients {
        let (page, answer) = c.join().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.") && answer.contains(page), "{answer}");
    }
    // A larger answer arrives whole.
    let big = http_get(&local["8080"], "/big");
    let body = big.windows(4).position(|w| w == b"\r\n\r\n").map(|i| big.len() - i - 4);
    assert_eq!(body, Some(2048 * 1024));

    // Nothing listens on 9999: the error stream says so and kubectl prints it; kubectl 1.32
    // then closes its connection itself ("lost connection to pod"), as with a kubelet.
    let mut refused = TcpStream::connect(&local["9999"]).unwrap();
    let _ = refused.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let start = Instant::now();
    let message = "error forwarding port 9999 to pod web_default";
    while !errors.lock().unwrap().contains(message) {
        assert!(start.elapsed() < T, "no error from kubectl: {}", errors.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        errors.lock().unwrap().contains("failed to connect to localhost:9999"),
        "{}",
        errors.lock().unwrap()
    );
    assert_ne!(wait_for(&mut child, T), Some(0));
}

#[test]
fn attach_follows_the_containers_output_until_it_exits() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    let script = "echo before-attach; while [ ! -e /tmp/go ]; do sleep 0.1; done; \
                  echo line-1; echo line-2 >&2; sleep 0.5; exit 0";
    let pod = crate::support::pod("talker", script, "", "  restartPolicy: Never\n");
    agent.apply("talker.yaml", &pod);
    started(&agent, "talker");
    let child = kubectl(&server, &["attach", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !agent.agent_log().iter().any(|l| l.contains("api: attach default/talker started")) {
        assert!(start.elapsed() < T, "kubectl attach did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Input cannot be attached: without `stdin: true`, a container's stdin is /dev/null.
    let out = run(&server, &["attach", "-i", "talker"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unable to attach stdin - container app did not enable it"), "{err}");
    let out = run(&server, &["exec", "talker", "--", "touch", "/tmp/go"], b"");
    assert_eq!(out.status.code(), Some(0));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // From the attach on: what was written before is not repeated.
    assert!(stdout.contains("line-1") && stdout.contains("line-2"), "{stdout}");
    assert!(!stdout.contains("before-attach"), "{stdout}");
}

#[test]
fn a_client_that_goes_away_takes_its_process_with_it() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("victim.yaml", &crate::support::pod("victim", "sleep 3600", "", ""));
    started(&agent, "victim");
    let mut child =
        kubectl(&server, &["exec", "victim", "--", "sh", "-c", "echo up; exec sleep 777"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let mut line = [0u8; 3];
    child.stdout.take().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"up\n");
    let sleeping = || {
        let out = run(&server, &["exec", "victim", "--", "ps", "-o", "args"], b"");
        String::from_utf8_lossy(&out.stdout).contains("sleep 777")
    };
    assert!(sleeping(), "the exec'd process is not running");
    // Like Ctrl-C on kubectl: the connection drops, the agent drops the supervisor's, which
    // kills the process.
    child.kill().unwrap();
    let _ = child.wait();
    let start = Instant::now();
    while sleeping() {
        assert!(start.elapsed() < T, "the process outlived its client");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exec_into_a_container_that_is_not_running_says_so() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("crash.yaml", &crate::support::pod("crash", "exit 1", "", ""));
    agent.wait_pod("crash", T, |p| {
        container_status(p, "app")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let out = run(&server, &["exec", "crash", "--", "true"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container app in pod crash is not running"), "{err}");
}

/// kubectl's output so far, read by a thread.
fn collect(from: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut from = from;
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

#[track_caller]
fn wait_text(text: &std::sync::Mutex<String>, wanted: &str) {
    let start = Instant::now();
    while !text.lock().unwrap().contains(wanted) {
        assert!(start.elapsed() < T, "no {wanted:?} in {:?}", text.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attach_writes_to_the_stdin_of_a_container_with_a_terminal() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    let pod = crate::support::pod("term", "exec sh", "    stdin: true\n    tty: true\n", "");
    agent.apply("term.yaml", &pod);
    started(&agent, "term");
    // kubectl makes it a terminal session itself (the container has one), without resizes:
    // its own stdin is a pipe.
    let mut child = piped(&server, &["attach", "-i", "term"]);
    let out = collect(child.stdout.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"echo hello-$((6*7))\n").unwrap();
    // Computed by the shell: the terminal's echo of the line does not contain it. The next
    // prompt shows though no newline follows it (a terminal's output is logged as it comes).
    wait_text(&out, "hello-42\r\n/ # ");
    // The container's output is its log too, as stdout.
    let log = run(&server, &["logs", "term"], b"");
    assert!(String::from_utf8_lossy(&log.stdout).contains("hello-42"));
    let _ = child.kill();
    let _ = child.wait();

    // With kubectl on a terminal: -it sends its size over the resize channel.
    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize { ws_row: 33, ws_col: 111, ws_xpixel: 0, ws_ypixel: 0 }),
        None,
    )
    .unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = kubectl(&server, &["attach", "-it", "term"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let out = collect(master.try_clone().unwrap());
    // kubectl resizes to size + 1 then to the size: wait for the second.
    let start = Instant::now();
    loop {
        master.write_all(b"stty size\r").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        if out.lock().unwrap().contains("33 111") {
            break;
        }
        assert!(start.elapsed() < T, "no size in {:?}", out.lock().unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn attach_without_a_terminal_and_stdin_once_closes_stdin_after_the_session() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    let extra = "    stdin: true\n    stdinOnce: true\n";
    let pod = crate::support::pod("piped", "exec sh", extra, "  restartPolicy: Never\n");
    agent.apply("piped.yaml", &pod);
    started(&agent, "piped");
    let mut child = piped(&server, &["attach", "-i", "piped"]);
    let out = collect(child.stdout.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"echo hello-$((6*7))\n").unwrap();
    wait_text(&out, "hello-42");
    // The shell is still reading: the session ending (not kubectl's stdin) closes stdin, and
    // then `sh` ends at its EOF.
    let state = container_status(&agent.pod("piped").unwrap(), "app")["state"].clone();
    assert!(state["running"].is_object(), "{state}");
    let _ = child.kill();
    let _ = child.wait();
    let pod = agent
        .wait_pod("piped", T, |p| container_status(p, "app")["state"]["terminated"].is_object());
    assert_eq!(container_status(&pod, "app")["state"]["terminated"]["exitCode"], 0);
    // Nothing to attach to any more.
    let out = run(&server, &["attach", "-i", "piped"], b"");
    assert_ne!(out.status.code(), Some(0));

    // The client's stdin ending (kubectl sends v5's close) is the end of the first stdin too:
    // `sh` reads the command, then EOF, and exits; the attach ends with the container.
    let pod = crate::support::pod("eof", "exec sh", extra, "  restartPolicy: Never\n");
    agent.apply("eof.yaml", &pod);
    started(&agent, "eof");
    let mut child = piped(&server, &["attach", "-i", "eof"]);
    let out = collect(child.stdout.take().unwrap());
    child.stdin.take().unwrap().write_all(b"echo hello-$((6*7))\n").unwrap();
    // (stdin dropped: closed.) Bounded: a stdin that never closes would hang kubectl.
    assert_eq!(wait_for(&mut child, T), Some(0));
    wait_text(&out, "hello-42");
    let pod =
        agent.wait_pod("eof", T, |p| container_status(p, "app")["state"]["terminated"].is_object());
    assert_eq!(container_status(&pod, "app")["state"]["terminated"]["exitCode"], 0);
}

/// The pty's number on the host's devpts, from its slave's path.
fn pts_number(slave: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
    let path = path.to_string_lossy().into_owned();
    path.strip_prefix("/dev/pts/").expect("a devpts pty").to_string()
}

#[test]
fn an_exec_terminal_gives_the_container_no_way_to_the_hosts_other_terminals() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    agent.apply("hostile.yaml", &crate::support::pod("hostile", "sleep 3600", "", ""));
    started(&agent, "hostile");
    // Another session's terminal on the host, and kubectl's own.
    let victim = nix::pty::openpty(None, None).unwrap();
    let victim_slave = std::fs::File::from(victim.slave);
    let victim_n = pts_number(&victim_slave);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let kubectl_n = pts_number(&slave);
    // Root in the container tries every path to those terminals and to the host's ptmx: its
    // own /dev/pts, the directory of the terminal it was given (a host devpts node), its
    // root's. Whatever it manages to open is reported.
    let mut script = String::from("exec 2>/dev/null; echo T=$(readlink /proc/self/fd/0); ");
    for n in [&victim_n, &kubectl_n] {
        for p in [
            format!("/dev/pts/{n}"),
            format!("/proc/self/fd/0/../{n}"),
            format!("/proc/1/root/dev/pts/{n}"),
            format!("/proc/self/root/dev/pts/{n}"),
        ] {
            script += &format!("echo PWNED > {p} && echo OPENED {p}; ");
        }
    }
    script += "echo try ptmx; cat /proc/self/fd/0/../ptmx </dev/null && echo OPENED-PTMX; \
               echo try ls; ls /proc/self/fd/0/.. && echo LISTED; echo DONE";
    let mut child = kubectl(&server, &["exec", "-it", "hostile", "--", "sh", "-c", &script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(slave);
    let out = collect(std::fs::File::from(pty.master));
    wait_text(&out, "DONE");
    let _ = wait_for(&mut child, T);
    let out = out.lock().unwrap().clone();
    // It was given a terminal (on the host's devpts: the container's is a new instance).
    assert!(out.contains("T=/dev/pts/"), "{out}");
    assert!(!out.contains("OPENED") && !out.contains("LISTED"), "{out}");
    // And nothing reached the other session.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&victim.master),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let got = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&victim.master), &mut buf);
    assert!(got.is_err(), "the victim terminal got {:?}", got.map(|n| buf[..n].to_vec()));
}

#[test]
fn port_forward_never_reaches_the_hosts_loopback() {
    let _guard = crate::support::shared();
    let (agent, server, _socket) = admin_agent();
    // A service on the host's loopback, which a pod (not hostNetwork) must not reach.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in host.incoming().map_while(Result::ok) {
            let _ = c.write_all(b"HOST-SECRET\n");
        }
    });
    let script = "mkdir -p /tmp/w; echo in-the-pod > /tmp/w/index.html; \
                  httpd -p 127.0.0.1:8080 -h /tmp/w; sleep 3600";
    agent.apply("fwd.yaml", &crate::support::pod("fwd", script, "", ""));
    started(&agent, "fwd");
    let host_target = format!(":{host_port}");
    let mut child = kubectl(&server, &["port-forward", "fwd", ":8080", &host_target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errors = collect(child.stderr.take().unwrap());
    let mut local = HashMap::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    while local.len() < 2 {
        let line = lines.next().expect("kubectl port-forward ended").unwrap();
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (l, r) = rest.split_once(" -> ").unwrap();
            local.insert(r.to_string(), format!("127.0.0.1:{l}"));
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    // The pod's own loopback is reached.
    let answer = String::from_utf8_lossy(&http_get(&local["8080"], "/index.html")).into_owned();
    assert!(answer.contains("in-the-pod"), "{answer}");
    // The host's is not: the connection is refused in the pod's namespace.
    let mut s = TcpStream::connect(&local[&host_port.to_string()]).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("HOST-SECRET"), "reached the host");
    wait_text(&errors, &format!("failed to connect to localhost:{host_port}"));
    let _ = child.kill();
    let _ = child.wait();
}
