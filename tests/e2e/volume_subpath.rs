//! `subPath` binds against a container that rewrites its volume while a sibling starts
//! (CVE-2021-25741 class). Needs root (mounts); this machine and CI run tests as root.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use outpost::runtime::spec::{SubPathBinder, SubPathProblem, SubPathRequest};
use outpost::volume::subpath::BindSubPaths;
use outpost::volume::{Mounter, SystemMounter};

struct Fixture {
    _dir: tempfile::TempDir,
    volume: PathBuf,
    /// A host directory the container must never see: its marker file is the tell.
    host: PathBuf,
    binds: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        assert!(nix::unistd::geteuid().is_root(), "tests/volume_subpath.rs needs root (mounts)");
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        let host = dir.path().join("host");
        std::fs::create_dir_all(volume.join("sub")).unwrap();
        std::fs::write(volume.join("sub/inside"), "volume").unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("host-marker"), "host").unwrap();
        let binds = dir.path().join("volume-subpaths");
        Fixture { _dir: dir, volume, host, binds }
    }

    fn bind(&self, sub: &str, index: usize) -> Result<PathBuf, SubPathProblem> {
        let binder = BindSubPaths { dir: self.binds.clone(), mounter: &SystemMounter };
        binder.bind(&SubPathRequest {
            volume: "data",
            volume_dir: &self.volume,
            sub: Path::new(sub),
            container: "app",
            index,
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for m in SystemMounter.mounts_under(&self.binds).unwrap_or_default() {
            let _ = SystemMounter.unmount(&m);
        }
    }
}

/// What the runtime will mount keeps naming the checked directory after the volume's
/// `sub` is swapped for a symlink to a host directory. (A checked *path*, as before, would
/// now lead to the host: this fails on that code.)
#[test]
fn a_bound_sub_path_ignores_later_swaps() {
    let _guard = crate::support::shared();
    let f = Fixture::new();
    let target = f.bind("sub", 0).unwrap();
    assert!(target.starts_with(&f.binds), "{target:?} must be under the pod's binds");
    std::fs::rename(f.volume.join("sub"), f.volume.join("sub.old")).unwrap();
    symlink(&f.host, f.volume.join("sub")).unwrap();
    assert!(target.join("inside").exists(), "the bind must still show the checked directory");
    assert!(!target.join("host-marker").exists(), "the bind followed a swapped-in symlink");

    // Bound again (a restarted container): now the symlink is refused.
    let err = f.bind("sub", 0).unwrap_err();
    assert!(matches!(err, SubPathProblem::Escapes { .. }), "{err:?}");
}

#[test]
fn symlinks_inside_the_volume_are_followed_and_files_bind_as_files() {
    let _guard = crate::support::shared();
    let f = Fixture::new();
    symlink("sub", f.volume.join("alias")).unwrap();
    let target = f.bind("alias/inside", 1).unwrap();
    assert!(target.is_file());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "volume");
    // Writes through the bind land in the volume.
    std::fs::write(&target, "changed").unwrap();
    assert_eq!(std::fs::read_to_string(f.volume.join("sub/inside")).unwrap(), "changed");
}

#[test]
fn missing_directories_are_created_inside_with_the_volume_mode() {
    let _guard = crate::support::shared();
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    std::fs::set_permissions(&f.volume, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let target = f.bind("a/b", 2).unwrap();
    let made = f.volume.join("a/b");
    assert!(made.is_dir());
    assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o7777, 0o2775);
    std::fs::write(made.join("x"), "1").unwrap();
    assert!(target.join("x").exists());
}

#[test]
fn symlinks_out_of_the_volume_are_refused_and_nothing_is_created_outside() {
    let _guard = crate::support::shared();
    let f = Fixture::new();
    symlink(&f.host, f.volume.join("out")).unwrap();
    symlink("../host", f.volume.join("up")).unwrap();
    for sub in ["out", "out/host-marker", "out/new/dir", "up", "up/new"] {
        let err = f.bind(sub, 3).unwrap_err();
        assert!(matches!(err, SubPathProblem::Escapes { .. }), "{sub}: {err:?}");
    }
    assert!(!f.host.join("new").exists(), "a directory was created outside the volume");
}

/// The attack itself: a thread exchanges `sub` with a symlink to a host directory
/// (`renameat2(RENAME_EXCHANGE)`, as the exploit does) while subPaths are bound over and
/// over. Every bind must either fail or show the volume's directory.
#[test]
fn binding_while_sub_is_exchanged_with_a_symlink_never_reaches_the_host() {
    let _guard = crate::support::shared();
    let f = Fixture::new();
    symlink(&f.host, f.volume.join("evil")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (a, b) = (path_c(&f.volume.join("sub")), path_c(&f.volume.join("evil")));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two valid NUL-terminated paths; renameat2 reads them only.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        })
    };
    let (mut bound, mut refused) = (0, 0);
    for i in 0..2000 {
        match f.bind("sub", 4 + i % 4) {
            Ok(target) => {
                bound += 1;
                assert!(
                    !target.join("host-marker").exists(),
                    "attempt {i}: the subPath bind shows the host directory"
                );
                assert!(target.join("inside").exists(), "attempt {i}: not the volume's sub");
            }
            Err(SubPathProblem::Escapes { .. }) => refused += 1,
            Err(e) => panic!("attempt {i}: unexpected {e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{bound} bound, {refused} refused, {swaps} swaps");
    assert!(swaps > 1000, "the swapper hardly ran ({swaps} swaps): the race was not exercised");
    assert!(
        bound > 0 && refused > 0,
        "both outcomes must occur ({bound} bound, {refused} refused)"
    );
}

fn path_c(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}
