//! A `busybox:latest` image built offline from the host's static busybox (Debian's
//! busybox-static): the quickstart's image and the test suite's.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::build::{self, ArchiveFormat, BuiltImage, ImageSpec, LayerBuilder};
use super::error::{ImageError, Result};

pub const BUSYBOX: &str = "/bin/busybox";
pub const INSTALL_HINT: &str =
    "install busybox-static (apt-get install busybox-static, or run tests/prereqs.sh)";
pub const REFERENCE: &str = "busybox:latest";
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's single layer: /bin/busybox, one symlink per applet, /etc/passwd and
/// /etc/group with root and nobody, /tmp 1777.
pub fn layer() -> Result<Vec<u8>> {
    let missing =
        |e| ImageError::Prerequisite { path: BUSYBOX.into(), hint: INSTALL_HINT, source: e };
    let binary = std::fs::read(BUSYBOX).map_err(missing)?;
    // Running the binary we package is the only way to learn its applets.
    let list = Command::new(BUSYBOX).arg("--list-full").output().map_err(missing)?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "bin/busybox" && !l.contains(".."))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let io = |e| ImageError::io(BUSYBOX, e);
    let mut l = LayerBuilder::new();
    for dir in
        ["bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var"]
    {
        l.dir(dir, if dir == "root" { 0o700 } else { 0o755 }).map_err(io)?;
    }
    l.dir("tmp", 0o1777).map_err(io)?;
    l.file("bin/busybox", 0o755, &binary).map_err(io)?;
    l.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .map_err(io)?;
    l.file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n").map_err(io)?;
    for applet in &applets {
        l.symlink(applet, "/bin/busybox").map_err(io)?;
    }
    l.finish().map_err(io)
}

/// The image spec: Entrypoint unset, Cmd ["sh"], Env PATH.
pub fn spec() -> Result<ImageSpec> {
    Ok(ImageSpec {
        reference: REFERENCE.to_string(),
        config: json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }),
        layers: vec![layer()?],
    })
}

/// Writes `busybox:latest` as an archive; gzip-compressed when the name ends in .gz/.tgz.
pub fn build_archive(path: &Path, format: ArchiveFormat) -> Result<BuiltImage> {
    let name = path.to_string_lossy();
    let gzip = name.ends_with(".gz") || name.ends_with(".tgz");
    let mut built = build::write_archive(path, &[spec()?], format, gzip)?;
    built
        .pop()
        .ok_or_else(|| ImageError::Missing { file: path.to_path_buf(), what: "built image".into() })
}
