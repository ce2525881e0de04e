//! Issue 5's figures, on the shipped binary: manifest dropped → first container process
//! running (busybox, image cached), and the memory (PSS) of all outpost processes with 10 idle
//! pods. Needs root. Run: `cargo bench --bench pod_startup`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");
const ROUNDS: usize = 20;
const IDLE_PODS: usize = 10;

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n")
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

/// The agent and every process running the outpost binary (supervisors, pauses).
fn outpost_pids() -> Vec<u32> {
    let bin = std::fs::canonicalize(BIN).unwrap_or_else(|_| PathBuf::from(BIN));
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin))
        .collect()
}

fn main() {
    assert!(nix::unistd::Uid::effective().is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state) = (dir.path().join("edge.d"), dir.path().join("state"));
    std::fs::create_dir_all(&manifests).unwrap();
    let archive = dir.path().join("busybox.tar");
    assert!(Command::new(BIN)
        .args(["image", "build-busybox"])
        .arg(&archive)
        .status()
        .unwrap()
        .success());
    assert!(Command::new(BIN)
        .args(["image", "import", "--state"])
        .arg(&state)
        .arg(&archive)
        .status()
        .unwrap()
        .success());
    let mut agent = Command::new(BIN)
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
    std::thread::sleep(Duration::from_millis(500));
    let pods = state.join("pods");

    let mut samples = Vec::new();
    for i in 0..ROUNDS {
        let file = manifests.join(format!("p{i}.yaml"));
        let t0 = Instant::now();
        std::fs::write(&file, pod(&format!("p{i}"))).unwrap();
        let t1 = wait_started(&pods, Duration::from_secs(30)).expect("container started");
        samples.push(t1 - t0);
        std::fs::remove_file(&file).unwrap();
        wait_empty(&pods);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "manifest -> first container running: n={ROUNDS} median {:.1} ms, p90 {:.1} ms, min {:.1} ms (target < 100 ms; podman kube play ~480 ms)",
        ms(samples[ROUNDS / 2]),
        ms(samples[ROUNDS * 9 / 10]),
        ms(samples[0])
    );

    for i in 0..IDLE_PODS {
        std::fs::write(manifests.join(format!("idle{i}.yaml")), pod(&format!("idle{i}"))).unwrap();
    }
    let start = Instant::now();
    while std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0) < IDLE_PODS
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let pids = outpost_pids();
    let total: u64 = pids.iter().map(|p| pss_kib(*p)).sum();
    let agent_pss = pss_kib(agent.id());
    println!(
        "PSS with {IDLE_PODS} idle pods: all outpost processes {:.1} MiB ({} processes; agent {:.1} MiB) (target < 15 MiB)",
        total as f64 / 1024.0,
        pids.len(),
        agent_pss as f64 / 1024.0
    );
    for f in std::fs::read_dir(&manifests).unwrap().flatten() {
        let _ = std::fs::remove_file(f.path());
    }
    wait_empty(&pods);
    let _ = agent.kill();
    let _ = agent.wait();
}
