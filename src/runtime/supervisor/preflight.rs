//! Checks and preparation before libcontainer creates a container, where the reason for a
//! failure can still be told precisely (libcontainer's init reports only the top of its error
//! chain, e.g. "failed to unix syscall"): the working directory is created if missing, as runc
//! does, and the command must exist and be executable, with runc's messages.
//!
//! Container paths are resolved on the host the way the container will see them: under the
//! longest bind mount (a volume) that covers them, else in the rootfs, always within that root
//! (libpathrs: symlinks cannot lead out of it). A path under a mount the supervisor cannot see
//! into (proc, tmpfs, ...) is left to libcontainer.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::{Mount, Spec};
use pathrs::error::ErrorKind;
use pathrs::Root;

use super::error::{Result, SupervisorError};
use crate::runtime::spec::DEFAULT_PATH;

/// Where a container path lives on the host: a root directory and the path inside it.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    In {
        root: PathBuf,
        path: PathBuf,
    },
    /// Under a mount that is not a bind (proc, sysfs, tmpfs, ...): not visible from here.
    Unknown,
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// `path` made absolute (against `cwd`) and lexically normalised (`..` stops at `/`, as in
/// the container's root).
fn normalise(cwd: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in cwd.join(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The host root and inner path of a container path (absolute, normalised).
fn locate(mounts: &[Mount], rootfs: &Path, path: &Path) -> Location {
    let covering = mounts
        .iter()
        .filter(|m| path.starts_with(normalise(Path::new("/"), m.destination())))
        .max_by_key(|m| normalise(Path::new("/"), m.destination()).components().count());
    match covering {
        None => Location::In { root: rootfs.to_path_buf(), path: path.to_path_buf() },
        Some(m) if is_bind(m) => match m.source() {
            Some(source) => {
                let dest = normalise(Path::new("/"), m.destination());
                let rest = path.strip_prefix(&dest).unwrap_or(Path::new(""));
                Location::In { root: source.clone(), path: Path::new("/").join(rest) }
            }
            None => Location::Unknown,
        },
        Some(_) => Location::Unknown,
    }
}

fn errno(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        ErrorKind::OsError(errno) => errno,
        _ => None,
    }
}

/// Creates the working directory if it is missing (mode 0755, owned by root, like runc).
fn working_dir(container: &str, mounts: &[Mount], rootfs: &Path, cwd: &Path) -> Result<()> {
    let cwd = normalise(Path::new("/"), cwd);
    if through_proc_magic_link(&cwd) {
        // CVE-2024-21626: a descriptor or cwd link of /proc can lead to a host directory.
        // libcontainer refuses it too, but only with "failed to unix syscall"; runc's words.
        return Err(SupervisorError::WorkingDir {
            container: container.to_string(),
            path: cwd,
            detail: "current working directory is outside of container mount namespace root -- possible container breakout detected".into(),
        });
    }
    let Location::In { root, path } = locate(mounts, rootfs, &cwd) else { return Ok(()) };
    let failed = |detail: String| SupervisorError::WorkingDir {
        container: container.to_string(),
        path: cwd.clone(),
        detail,
    };
    // A bind-mounted file (subPath, /etc/hosts) is its own root: it cannot hold a directory.
    if !root.is_dir() {
        return Err(failed("not a directory".into()));
    }
    let root = Root::open(&root).map_err(|e| failed(format!("open {}: {e}", root.display())))?;
    match root.resolve(&path) {
        Ok(handle) => {
            let meta = std::fs::File::from(
                handle.as_fd().try_clone_to_owned().map_err(|e| failed(format!("{e}")))?,
            )
            .metadata()
            .map_err(|e| failed(e.to_string()))?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(failed("not a directory".into()))
            }
        }
        Err(e) if errno(&e) == Some(libc::ENOENT) => {
            root.mkdir_all(&path, &std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed(format!("mkdir: {e}")))?;
            log::info!("container {container}: created working directory {}", cwd.display());
            Ok(())
        }
        Err(e) if errno(&e) == Some(libc::ENOTDIR) => Err(failed("not a directory".into())),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// `/proc/<pid>/{fd,cwd,root,exe,map_files}/...` (also under `task/<tid>/`): links that name
/// whatever the process holds, not a path inside the container.
fn through_proc_magic_link(cwd: &Path) -> bool {
    let parts: Vec<_> = cwd.components().map(|c| c.as_os_str().to_string_lossy()).collect();
    parts.get(1).is_some_and(|p| p == "proc")
        && parts
            .iter()
            .skip(3)
            .any(|p| matches!(p.as_ref(), "fd" | "cwd" | "root" | "exe" | "map_files"))
}

/// What a path holds for exec.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Executable,
    NotExecutable,
    Missing,
    /// Cannot be told from here; libcontainer decides.
    Unknown,
}

fn target(mounts: &[Mount], rootfs: &Path, path: &Path) -> Target {
    let Location::In { root, path } = locate(mounts, rootfs, path) else { return Target::Unknown };
    if !root.is_dir() {
        // A bind-mounted file: the path is the file itself or below it.
        return match std::fs::metadata(&root) {
            Ok(m) if path == Path::new("/") && m.is_file() => executable(&m),
            Ok(_) => Target::Missing,
            Err(_) => Target::Unknown,
        };
    }
    let Ok(root) = Root::open(&root) else { return Target::Unknown };
    match root.resolve(&path) {
        Ok(handle) => match handle.as_fd().try_clone_to_owned().map(std::fs::File::from) {
            Ok(file) => file.metadata().map_or(Target::Unknown, |m| executable(&m)),
            Err(_) => Target::Unknown,
        },
        // A dangling symlink may point into a volume or a mount not seen from here.
        Err(_) if root.resolve_nofollow(&path).is_ok() => Target::Unknown,
        Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Target::Missing,
        Err(_) => Target::Unknown,
    }
}

fn executable(meta: &std::fs::Metadata) -> Target {
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Target::Executable
    } else {
        Target::NotExecutable
    }
}

/// The command as runc's `exec.LookPath` sees it: an error with its wording when the command
/// surely cannot run.
fn command(container: &str, spec: &Spec, mounts: &[Mount], rootfs: &Path) -> Result<()> {
    let Some(process) = spec.process() else { return Ok(()) };
    let Some(name) = process.args().as_ref().and_then(|a| a.first()) else { return Ok(()) };
    let problem = |reason: String| SupervisorError::Command {
        container: container.to_string(),
        command: name.clone(),
        reason,
    };
    if name.contains('/') {
        let path = normalise(process.cwd(), Path::new(name));
        return match target(mounts, rootfs, &path) {
            Target::Executable | Target::Unknown => Ok(()),
            Target::NotExecutable => Err(problem("permission denied".into())),
            Target::Missing => Err(problem(format!("stat {name}: no such file or directory"))),
        };
    }
    let env = process.env().clone().unwrap_or_default();
    let default = DEFAULT_PATH.trim_start_matches("PATH=");
    let path_var =
        env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(default).to_string();
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = normalise(process.cwd(), &Path::new(dir).join(name));
        match target(mounts, rootfs, &candidate) {
            Target::Executable | Target::Unknown => return Ok(()),
            Target::NotExecutable | Target::Missing => {}
        }
    }
    Err(problem("executable file not found in $PATH".into()))
}

/// Creates a missing working directory and checks the command; the rootfs is mounted.
pub fn prepare(container: &str, spec: &Spec, rootfs: &Path) -> Result<()> {
    let mounts: &[Mount] = spec.mounts().as_deref().unwrap_or_default();
    if let Some(process) = spec.process() {
        working_dir(container, mounts, rootfs, process.cwd())?;
    }
    command(container, spec, mounts, rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::Process;

    fn mount(dest: &str, typ: &str, source: &Path) -> Mount {
        let mut m = Mount::default();
        m.set_destination(dest.into());
        m.set_typ(Some(typ.into()));
        m.set_source(Some(source.to_path_buf()));
        m.set_options(Some(vec![if typ == "bind" { "rbind" } else { "nosuid" }.into()]));
        m
    }

    fn spec(args: &[&str], cwd: &str, mounts: Vec<Mount>) -> Spec {
        let mut spec = Spec::default();
        let mut process = Process::default();
        process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        process.set_env(Some(vec!["PATH=/bin".into()]));
        process.set_cwd(cwd.into());
        spec.set_process(Some(process));
        spec.set_mounts(Some(mounts));
        spec
    }

    fn file(path: &Path, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn locates_paths_under_the_longest_bind_mount_and_not_under_other_mounts() {
        let mounts = vec![
            mount("/data", "bind", Path::new("/host/vol")),
            mount("/data/sub/", "bind", Path::new("/host/sub")),
            mount("/proc", "proc", Path::new("proc")),
        ];
        let rootfs = Path::new("/rootfs");
        let at = |p: &str| locate(&mounts, rootfs, Path::new(p));
        let inside = |root: &str, path: &str| Location::In { root: root.into(), path: path.into() };
        assert_eq!(at("/data/x/y"), inside("/host/vol", "/x/y"));
        assert_eq!(at("/data/sub/z"), inside("/host/sub", "/z"));
        assert_eq!(at("/datafile"), inside("/rootfs", "/datafile"));
        assert_eq!(at("/proc/self/fd/3"), Location::Unknown);
        assert_eq!(normalise(Path::new("/w"), Path::new("../../a/./b")), PathBuf::from("/a/b"));
    }

    #[test]
    fn creates_a_missing_working_directory_inside_the_root_even_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        // On the host this leads to `/`; in the container's root it stays at its `/`.
        std::os::unix::fs::symlink("../../../../../../../..", rootfs.join("escape")).unwrap();
        file(&rootfs.join("bin/sh"), 0o755);
        let name = format!("outpost-preflight-{}", std::process::id());
        let spec = spec(&["sh"], &format!("/escape/{name}"), vec![]);
        prepare("app", &spec, &rootfs).expect("prepare");
        assert!(!Path::new("/").join(&name).exists(), "created outside the rootfs");
        let inner = rootfs.join(&name);
        assert!(inner.is_dir(), "{inner:?}");
        assert_eq!(std::fs::metadata(&inner).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn creates_the_working_directory_in_the_volume_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let volume = dir.path().join("volume");
        std::fs::create_dir_all(rootfs.join("data")).unwrap();
        std::fs::create_dir_all(&volume).unwrap();
        file(&rootfs.join("bin/sh"), 0o755);
        let spec = spec(&["sh"], "/data/a/b", vec![mount("/data", "bind", &volume)]);
        prepare("app", &spec, &rootfs).expect("prepare");
        assert!(volume.join("a/b").is_dir());
        assert!(!rootfs.join("data/a").exists());
    }

    #[test]
    fn a_working_directory_that_is_a_file_or_under_proc_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        file(&rootfs.join("bin/sh"), 0o755);
        let e = prepare("app", &spec(&["sh"], "/bin/sh", vec![]), &rootfs).unwrap_err();
        assert!(e.to_string().contains("\"/bin/sh\"") && e.to_string().contains("not a directory"));
        let proc = vec![mount("/proc", "proc", Path::new("proc"))];
        prepare("app", &spec(&["sh"], "/proc/sys", proc.clone()), &rootfs).expect("left alone");
        assert!(!rootfs.join("proc").exists());
        for cwd in ["/proc/self/fd/3", "/proc/1/cwd", "/proc/self/task/1/root/etc", "/proc/7/fd"] {
            let e = prepare("app", &spec(&["sh"], cwd, proc.clone()), &rootfs).unwrap_err();
            assert!(e.to_string().contains("possible container breakout detected"), "{cwd}: {e}");
        }
    }

    #[test]
    fn commands_are_looked_up_like_runc_with_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let volume = dir.path().join("volume");
        file(&rootfs.join("bin/sh"), 0o755);
        file(&rootfs.join("etc/passwd"), 0o644);
        file(&volume.join("run.sh"), 0o755);
        let vol = || vec![mount("/scripts", "bind", &volume)];
        let check = |args: &[&str]| prepare("app", &spec(args, "/", vol()), &rootfs);
        check(&["sh"]).expect("in $PATH");
        check(&["/bin/sh"]).expect("absolute");
        check(&["/scripts/run.sh"]).expect("in a volume");
        let message = |args: &[&str]| check(args).unwrap_err().to_string();
        assert_eq!(
            message(&["nosuch"]),
            "container app: exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(
            message(&["/etc/passwd"]),
            "container app: exec: \"/etc/passwd\": permission denied"
        );
        assert_eq!(
            message(&["/bin/nosuch"]),
            "container app: exec: \"/bin/nosuch\": stat /bin/nosuch: no such file or directory"
        );
        // Not executable in $PATH: not found, as Go's LookPath says.
        assert!(message(&["passwd"]).contains("not found"));
        // A symlink to a mount's content (dangling in the rootfs) is left to libcontainer.
        std::os::unix::fs::symlink("/scripts/run.sh", rootfs.join("bin/run")).unwrap();
        check(&["run"]).expect("symlink into a volume");
    }
}
