//! The root tier: every integration test that needs root (namespaces, mounts, cgroups, device
//! nodes, image layers owned by other users), in one binary so the support code compiles and
//! links once. Run it with `sudo -E cargo test --test e2e` after `sudo tests/prereqs.sh`.
//!
//! Every test starts with `support::shared()` (or `support::exclusive()` for the few that
//! must run alone): it fails at once, naming what is missing, unless the tests run as root
//! with the packages installed; never a silent skip.

#[path = "../common/runner.rs"]
mod runner;
#[path = "../common/volume_support.rs"]
mod volume_support;

mod image_support;
mod network_support;
mod registry_support;
mod runtime_support;
mod support;

// Real agents on real busybox pods.
mod agent_run;
mod api;
mod churn;
mod devices;
mod exec;
mod forkserver;
mod manifest_url;
mod mount_escapes;
mod network;
mod network_coexist;
mod node;
mod pods;
mod pressure;
mod probes;
mod resources;
mod restart;
mod rollout;
mod seccomp;
mod secure_api;
mod security;
mod security_context;
mod state_db;
mod status_page;
mod stream;
mod usage;
mod userns;
mod watch;

// One layer below the agent: the runtime, CNI, volumes, seccomp filters and the image store.
mod conntrack;
mod image_cli;
mod image_gc;
mod image_import;
mod image_pull;
mod image_unpack;
mod network_cni;
mod nft;
mod nft_forward;
mod runtime_pod;
mod seccomp_filter;
mod volume_subpath;
mod volume_tmpfs_root;

/// Every test here starts with the guard (a test merged in without it would run without the
/// root check and beside the tests that must run alone). Reads the sources; needs no root.
#[test]
fn every_test_starts_with_the_guard() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let mut unguarded = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/e2e") {
        let path = entry.expect("tests/e2e entry").path();
        if path.file_name().is_some_and(|n| n == "main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a test module");
        let lines: Vec<&str> = text.lines().collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.trim() == "#[test]") {
            let body = lines.get(i + 2).map_or("", |l| l.trim());
            if !body.starts_with("let _guard = crate::support::") {
                unguarded.push(format!("{}:{}: {}", path.display(), i + 2, lines[i + 1]));
            }
        }
    }
    assert!(
        unguarded.is_empty(),
        "root-tier tests must start with `let _guard = crate::support::shared();` \
         (or `exclusive()`):\n{}",
        unguarded.join("\n")
    );
}
