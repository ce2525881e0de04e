//! Issue 10's figure: `outpost run` cold start, from spawning the process to its
//! sd_notify `READY=1` (what systemd waits for with `Type=notify`), with an empty manifest
//! directory and a fresh state directory each round. Target: under 100 ms.
//!
//! A unix datagram socket stands in for systemd's `NOTIFY_SOCKET`. Needs root (the agent
//! refuses to run otherwise). Run: `cargo bench --bench cold_start` (the release build;
//! `COLD_START_ROUNDS=<n>` for another number of rounds; `OUTPOST_AGENT_BIN` runs another
//! build, e.g. to compare two side by side).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// Spawns one agent on fresh directories and returns the time until READY=1 arrived.
fn one_round(round: usize) -> Duration {
    let dir = tempfile::Builder::new().prefix("outpost-cold").tempdir().expect("tempdir");
    let manifests = dir.path().join("edge.d");
    std::fs::create_dir(&manifests).expect("manifest dir");
    let state = dir.path().join("state");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log file");

    let bin = std::env::var_os("OUTPOST_AGENT_BIN").unwrap_or_else(|| BIN.into());
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["run", "--listen", "127.0.0.1:0", "--manifests"])
        .arg(&manifests)
        .arg("--state")
        .arg(&state)
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("WATCHDOG_USEC")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start outpost run");
    let mut buf = [0u8; 4096];
    let elapsed = loop {
        match socket.recv(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") => {
                break start.elapsed();
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("round {round}: no READY=1 within 30 s ({e}); agent log:\n{log}");
            }
        }
    };
    // No pods ran, so killing the agent leaves nothing behind.
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn main() {
    assert!(nix::unistd::Uid::effective().is_root(), "outpost run needs root");
    let rounds: usize =
        std::env::var("COLD_START_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    // The first round pays for loading the binary from disk; the figure is a service
    // (re)start on a running device, so it is not counted.
    one_round(0);
    let mut samples: Vec<Duration> = (1..=rounds).map(one_round).collect();
    samples.sort();
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100].as_secs_f64() * 1000.0;
    println!(
        "outpost run spawn -> READY=1 (empty manifests, fresh state): n={} median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target < 100 ms)",
        samples.len(),
        pct(50),
        pct(90),
        pct(100)
    );
}
