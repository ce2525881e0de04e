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
