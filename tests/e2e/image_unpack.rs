//! Layer unpacking: overlay view of whiteouts, hostile tarballs, atomicity. Runs as root
//! (mknod for whiteouts, trusted.* xattrs, mounting overlayfs).

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::image_support::*;
use outpost::image::build::ArchiveFormat;
use outpost::image::{unpack, ImageStore};
use tar::EntryType;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer whose length is passed.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn whiteouts_and_opaque_dirs_give_the_right_overlay_view() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    store.import(layered_archive(dir.path(), ArchiveFormat::Oci, true)).unwrap();
    let image = store.resolve("layered:1").unwrap().unwrap();
    let top = &image.layers[2];

    // On disk: the overlay forms.
    let wh = std::fs::symlink_metadata(top.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!top.join("a/.wh.gone").exists());
    assert_eq!(xattr(&top.join("d"), "trusted.overlay.opaque"), Some(b"y".to_vec()));
    assert!(!top.join("d/.wh..wh..opq").exists());
    assert_eq!(xattr(&image.layers[1].join("d"), "trusted.overlay.opaque"), None);

    // Mounted: what a container would see.
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let lower: Vec<String> = image.layers.iter().rev().map(|p| p.display().to_string()).collect();
    let options = format!("lowerdir={}", lower.join(":"));
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay {options}: {e} (is the overlay module available?)"));
    let _guard = Mounted(&merged);
    assert_eq!(std::fs::read(merged.join("a/keep")).unwrap(), b"keep");
    assert!(!merged.join("a/gone").exists(), "whited-out file still visible");
    let mut d: Vec<String> = std::fs::read_dir(merged.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    d.sort();
    assert_eq!(d, vec!["new".to_string()], "the opaque dir must hide d/old and d/sub");
    assert_eq!(std::fs::read(merged.join("f")).unwrap(), b"v2");
    assert!(merged.join("bin/busybox").is_file());
    let deep = std::fs::symlink_metadata(image.layers[1].join("d/sub/deep")).unwrap();
    assert_eq!(deep.mode() & 0o7777, 0o600);
}

/// Extracts `tar` into `root/target` and checks nothing appeared outside it.
fn extract_hostile(tar: &[u8]) -> String {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("target");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let err = unpack::extract(tar, &target, "sha256:hostile").expect_err("hostile layer accepted");
    let before = vec!["outside".to_string(), "outside/secret".to_string(), "target".to_string()];
    let after: Vec<String> =
        tree(root.path()).into_iter().filter(|p| !p.starts_with("target/")).collect();
    assert_eq!(after, before, "something was written outside the target");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    // The escape attempts relative to the filesystem root did not land either.
    assert!(!Path::new("/outpost-escape-test").exists());
    err.to_string()
}

fn entry<'a>(
    name: &'a str,
    kind: EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
) -> RawEntry<'a> {
    RawEntry { name, kind, data, link }
}

#[test]
fn dot_dot_escape_is_refused() {
    let _guard = crate::support::shared();
    let tar = raw_tar(&[
        entry("ok", EntryType::Regular, b"1", None),
        entry("../outside/pwned", EntryType::Regular, b"x", None),
    ]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"../outside/pwned\": path contains '..'"
    );
    let tar = raw_tar(&[entry("a/../../outside/pwned", EntryType::Regular, b"x", None)]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"a/../../outside/pwned\": path contains '..'"
    );
}

#[test]
fn absolute_path_is_refused() {
    let _guard = crate::support::shared();
    let tar = raw_tar(&[entry("/outpost-escape-test", EntryType::Regular, b"x", None)]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"/outpost-escape-test\": absolute path"
    );
}

#[test]
fn writing_through_an_earlier_symlink_is_refused() {
    let _guard = crate::support::shared();
    for link in ["../outside", "/outpost-escape-test", "."] {
        let tar = raw_tar(&[
            entry("link", EntryType::Symlink, b"", Some(link)),
            entry("link/pwned", EntryType::Regular, b"x", None),
        ]);
        assert_eq!(
            extract_hostile(&tar),
            "layer sha256:hostile: unsafe entry \"link/pwned\": path goes through \"link\", which is a symlink or not a directory",
            "symlink to {link}"
        );
    }
    // The same trick one level down, and with a directory entry.
    let tar = raw_tar(&[
        entry("d/", EntryType::Directory, b"", None),
        entry("d/l", EntryType::Symlink, b"", Some("../../outside")),
        entry("d/l/sub/", EntryType::Directory, b"", None),
    ]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"d/l/sub/\": path goes through \"d/l\", which is a symlink or not a directory"
    );
}

#[test]
fn hardlinks_outside_are_refused() {
    let _guard = crate::support::shared();
    let tar = raw_tar(&[entry("hl", EntryType::Link, b"", Some("../outside/secret"))]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"hl\": hardlink target \"../outside/secret\" is outside the layer"
    );
    let tar = raw_tar(&[entry("hl", EntryType::Link, b"", Some("/etc/passwd"))]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"hl\": hardlink target \"/etc/passwd\" is outside the layer"
    );
    // Through a symlink that points outside.
    let tar = raw_tar(&[
        entry("s", EntryType::Symlink, b"", Some("../outside")),
        entry("hl", EntryType::Link, b"", Some("s/secret")),
    ]);
    assert_eq!(
        extract_hostile(&tar),
        "layer sha256:hostile: unsafe entry \"hl\": hardlink target \"s/secret\" is outside the layer"
    );
}

#[test]
fn a_file_is_never_written_through_an_earlier_hardlink() {
    let _guard = crate::support::shared();
    // "b" hardlinks "a"; a later "b" entry must replace the link, not overwrite "a".
    let root = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        entry("a", EntryType::Regular, b"original", None),
        entry("b", EntryType::Link, b"", Some("a")),
        entry("b", EntryType::Regular, b"replaced", None),
    ]);
    unpack::extract(&tar[..], root.path(), "sha256:links").unwrap();
    assert_eq!(std::fs::read(root.path().join("a")).unwrap(), b"original");
    assert_eq!(std::fs::read(root.path().join("b")).unwrap(), b"replaced");
}

#[test]
fn hostile_layer_through_import_names_layer_and_entry_and_leaves_nothing() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let layer =
        raw_tar(&[entry("../../../../outpost-escape-test", EntryType::Regular, b"x", None)]);
    let diff_id = {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(&layer))
    };
    let spec = ImageSpec {
        reference: "evil:1".into(),
        config: serde_json::json!({}),
        layers: vec![layer],
    };
    let file = archive(dir.path(), "evil", &[spec], ArchiveFormat::Docker, false);
    let err = store.import(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "layer {diff_id}: unsafe entry \"../../../../outpost-escape-test\": path contains '..'"
        )
    );
    assert_eq!(tree(store.layers_dir()), Vec::<String>::new());
    assert!(store.resolve("evil:1").unwrap().is_none());
    assert!(!Path::new("/outpost-escape-test").exists());
}

#[test]
fn interrupted_unpack_leaves_no_layer_dir() {
    let _guard = crate::support::shared();
    // A layer cut off in the middle of a file: the extraction fails part-way, after having
    // written the first entries into its temp dir.
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let mut full = LayerBuilder::new();
    full.file("first", 0o644, b"complete").unwrap().file("second", 0o644, &[7u8; 4096]).unwrap();
    let full = full.finish().unwrap();
    let cut = full[..512 * 4].to_vec(); // header+data of "first", header of "second", 512 of 4096 bytes
    let spec =
        ImageSpec { reference: "cut:1".into(), config: serde_json::json!({}), layers: vec![cut] };
    let file = archive(dir.path(), "cut", &[spec], ArchiveFormat::Oci, false);
    let err = store.import(&file).unwrap_err();
    assert!(
        matches!(&err, outpost::image::ImageError::Unpack { entry, .. } if entry == "second"),
        "unexpected error: {err}"
    );
    assert_eq!(tree(store.layers_dir()), Vec::<String>::new());

    // A crash leaves a temp dir behind instead: it is never taken for a layer, and gc
    // removes it once its writer is gone (this process is alive, so its own survive).
    let dead = store.layers_dir().join(".tmp-999999999-0");
    let live = store.layers_dir().join(format!(".tmp-{}-999", std::process::id()));
    std::fs::create_dir_all(dead.join("bin")).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let report = store.gc(&Default::default()).unwrap();
    assert_eq!(report.layers_removed, 1);
    assert!(!dead.exists());
    assert!(live.exists());
}

#[test]
fn zstd_layers_unpack() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let mut layer = LayerBuilder::new();
    layer.file("hello", 0o640, b"zstd world").unwrap();
    let layer = layer.finish().unwrap();
    let compressed =
        ruzstd::encoding::compress_to_vec(&layer[..], ruzstd::encoding::CompressionLevel::Fastest);
    let file = oci_archive_with_blobs(dir.path(), "zstd:1", &[(compressed, sha256(&layer))]);
    assert_eq!(store.import(&file).unwrap(), vec!["docker.io/library/zstd:1".to_string()]);
    let image = store.resolve("zstd:1").unwrap().unwrap();
    assert_eq!(std::fs::read(image.layers[0].join("hello")).unwrap(), b"zstd world");
    assert_eq!(std::fs::metadata(image.layers[0].join("hello")).unwrap().mode() & 0o7777, 0o640);
}

#[test]
fn unsupported_compression_is_named() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let blob = b"BZh91AY&SY fake bzip2 data".to_vec();
    let diff_id = sha256(b"whatever");
    let file = oci_archive_with_blobs(dir.path(), "bz:1", &[(blob, diff_id.clone())]);
    let err = store.import(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("layer {diff_id}: unsupported compression bzip2 (use gzip, zstd or none)")
    );
    assert_eq!(tree(store.layers_dir()), Vec::<String>::new());
}

/// A one-entry layer whose device-number fields are `major` and `minor` as raw bytes.
fn device_layer(name: &str, kind: EntryType, major: &[u8; 8], minor: &[u8; 8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_mode(0o640);
    h.set_size(0);
    h.set_mtime(outpost::image::build::EPOCH);
    let ustar = h.as_ustar_mut().unwrap();
    ustar.dev_major = *major;
    ustar.dev_minor = *minor;
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn device_fields_left_blank_read_as_zero() {
    let _guard = crate::support::shared();
    // Python's tarfile leaves a FIFO's device fields NUL; other writers fill them with
    // spaces. Go's archive/tar (docker, containerd) reads both as 0.
    for blank in [[0u8; 8], [b' '; 8]] {
        let root = tempfile::tempdir().unwrap();
        let layer = device_layer("run/fifo", EntryType::Fifo, &blank, &blank);
        unpack::extract(&layer[..], root.path(), "sha256:fifo").unwrap();
        let meta = std::fs::symlink_metadata(root.path().join("run/fifo")).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.mode() & 0o7777, 0o640);
    }
    // Numbers that are there are still read.
    let root = tempfile::tempdir().unwrap();
    let layer = device_layer("dev/null", EntryType::Char, b"0000001\0", b"0000003\0");
    unpack::extract(&layer[..], root.path(), "sha256:char").unwrap();
    let meta = std::fs::symlink_metadata(root.path().join("dev/null")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
}

#[test]
fn image_with_a_python_written_fifo_imports() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let layer = device_layer("run/fifo", EntryType::Fifo, &[0; 8], &[0; 8]);
    let spec = ImageSpec {
        reference: "fifo:1".into(),
        config: serde_json::json!({}),
        layers: vec![layer],
    };
    let file = archive(dir.path(), "fifo", &[spec], ArchiveFormat::Docker, false);
    store.import(&file).unwrap();
    let image = store.resolve("fifo:1").unwrap().unwrap();
    let meta = std::fs::symlink_metadata(image.layers[0].join("run/fifo")).unwrap();
    assert!(meta.file_type().is_fifo());
}

#[test]
fn a_bad_device_field_names_the_layer_and_the_entry() {
    let _guard = crate::support::shared();
    let root = tempfile::tempdir().unwrap();
    let layer = device_layer("dev/odd", EntryType::Char, b"zz\0\0\0\0\0\0", &[0; 8]);
    let err = unpack::extract(&layer[..], root.path(), "sha256:odd").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("layer sha256:odd: entry \"dev/odd\": "), "{msg}");
    assert!(msg.contains("numeric field was not a number: zz"), "{msg}");
}

#[test]
fn a_corrupt_header_names_the_entry_before_it() {
    let _guard = crate::support::shared();
    let mut layer = raw_tar(&[entry("first", EntryType::Regular, b"data", None)]);
    // The end-of-archive blocks become a header with a bad checksum.
    let end = layer.len() - 1024;
    layer[end..end + 5].copy_from_slice(b"junk!");
    let root = tempfile::tempdir().unwrap();
    let err = unpack::extract(&layer[..], root.path(), "sha256:junk").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("layer sha256:junk: corrupt tar stream after entry \"first\": "),
        "{msg}"
    );

    let first = &layer[end..];
    let err = unpack::extract(first, root.path(), "sha256:junk").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("layer sha256:junk: corrupt tar stream at the first entry: "), "{msg}");
}

#[test]
fn blank_owner_mode_and_time_fields_read_as_zero() {
    let _guard = crate::support::shared();
    let mut h = tar::Header::new_ustar();
    h.set_path("f").unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_size(2);
    {
        let old = h.as_old_mut();
        old.uid = [b' '; 8];
        old.gid = [0; 8];
        old.mode = [0; 8];
        old.mtime = [b' '; 12];
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"hi"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    unpack::extract(&layer[..], root.path(), "sha256:blank").unwrap();
    let meta = std::fs::symlink_metadata(root.path().join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777, meta.mtime()), (0, 0, 0, 0));
}
