//! Link options for the release binary that Cargo profiles cannot express (benches/README.md,
//! "Binary size"). Only `outpost` itself (`rustc-link-arg-bins`), only in profiles that inherit
//! from `release`; tests and dev builds link as before.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_RELEASE_PANIC");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_PROFILE_RELEASE_PANIC").as_deref() != Ok("unwind")
    {
        discard_unwind_tables();
    }
    if links_with_bundled_lld() {
        // Folds functions whose code is identical (monomorphised copies that differ in type
        // only): ~0.12 MB. LLD only; GNU ld, which the cross builds use, has no --icf.
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    }
}

/// The release profile aborts on panic, so nothing unwinds through outpost's frames; yet every
/// function keeps an `.eh_frame` entry (~1.2 MB with `.eh_frame_hdr`). std and core are built
/// to unwind: code that inlines theirs with cleanup paths keeps a personality function, and
/// LLVM gives every function with one an entry whatever `-C force-unwind-tables=no` says (that
/// flag only drops `uwtable`). The linker discards them instead (LLD and GNU ld alike; `INSERT`
/// keeps the default layout). The cost: a panic's backtrace (RUST_BACKTRACE) stops at its
/// first frame, and gdb or perf cannot walk the stack (no frame pointers either). Back out if
/// the profile ever unwinds.
fn discard_unwind_tables() {
    let script =
        Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("no-eh-frame.ld");
    // Static glibc binaries register their frames at start-up from crtbeginT.o, which refers to
    // its own `.eh_frame` (GNU ld refuses to discard it, seen on aarch64): the C runtime's start
    // and end files keep theirs, a few bytes.
    let rule = "EXCLUDE_FILE(*crtbegin*.o *crtend*.o) *(.eh_frame)";
    std::fs::write(
        &script,
        format!("SECTIONS {{ /DISCARD/ : {{ {rule} }} }} INSERT AFTER .text;\n"),
    )
    .expect("write the linker script to OUT_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// rustup's x86_64-unknown-linux-gnu toolchains (Rust 1.90 and newer, which the MSRV implies)
/// link through their own LLD, shipped as `gcc-ld/ld.lld`; a distribution's rustc, or a build
/// that picks its linker, may use GNU ld.
fn links_with_bundled_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld").exists()
}
