//! The binary as a user runs it.

use crate::runner::outpost;

#[test]
fn validate_static_manifests_exits_zero() {
    let (code, stdout, stderr) = outpost(&["validate", "static-manifests"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "9 files valid: 9 pods, 1 configmaps, 1 secrets\n");
}

#[test]
fn validate_broken_file_prints_every_error_and_exits_one() {
    let (code, stdout, stderr) = outpost(&["validate", "tests/data/broken.yaml"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "tests/data/broken.yaml:14:5: spec.volumes[0].emptuDir: unknown field \"emptuDir\": check its spelling and indentation (outpost rejects fields the Kubernetes API does not define)\n\
         tests/data/broken.yaml:10:7: spec.containers[0].volumeMounts[0].name: no volume named \"data\" in spec.volumes (declared volumes: cache)\n\
         2 errors in 1 files\n"
    );
}

#[test]
fn validate_missing_file_is_an_error() {
    let (code, _, stderr) = outpost(&["validate", "no/such/file.yaml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("no/such/file.yaml:1:1: cannot read: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_crate_version() {
    let (code, stdout, _) = outpost(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("outpost {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_explains_the_commands() {
    let (code, stdout, _) = outpost(&["--help"]);
    assert_eq!(code, 0);
    for needle in ["run", "validate", "version", "manifest"] {
        assert!(stdout.contains(needle), "--help lacks {needle:?}:\n{stdout}");
    }
}

#[test]
fn kubeconfig_makes_lists_and_revokes_tokens_on_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let make = |user: &str| {
        outpost(&[
            "kubeconfig",
            "--state",
            state,
            "--server",
            "https://127.0.0.1:10250",
            "--role",
            "admin",
            "--user",
            user,
        ])
    };
    let (code, yaml, err) = make("alice");
    assert_eq!(code, 0, "{err}");
    let config: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], "https://127.0.0.1:10250");
    let ca = cluster["certificate-authority-data"].as_str().unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
    assert_eq!(ca, std::fs::read(dir.path().join("pki/ca.crt")).unwrap());
    let token = config["users"][0]["user"]["token"].as_str().unwrap();
    assert!(token.starts_with("outpost-"), "{token}");
    assert_eq!(config["current-context"], config["contexts"][0]["name"]);

    let (code, _, err) = make("alice");
    assert_eq!(code, 1);
    assert!(err.contains("a token named \"alice\" exists already"), "{err}");
    let (code, list, _) = outpost(&["kubeconfig", "--state", state, "--list"]);
    assert_eq!(code, 0);
    assert!(
        list.starts_with("NAME") && list.contains("\nalice ") && list.contains(" admin "),
        "{list}"
    );
    assert!(!list.contains(token));
    let (code, _, err) = outpost(&["kubeconfig", "--state", state, "--revoke", "alice"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = outpost(&["kubeconfig", "--state", state, "--revoke", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("no token named \"alice\""), "{err}");

    let (code, _, err) = outpost(&[
        "kubeconfig",
        "--state",
        state,
        "--server",
        "http://127.0.0.1:10250",
        "--role",
        "view",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--server") && err.contains("HTTPS only"), "{err}");
    let (code, _, err) =
        outpost(&["kubeconfig", "--state", state, "--server", "https://127.0.0.1:10250"]);
    assert_eq!(code, 2, "--role is required");
    let (code, _, err2) = outpost(&[
        "kubeconfig",
        "--state",
        state,
        "--server",
        "https://127.0.0.1:10250",
        "--role",
        "view",
        "--expires-in",
        "tomorrow",
    ]);
    assert_eq!(code, 2);
    assert!(err2.contains("--expires-in") && err2.contains("such as 30m, 24h"), "{err2}");
    assert!(err.contains("--role"), "{err}");
}

/// `outpost rollout history` reads the state database: one row per rollout, oldest first;
/// clear errors for a missing database and a pod without history.
#[test]
fn rollout_history_lists_a_pods_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (code, _, err) = outpost(&["rollout", "history", "pod", "web", "--state", state]);
    assert_eq!(code, 1);
    assert!(err.contains("outpost.db not found: give the agent's --state"), "{err}");
    let row = |hash: &str, at, result: &str, reason: Option<&str>| {
        outpost::store::HistoryRecord::Revision(outpost::store::RevisionRecord {
            namespace: "default".into(),
            name: "web".into(),
            hash: hash.into(),
            pod: "{}".into(),
            config: "{}".into(),
            at,
            result: result.into(),
            reason: reason.map(Into::into),
        })
    };
    let mut store = outpost::store::Store::open(&dir.path().join("outpost.db")).unwrap();
    let rows = [
        row("1a2b3c4d-aaaa", 1_800_000_000, "Ready", None),
        row("5e6f7a8b-bbbb", 1_800_000_600, "Failed", Some("CrashLoopBackOff")),
    ];
    store.commit_with_revisions(&[], &[], &[], &rows).unwrap();
    drop(store);
    let (code, out, err) = outpost(&["rollout", "history", "po", "web", "--state", state]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "REVISION  TIME                  HASH      RESULT\n\
         1         2027-01-15T08:00:00Z  1a2b3c4d  Ready\n\
         2         2027-01-15T08:10:00Z  5e6f7a8b  Failed (CrashLoopBackOff)\n"
    );
    let (code, _, err) = outpost(&["rollout", "history", "pod", "db", "--state", state]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "no rollout history for pod default/db");
}
