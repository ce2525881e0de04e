//! Probe CPU cost, measured with the kernel's accounting, not a wall clock.
//!
//! Each scenario starts a real agent (root, busybox image) with a set of pods, waits until
//! they run and their probes have started, then over a window sums
//! - the agent's own CPU time (the scheduler's runtime of its threads), and
//! - each pod cgroup's cpuacct.usage: its supervisor, pause, app and every exec'd probe
//!   process (including libcontainer's setup of each exec).
//!
//! CPU per probe = (CPU with probes − CPU of the same pods without probes) / probes run.
//! `PROBE_BENCH_WINDOW` (seconds, default 30) sets the window; `PROBE_BENCH_ONLY` (a
//! comma-separated subset of `exec,httpGet,tcpSocket,scenario`) limits what runs;
//! `OUTPOST_AGENT_BIN` runs the agent from another build, to compare two on the same machine.

#[path = "../tests/e2e/support.rs"]
mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{phase, pod, Agent};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    None,
    Exec,
    Http,
    Tcp,
}

struct Group {
    count: usize,
    kind: Kind,
    period: u32,
}

fn manifest(name: &str, kind: Kind, period: u32) -> String {
    let probe = match kind {
        Kind::None => String::new(),
        Kind::Exec => format!(
            "    readinessProbe:\n      exec: {{command: [\"true\"]}}\n      periodSeconds: {period}\n"
        ),
        Kind::Http => format!(
            "    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: {period}\n"
        ),
        Kind::Tcp => format!(
            "    readinessProbe:\n      tcpSocket: {{port: 8080}}\n      periodSeconds: {period}\n"
        ),
    };
    pod(
        name,
        "mkdir -p /www; echo ok > /www/healthz; exec httpd -f -p 8080 -h /www",
        &probe,
        "  terminationGracePeriodSeconds: 0\n",
    )
}

/// CPU time of a process, in seconds: the scheduler's runtime of each of its threads
/// (`/proc/<pid>/task/*/schedstat`, nanoseconds). utime+stime in `/proc/<pid>/stat` count
/// whole clock ticks (10 ms), which over a window of 600 probes is ±0.017 ms per probe. A
/// thread that ends inside the window would be missed; the agent's threads in a steady
/// state do not (the blocking pool keeps its threads).
fn process_cpu(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let runtime = |task: std::fs::DirEntry| {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        text.split(' ').next()?.parse::<f64>().ok()
    };
    tasks.flatten().filter_map(runtime).sum::<f64>() / 1e9
}

/// The pod cgroup (cpuacct hierarchy) of a supervisor: `<parent>/<uid>`.
fn pod_cgroup(supervisor: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{supervisor}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let v2 = controllers.is_empty() && line.starts_with("0::");
        if controllers.split(',').any(|c| c == "cpuacct") || v2 {
            let pod = path.strip_suffix("/supervisor")?;
            return Some(if v2 {
                format!("/sys/fs/cgroup{pod}/cpu.stat")
            } else {
                format!("/sys/fs/cgroup/cpuacct{pod}/cpuacct.usage")
            });
        }
    }
    None
}

/// The same CPU file of the pod's supervisor, whose cgroup nests in the pod's.
fn supervisor_of(pod_file: &str) -> String {
    let (dir, file) = pod_file.rsplit_once('/').expect("a file in a cgroup");
    format!("{dir}/supervisor/{file}")
}

/// cpuacct.usage (ns) or cpu.stat usage_usec, in seconds.
fn cgroup_cpu(file: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if file.ends_with("cpu.stat") {
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |us| us / 1e6)
    } else {
        text.trim().parse::<f64>().map_or(0.0, |ns| ns / 1e9)
    }
}

struct Measured {
    agent: f64,
    pods: f64,
    supervisors: f64,
    /// The app containers of pods with exec probes: the exec'd probe commands (the apps idle).
    execs: f64,
    window: f64,
    probes: f64,
    /// CPU per probe of a bare client doing the same exchanges (ms), see [`floor`].
    floor: Option<f64>,
}

fn run(label: &str, groups: &[Group], window: Duration) -> Measured {
    // The scenario has 120 pods, over the kubelet's default of 110 per node.
    let agent = Agent::start_with(&["--max-pods", "200"]);
    let mut names = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for i in 0..group.count {
            let name = format!("p{g}-{i}");
            agent.apply(&format!("{name}.yaml"), &manifest(&name, group.kind, group.period));
            names.push((name, group.kind));
        }
    }
    let mut exec_uids = std::collections::HashSet::new();
    let mut targets = Vec::new();
    for (name, kind) in &names {
        let pod = agent.wait_pod(name, Duration::from_secs(300), |p| phase(p) == "Running");
        if *kind == Kind::Exec {
            exec_uids.insert(pod["metadata"]["uid"].as_str().expect("uid").to_string());
        }
        if let Some(ip) = pod["status"]["podIP"].as_str().and_then(|ip| ip.parse().ok()) {
            targets.push((*kind, std::net::SocketAddr::new(ip, 8080)));
        }
    }
    // Probes start after the containers; let every worker run a few periods.
    std::thread::sleep(Duration::from_secs(12));
    // A supervisor's short-lived forks (exec setup) share its command line: dedupe by pod.
    let cgroups: std::collections::BTreeSet<String> =
        agent.supervisors().into_iter().filter_map(pod_cgroup).collect();
    assert_eq!(cgroups.len(), names.len(), "one pod cgroup per pod");
    let pid = agent.pid().expect("agent running");
    let supervisors: Vec<String> = cgroups.iter().map(|c| supervisor_of(c)).collect();
    let sum = |files: &[String]| files.iter().map(|c| cgroup_cpu(c)).sum::<f64>();
    let cgroups: Vec<String> = cgroups.into_iter().collect();
    let exec_pods: Vec<String> = cgroups
        .iter()
        .filter(|c| exec_uids.iter().any(|u| c.contains(u.as_str())))
        .cloned()
        .collect();
    assert_eq!(exec_pods.len(), exec_uids.len(), "a cgroup per exec-probed pod");
    // The supervisor's cgroup nests in the pod's: the pod minus it is the pause and the apps.
    let exec_supervisors: Vec<String> = exec_pods.iter().map(|c| supervisor_of(c)).collect();
    let sample = || {
        let execs = sum(&exec_pods) - sum(&exec_supervisors);
        (process_cpu(pid), sum(&cgroups), sum(&supervisors), execs)
    };
    let (a0, p0, s0, e0) = sample();
    let start = Instant::now();
    std::thread::sleep(window);
    let (a1, p1, s1, e1) = sample();
    let secs = start.elapsed().as_secs_f64();
    let probes: f64 = groups
        .iter()
        .filter(|g| g.kind != Kind::None)
        .map(|g| g.count as f64 * secs / g.period as f64)
        .sum();
    let m = Measured {
        agent: a1 - a0,
        pods: p1 - p0,
        supervisors: s1 - s0,
        execs: e1 - e0,
        window: secs,
        probes,
        floor: None,
    };
    // Outpost's share: the agent, the supervisors (whose cgroups nest in the pods') and the
    // exec'd probe commands; the rest of the pods' CPU is the apps (answering httpGet probes).
    let outpost = m.agent + m.supervisors + m.execs;
    println!(
        "{label}: {} pods, {:.0} probes in {:.1} s: CPU agent {:.3} s, supervisors {:.3} s, \
         exec'd probe commands {:.3} s, whole pods (supervisors, pause, apps, execs) {:.3} s; \
         outpost (agent + supervisors + exec'd probes) = {:.2} % of one core, \
         with the apps answering = {:.2} %",
        names.len(),
        m.probes,
        m.window,
        m.agent,
        m.supervisors,
        m.execs,
        m.pods,
        100.0 * outpost / m.window,
        100.0 * (m.agent + m.pods) / m.window
    );
    Measured { floor: floor(&targets), ..m }
}

/// The CPU a bare blocking client on this thread spends on the same exchanges from the host
/// (the same request bytes, the same reset after a server's close): the kernel's share of a
/// probe, which includes both ends of the TCP handshake over veth and bridge, run in the
/// caller's context. What outpost adds is the difference.
fn floor(targets: &[(Kind, std::net::SocketAddr)]) -> Option<f64> {
    use std::io::{Read, Write};
    let &(kind, _) = targets.iter().find(|(k, _)| matches!(k, Kind::Http | Kind::Tcp))?;
    let addrs: Vec<_> = targets.iter().filter(|(k, _)| *k == kind).map(|(_, a)| *a).collect();
    let rounds = 1000;
    // This thread's CPU time, brought up to date by the call (rusage and schedstat lag for a
    // thread that has not been switched out since).
    let cpu = || {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime fills the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let mut spent = 0.0;
    for i in 0..rounds {
        let addr = addrs[i % addrs.len()];
        std::thread::sleep(Duration::from_millis(2));
        let before = cpu();
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the pod");
        if kind == Kind::Http {
            let request = format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n"
            );
            s.write_all(request.as_bytes()).expect("request");
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            assert!(answer.starts_with(b"HTTP/1."), "an HTTP answer");
            // The server closed first: reset, as the probe does.
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: setsockopt on a socket we own, with a linger struct of the right size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
        }
        drop(s);
        spent += cpu() - before;
    }
    println!(
        "  floor: a bare blocking client doing the same exchange from the host: {:.3} ms CPU per \
         probe ({rounds} rounds)",
        1000.0 * spent / rounds as f64
    );
    Some(1000.0 * spent / rounds as f64)
}

fn per_probe(label: &str, with: &Measured, without: &Measured) {
    let scale = with.window / without.window;
    let cost = with.agent + with.pods - (without.agent + without.pods) * scale;
    let agent_only = with.agent - without.agent * scale;
    let supervisors = with.supervisors - without.supervisors * scale;
    // Idle apps cost nothing measurable: the exec'd commands are the exec pods' app cgroups.
    let outpost = agent_only + supervisors + with.execs;
    let ms = |cpu: f64| 1000.0 * cpu / with.probes;
    println!(
        "  => {label}: {:.3} ms CPU per probe for outpost (agent {:.3} ms, supervisor {:.3} ms, \
         exec'd commands {:.3} ms); {:.3} ms with the app answering",
        ms(outpost),
        ms(agent_only),
        ms(supervisors),
        ms(with.execs),
        ms(cost),
    );
    if let Some(floor) = with.floor {
        println!("     outpost above the bare client's floor: {:.3} ms", ms(outpost) - floor);
    }
}

fn main() {
    assert!(nix::unistd::Uid::effective().is_root(), "the probe benchmark needs root");
    let window = Duration::from_secs(
        std::env::var("PROBE_BENCH_WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(30),
    );
    let only = std::env::var("PROBE_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let n = 20;
    let idle = run("idle (no probes)", &[Group { count: n, kind: Kind::None, period: 1 }], window);
    for (label, kind) in [("exec", Kind::Exec), ("httpGet", Kind::Http), ("tcpSocket", Kind::Tcp)] {
        if !wanted(label) {
            continue;
        }
        let m =
            run(&format!("{label}, 1 s period"), &[Group { count: n, kind, period: 1 }], window);
        per_probe(label, &m, &idle);
    }
    // The scenario: 100 pods with 10 s probes (half exec, half httpGet) plus 20 pods
    // with 1 s httpGet probes.
    if !wanted("scenario") {
        return;
    }
    run(
        "issue scenario",
        &[
            Group { count: 50, kind: Kind::Exec, period: 10 },
            Group { count: 50, kind: Kind::Http, period: 10 },
            Group { count: 20, kind: Kind::Http, period: 1 },
        ],
        window,
    );
    let big_idle = run(
        "issue scenario without probes",
        &[Group { count: 120, kind: Kind::None, period: 1 }],
        window,
    );
    let _ = big_idle;
}
