//! Pod start figures on the shipped binary (issues 5 and 21): manifest dropped → first
//! container process running (busybox, image cached), with the pod network and with
//! `hostNetwork` (the floor without networking); `podman kube play` of the same pod alternating
//! with outpost when podman is installed and can run it, with the ratio; 30 pods dropped at
//! once → all running; the memory (PSS) of all outpost processes with 10 idle pods.
//! Needs root. Run: `cargo bench --bench pod_startup`, or with a release binary built already:
//! `OUTPOST_AGENT_BIN=target/release/outpost cargo bench --profile dev --bench pod_startup`;
//! `OUTPOST_COMPARE_BIN=/path/to/another/outpost` alternates another build with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUILT: &str = env!("CARGO_BIN_EXE_outpost");

/// The binary measured: `OUTPOST_AGENT_BIN` (e.g. a release build while the bench itself is
/// built with `--profile dev`), else the one cargo built.
fn bin() -> PathBuf {
    std::env::var_os("OUTPOST_AGENT_BIN").map_or_else(|| PathBuf::from(BUILT), PathBuf::from)
}
const ROUNDS: usize = 20;
const IDLE_PODS: usize = 10;
const BURST: usize = 30;
const PSS_SAMPLES: usize = 20;

fn pod(name: &str) -> String {
    pod_with(name, "busybox", "")
}

fn pod_with(name: &str, image: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n")
}

/// Waits until `n` pods have their first container's status record.
fn wait_started_n(pods: &Path, n: usize, timeout: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let started = std::fs::read_dir(pods)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("containers/app.0/status.json").exists())
                    .count()
            })
            .unwrap_or(0);
        if started >= n {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

/// `podman kube play` of the same pod (podman's copy of the busybox image): the time until it
/// returns, which is once its containers have started; `None` when podman cannot run it.
fn podman_round(dir: &Path, image: &str, i: usize) -> Result<Duration, String> {
    let file = dir.join(format!("podman-{i}.yaml"));
    std::fs::write(&file, pod_with(&format!("pb{i}"), image, "")).unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", dir.join("containers.conf"));
        c
    };
    let t0 = Instant::now();
    let out = podman().arg("kube").arg("play").arg(&file).output();
    let took = t0.elapsed();
    let _ = podman().args(["kube", "down"]).arg(&file).output();
    match out {
        Ok(o) if o.status.success() => Ok(took),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// podman's configuration for the bench: container rlimits within this host's hard limits
/// (podman's default RLIMIT_NOFILE of 1048576 fails where the hard limit is lower and podman
/// lacks CAP_SYS_RESOURCE), and the OCI runtime (`runc` where crun refuses the host's cgroup
/// layout: crun does not support hybrid v1/v2 hierarchies).
fn podman_conf(dir: &Path, runtime: Option<&str>) {
    // Limits within any host's hard limits (the container only runs `sleep`).
    let mut conf =
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n".to_string();
    if let Some(rt) = runtime {
        conf.push_str(&format!("[engine]\nruntime = \"{rt}\"\n"));
    }
    std::fs::write(dir.join("containers.conf"), conf).unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits for the first container's status record, written by the supervisor once it started.
fn wait_started(pods: &Path, timeout: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(entries) = std::fs::read_dir(pods) {
            for e in entries.flatten() {
                if e.path().join("containers/app.0/status.json").exists() {
                    return Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

fn wait_empty(dir: &Path) {
    let start = Instant::now();
    while std::fs::read_dir(dir).map(|d| d.count() > 0).unwrap_or(false)
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The agent and every process it started running the outpost binary (fork server,
/// supervisors, pauses): their command lines name the state directory. (They run from a sealed
/// view of the binary, so `/proc/PID/exe` is not the file's path.)
fn outpost_pids(state: &Path) -> Vec<u32> {
    let needle = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&needle)
        })
        .collect()
}

/// An agent under measurement, on a directory of its own.
struct Agent {
    manifests: PathBuf,
    state: PathBuf,
    pods: PathBuf,
    child: std::process::Child,
}

fn start_agent(bin: &Path, dir: &Path, archive: &Path) -> Agent {
    let (manifests, state) = (dir.join("edge.d"), dir.join("state"));
    std::fs::create_dir_all(&manifests).unwrap();
    assert!(Command::new(bin)
        .args(["image", "import", "--state"])
        .arg(&state)
        .arg(archive)
        .status()
        .unwrap()
        .success());
    let child = Command::new(bin)
        .args(["run", "--listen", "127.0.0.1:0", "--manifests"])
        .arg(&manifests)
        .arg("--state")
        .arg(&state)
        // The kubelet's default disk thresholds are percentages of the host's disk, which a
        // shared build machine may be under; they would refuse every pod here.
        .args(["--eviction-hard", "memory.available<100Mi"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pods = state.join("pods");
    Agent { manifests, state, pods, child }
}

/// One pod started and removed; the time from its file to its first container running.
fn round(agent: &Agent, name: &str, spec: &str) -> Duration {
    let file = agent.manifests.join(format!("{name}.yaml"));
    let t0 = Instant::now();
    std::fs::write(&file, pod_with(name, "busybox", spec)).unwrap();
    let t1 = wait_started(&agent.pods, Duration::from_secs(30)).expect("container started");
    std::fs::remove_file(&file).unwrap();
    wait_empty(&agent.pods);
    t1 - t0
}

fn main() {
    assert!(nix::unistd::Uid::effective().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    assert!(Command::new(bin())
        .args(["image", "build-busybox"])
        .arg(&archive)
        .status()
        .unwrap()
        .success());
    let mut measured = start_agent(&bin(), &dir.path().join("a"), &archive);
    // `OUTPOST_COMPARE_BIN`: another build (e.g. main's) alternating with this one, to tell
    // what a change is worth on this machine in this run.
    let mut other = std::env::var_os("OUTPOST_COMPARE_BIN")
        .map(|b| start_agent(Path::new(&b), &dir.path().join("b"), &archive));
    std::thread::sleep(Duration::from_millis(500));
    let (manifests, state, pods) =
        (measured.manifests.clone(), measured.state.clone(), measured.pods.clone());

    // podman alongside when it can run the pod (its image loaded from the same archive).
    let podman = Command::new("podman").args(["load", "-i"]).arg(&archive).output();
    let podman_image = podman
        .as_ref()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.lines().find_map(|l| l.strip_prefix("Loaded image: ").map(String::from))
        })
        .unwrap_or_default();
    let mut podman_ok = !podman_image.is_empty();
    if !podman_ok {
        println!("podman: not installed or cannot load the image: no side-by-side figure");
    } else {
        podman_conf(dir.path(), None);
        if let Err(e) = podman_round(dir.path(), &podman_image, 999) {
            let runc = Command::new("runc").arg("--version").output().is_ok();
            if runc {
                println!("podman: its default runtime failed here ({e}); podman uses runc");
                podman_conf(dir.path(), Some("runc"));
            }
        }
    }
    let (mut ours, mut theirs, mut host, mut compared) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Alternating A B A B on the same machine in one run: only a side-by-side ratio counts.
    for i in 0..ROUNDS {
        ours.push(round(&measured, &format!("p{i}"), ""));
        if let Some(other) = &other {
            compared.push(round(other, &format!("q{i}"), ""));
        }
        host.push(round(&measured, &format!("h{i}"), "  hostNetwork: true\n"));
        if podman_ok {
            match podman_round(dir.path(), &podman_image, i) {
                Ok(d) => theirs.push(d),
                Err(e) => {
                    println!("podman kube play failed, no side-by-side figure: {e}");
                    podman_ok = false;
                }
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p90 = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() * 9 / 10]
    };
    println!(
        "manifest -> first container running: n={ROUNDS} median {:.1} ms, p90 {:.1} ms (pod network); hostNetwork median {:.1} ms",
        ms(median(ours.clone())),
        ms(p90(&ours)),
        ms(median(host.clone())),
    );
    if let Some(mut other) = other.take() {
        let (o, c) = (median(ours.clone()), median(compared.clone()));
        println!(
            "OUTPOST_COMPARE_BIN, same pod, alternating: median {:.1} ms; the measured binary takes {:.2}x its time",
            ms(c),
            o.as_secs_f64() / c.as_secs_f64()
        );
        let _ = other.child.kill();
        let _ = other.child.wait();
    }
    if podman_ok && !theirs.is_empty() {
        let (o, p) = (median(ours.clone()), median(theirs.clone()));
        println!(
            "podman kube play, same pod, alternating: median {:.1} ms; outpost is {:.1}x faster (target >= 8x)",
            ms(p),
            p.as_secs_f64() / o.as_secs_f64()
        );
    }

    // 30 pods dropped at once.
    let t0 = Instant::now();
    for i in 0..BURST {
        std::fs::write(manifests.join(format!("b{i}.yaml")), pod(&format!("b{i}"))).unwrap();
    }
    let t1 = wait_started_n(&pods, BURST, Duration::from_secs(120)).expect("all started");
    println!(
        "{BURST} pods dropped at once -> all containers running: {:.0} ms (target < 1 s)",
        ms(t1 - t0)
    );
    for i in 0..BURST {
        std::fs::remove_file(manifests.join(format!("b{i}.yaml"))).unwrap();
    }
    wait_empty(&pods);

    for i in 0..IDLE_PODS {
        std::fs::write(manifests.join(format!("idle{i}.yaml")), pod(&format!("idle{i}"))).unwrap();
    }
    let start = Instant::now();
    while std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0) < IDLE_PODS
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Idle means after a housekeeping round (10 s), which also hands the burst's free heap
    // back to the kernel.
    std::thread::sleep(Duration::from_secs(12));
    // Sampled every second over two housekeeping rounds: the figure at any moment, not at a
    // chosen one (an idle process maps code back in as it runs).
    let (mut totals, mut agents, mut procs) = (Vec::new(), Vec::new(), 0);
    for _ in 0..PSS_SAMPLES {
        let pids = outpost_pids(&state);
        procs = pids.len();
        totals.push(pids.iter().map(|p| pss_kib(*p)).sum::<u64>());
        agents.push(pss_kib(measured.child.id()));
        std::thread::sleep(Duration::from_secs(1));
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let max = *totals.iter().max().unwrap();
    totals.sort();
    agents.sort();
    println!(
        "PSS with {IDLE_PODS} idle pods, {PSS_SAMPLES} samples 1 s apart: all outpost processes median {:.1} MiB, max {:.1} MiB ({procs} processes; agent median {:.1} MiB) (target < 12 MiB)",
        mib(totals[PSS_SAMPLES / 2]),
        mib(max),
        mib(agents[PSS_SAMPLES / 2]),
    );
    for f in std::fs::read_dir(&manifests).unwrap().flatten() {
        let _ = std::fs::remove_file(f.path());
    }
    wait_empty(&pods);
    let _ = measured.child.kill();
    let _ = measured.child.wait();
}
