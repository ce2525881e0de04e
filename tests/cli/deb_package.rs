//! `cross/deb.sh` packages the binary under test as an amd64 .deb with exactly the files,
//! control fields and maintainer scripts a device install needs. Needs dpkg-deb (any Debian).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// Builds the package uncompressed (the test binary is large and unstripped) into `out`.
fn build_deb(out: &Path) -> PathBuf {
    let printed = stdout(
        Command::new("bash")
            .arg(Path::new(ROOT).join("cross/deb.sh"))
            .args(["amd64", "--bin", BIN, "-Z", "none", "--out"])
            .arg(out),
    );
    let deb = PathBuf::from(printed.lines().last().expect("deb.sh prints the package path"));
    assert_eq!(deb, out.join(format!("outpost_{}_amd64.deb", env!("CARGO_PKG_VERSION"))));
    deb
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("static-manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "static-manifests holds the 9 examples");
    names
}

#[test]
fn amd64_package_holds_binary_unit_config_dir_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    // Every entry of the data archive, with mode and owner.
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mut entries = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "unexpected dpkg-deb -c line: {line}");
        assert_eq!(cols[1], "root/root", "{line}");
        entries.insert((cols[5].to_string(), cols[0].to_string()));
    }
    let mut expected: BTreeSet<(String, String)> = [
        ("./", "drwxr-xr-x"),
        ("./etc/", "drwxr-xr-x"),
        ("./etc/edge.d/", "drwxr-xr-x"),
        ("./lib/", "drwxr-xr-x"),
        ("./lib/systemd/", "drwxr-xr-x"),
        ("./lib/systemd/system/", "drwxr-xr-x"),
        ("./lib/systemd/system/outpost.service", "-rw-r--r--"),
        ("./usr/", "drwxr-xr-x"),
        ("./usr/bin/", "drwxr-xr-x"),
        ("./usr/bin/outpost", "-rwxr-xr-x"),
        ("./usr/share/", "drwxr-xr-x"),
        ("./usr/share/doc/", "drwxr-xr-x"),
        ("./usr/share/doc/outpost/", "drwxr-xr-x"),
        ("./usr/share/doc/outpost/copyright", "-rw-r--r--"),
        ("./usr/share/doc/outpost/examples/", "drwxr-xr-x"),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    for name in examples() {
        expected.insert((format!("./usr/share/doc/outpost/examples/{name}"), "-rw-r--r--".into()));
    }
    assert_eq!(entries, expected);

    let field = |name: &str| {
        stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim_end().to_string()
    };
    assert_eq!(field("Package"), "outpost");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "amd64");
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Recommends"), "containernetworking-plugins, iptables");
    // The test binary links glibc dynamically, so the package must depend on it.
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "Depends: {depends}");
    let description = field("Description");
    assert_eq!(description.lines().next(), Some(env!("CARGO_PKG_DESCRIPTION")));

    // The control archive: the three maintainer scripts, executable, and md5sums.
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() >= 6 && cols[4] == "*" && cols[5] == script
            }),
            "{script} missing or not executable in:\n{info}"
        );
    }

    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("if command -v deb-systemd-helper >/dev/null 2>&1; then"));
    assert!(postinst.contains("deb-systemd-helper enable outpost.service"));
    assert!(postinst.contains("if [ -d /run/systemd/system ]; then"));
    assert!(postinst.contains("systemctl --system daemon-reload"));

    // The payload: the very binary and unit, md5sums matching.
    let data = dir.path().join("data");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&data));
    assert!(
        std::fs::read(data.join("usr/bin/outpost")).unwrap() == std::fs::read(BIN).unwrap(),
        "/usr/bin/outpost in the package is not the binary given"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("lib/systemd/system/outpost.service")).unwrap(),
        include_str!("../../systemd/outpost.service")
    );
    assert_eq!(std::fs::read_dir(data.join("etc/edge.d")).unwrap().count(), 0);
    for name in examples() {
        assert_eq!(
            std::fs::read(data.join("usr/share/doc/outpost/examples").join(&name)).unwrap(),
            std::fs::read(Path::new(ROOT).join("static-manifests").join(&name)).unwrap(),
            "example {name}"
        );
    }
    let sums =
        stdout(Command::new("md5sum").arg("-c").arg(control.join("md5sums")).current_dir(&data));
    assert_eq!(sums.lines().count(), 12, "{sums}");
    assert!(sums.lines().all(|l| l.ends_with(": OK")), "{sums}");
}

#[test]
fn a_binary_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("cross/deb.sh"))
        .args(["arm64", "--bin", BIN, "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is built for 'Advanced Micro Devices X86-64', not arm64"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no package written");
}
