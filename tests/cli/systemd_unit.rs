//! The shipped unit file is valid for systemd and keeps the properties outpost relies on.

use std::process::Command;

const UNIT: &str = include_str!("../../systemd/outpost.service");

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze not found: install the systemd package (tests/prereqs.sh does)");
    };
    assert!(out.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/bin/outpost", env!("CARGO_BIN_EXE_outpost"));
    let path = dir.path().join("outpost.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("outpost.service"),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn unit_keeps_pods_alive_across_agent_restarts() {
    for line in
        ["Type=notify", "KillMode=process", "Delegate=yes", "Restart=always", "WatchdogSec="]
    {
        assert!(UNIT.lines().any(|l| l.starts_with(line)), "unit lacks {line}");
    }
}
