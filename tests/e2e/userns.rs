//! User namespaces for pods with `hostUsers: false` (`runtime::userns`), below the agent: a
//! pinned namespace maps the pod's block of host ids, namespaces made with it are owned by it,
//! and idmapped tmpfs mounts show host root's files as the pod root's, through bind mounts too.
//! (Pods with `hostUsers: false` are still refused: an idmapped overlayfs fails with EINVAL on
//! this kernel; the pod tests wait in docs/wip/userns-pod-tests.rs.)

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use outpost::runtime::userns::{self, Kind, Owner};

/// A block no other test uses, far from the default pool.
const FIRST: u32 = 0x6abc_0000;

/// Unmounts (last made first) whatever the test made, pins included, even when it failed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            while umount2(m, MntFlags::MNT_DETACH).is_ok() {}
        }
    }
}

/// `sh -c script` as root of the pinned user namespace (and, with `mount_ns`, in a new mount
/// namespace it owns, as a container's); stdout, or a panic with stderr.
fn in_userns(pin: &Path, mount_ns: bool, script: &str) -> String {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--user={}", pin.display()));
    if mount_ns {
        cmd.args(["unshare", "--mount", "--propagation", "private"]);
    }
    let out = cmd.args(["sh", "-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn a_pinned_user_namespace_maps_the_pods_block_and_owns_the_namespaces_made_with_it() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let ns = |name: &str| tmp.path().join(name);
    let (user, net, uts, ipc) = (ns("user"), ns("net"), ns("uts"), ns("ipc"));
    let _cleanup = Cleanup(vec![user.clone(), net.clone(), uts.clone(), ipc.clone()]);
    userns::create(Owner::New { first: FIRST }, &[(Kind::User, &user), (Kind::Net, &net)]).unwrap();
    // Made later (as the supervisor makes the pod's uts and ipc), owned by the same one.
    userns::create(Owner::Pinned(&user), &[(Kind::Uts, &uts), (Kind::Ipc, &ipc)]).unwrap();
    let made = Made { user, net, uts };
    let uid_map = in_userns(&made.user, false, "cat /proc/self/uid_map /proc/self/gid_map");
    let maps: Vec<Vec<&str>> = uid_map.lines().map(|l| l.split_whitespace().collect()).collect();
    let expected = vec!["0", "1790705664", "65536"];
    assert_eq!(maps, vec![expected.clone(), expected], "{uid_map}");
    // Root of the pod's user namespace can change its network namespace (lo, sysctls): it owns
    // it. It could not if the host's user namespace owned it.
    let (net, uts) = (&made.net, &made.uts);
    let out = in_userns(
        &made.user,
        false,
        &format!(
            "nsenter --net={} --uts={} sh -c 'ip -o link show lo | grep -o \"<LOOPBACK,UP\"; ip link set lo mtu 1500 && echo 1 > /proc/sys/net/ipv4/ip_unprivileged_port_start && hostname pod-uts && hostname'",
            net.display(),
            uts.display()
        ),
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["<LOOPBACK,UP", "pod-uts"], "{out}");
    // ... and nothing of the host's: it cannot even enter the host's network namespace.
    let host = Command::new("nsenter")
        .arg(format!("--user={}", made.user.display()))
        .args(["nsenter", "--net=/proc/1/ns/net", "true"])
        .output()
        .unwrap();
    assert!(!host.status.success(), "root of a pod's user namespace entered the host's netns");
    let pins = [(Kind::User, made.user.as_path()), (Kind::Net, made.net.as_path())];
    userns::release(&pins);
    assert!(!made.user.exists() && !made.net.exists());
}

struct Made {
    user: PathBuf,
    net: PathBuf,
    uts: PathBuf,
}

#[test]
fn idmapped_tmpfs_shows_host_roots_files_as_the_pods_root_through_binds_too() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    // Root of the pod's namespace is no one on the host: it must be able to walk down here.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = tmp.path();
    let user_pin = d.join("user");
    let mut cleanup = Cleanup(vec![user_pin.clone()]);
    let pod_root = FIRST + 0x10000;
    userns::create(Owner::New { first: pod_root }, &[(Kind::User, &user_pin)]).unwrap();
    let user = std::fs::File::open(&user_pin).unwrap();
    let made = Made { user: user_pin.clone(), net: PathBuf::new(), uts: PathBuf::new() };

    // tmpfs (configMap, secret, downwardAPI and projected volumes are tmpfs mounts).
    let vol = d.join("vol");
    let mapped = d.join("mapped");
    std::fs::create_dir(&vol).unwrap();
    std::fs::create_dir(&mapped).unwrap();
    mount(Some("tmpfs"), &vol, Some("tmpfs"), MsFlags::empty(), Some("mode=0755")).unwrap();
    cleanup.0.push(vol.clone());
    std::fs::write(vol.join("key"), b"v").unwrap();
    std::fs::set_permissions(vol.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    userns::idmap(&vol, &mapped, &user).unwrap();
    cleanup.0.push(mapped.clone());
    assert_eq!(owner(&mapped.join("key")), (pod_root, pod_root), "seen from the host");
    assert_eq!(owner(&vol.join("key")), (0, 0), "the source stays as it was");
    // The host's root keeps writing through the source (a configMap update), seen at once.
    std::fs::write(vol.join("key2"), b"w").unwrap();
    assert_eq!(std::fs::read(mapped.join("key2")).unwrap(), b"w");
    // A bind of it (what libcontainer makes of a volume) keeps the mapping.
    let bind = d.join("bind");
    std::fs::create_dir(&bind).unwrap();
    mount(Some(&mapped), &bind, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    cleanup.0.push(bind.clone());
    assert_eq!(owner(&bind.join("key")), (pod_root, pod_root));
    // Inside, from a mount namespace of the pod's (as a container's): root owns the 0600 file
    // through a bind made there, and what it writes is host root's on the filesystem.
    std::fs::create_dir(d.join("inner")).unwrap();
    let out = in_userns(
        &made.user,
        true,
        &format!(
            "mount --bind {v} {c} && stat -c %u:%g {c}/key && cat {c}/key && echo w > {c}/new",
            v = mapped.display(),
            c = d.join("inner").display()
        ),
    );
    assert_eq!(out, "0:0\nv", "{out}");
    assert_eq!(owner(&vol.join("new")), (0, 0), "written as the pod's root: host root's on disk");
}
