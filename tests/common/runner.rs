//! The built `outpost` binary run as a user runs it.
#![allow(dead_code)]

use std::process::Command;

/// Runs `outpost args…` with `RUST_LOG=warn` (so a caller's `RUST_LOG` never changes what a
/// command prints): exit code (-1 when killed), stdout, stderr.
pub fn outpost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run outpost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
