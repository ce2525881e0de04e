//! User namespaces for pods with `hostUsers: false` (`runtime::userns`), below the agent: a
//! pinned namespace maps the pod's block of host ids, namespaces made with it are owned by it,
//! and idmapped mounts (tmpfs, overlayfs) show host root's files as the pod root's, through
//! bind mounts too.

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
fn idmapped_tmpfs_and_overlay_show_host_roots_files_as_the_pods_root_through_binds_too() {
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

    // overlayfs (a container's rootfs).
    for sub in ["lower", "upper", "work", "root"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("lower/etc-file"), b"image").unwrap();
    let root = d.join("root");
    let root_mapped = d.join("root-mapped");
    std::fs::create_dir(&root_mapped).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        d.join("lower").display(),
        d.join("upper").display(),
        d.join("work").display()
    );
    mount(Some("overlay"), &root, Some("overlay"), MsFlags::empty(), Some(opts.as_str())).unwrap();
    cleanup.0.push(root.clone());
    userns::idmap(&root, &root_mapped, &user).unwrap();
    cleanup.0.push(root_mapped.clone());
    assert_eq!(owner(&root_mapped.join("etc-file")).0, pod_root);
    let out = in_userns(
        &made.user,
        false,
        &format!(
            "stat -c %u {r}/etc-file && echo x > {r}/etc-file && touch {r}/made",
            r = root_mapped.display()
        ),
    );
    assert_eq!(out, "0\n");
    // Copied up and created as host root on the upper layer, never as the pod's ids.
    assert_eq!(owner(&d.join("upper/etc-file")), (0, 0));
    assert_eq!(owner(&d.join("upper/made")), (0, 0));
}

/// Added to a pod's spec: its own user namespace.
pub const HOST_USERS_FALSE: &str = "  hostUsers: false\n";

/// The host uid and gid of the process whose command line is exactly `cmdline` (args joined
/// by spaces), from /proc/PID/status.
fn host_ids_of(cmdline: &str) -> Option<(u32, u32)> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.join(" ") != cmdline {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let id = |key: &str| -> Option<u32> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        return Some((id("Uid:")?, id("Gid:")?));
    }
    None
}

/// A file named `name` anywhere under `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        if e.file_name() == name {
            return Some(path);
        }
        if e.file_type().ok()?.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// A pod in its own user namespace writing `id` output and a file into an emptyDir, then
/// sleeping as `sleep SECONDS` (unique per pod, to find its process on the host).
fn userns_pod(name: &str, seconds: u32) -> String {
    let script = format!(
        "id -u; id -g; cat /proc/self/uid_map; touch /data/made-by-{name}; echo READY; exec sleep {seconds}"
    );
    crate::support::pod(
        name,
        &script,
        "    volumeMounts:\n    - {name: data, mountPath: /data}\n",
        "  hostUsers: false\n  volumes:\n  - name: data\n    emptyDir: {}\n",
    )
}

fn wait_ids(agent: &crate::support::Agent, name: &str, seconds: u32) -> (u32, u32) {
    // Long enough for a sandbox retried after a failure (back-off).
    let t = std::time::Duration::from_secs(90);
    agent.wait_logs(name, "app", "READY", t);
    crate::support::eventually(t, || {
        host_ids_of(&format!("sleep {seconds}")).ok_or_else(|| format!("no `sleep {seconds}`"))
    })
}

const POOL: &str = "1744830464:196608"; // 0x68000000, three pods

#[test]
fn container_root_is_a_host_id_of_the_pods_block_and_emptydir_files_are_its_ids() {
    let _guard = crate::support::shared();
    let agent = crate::support::Agent::start_with(&["--userns-pool", POOL]);
    agent.apply("one.yaml", &userns_pod("one", 3_607_101));
    let (uid, gid) = wait_ids(&agent, "one", 3_607_101);
    assert_eq!((uid, gid), (1_744_830_464, 1_744_830_464), "root of the pod, on the host");
    let logs = agent.logs("one", "app", 0);
    let lines: Vec<Vec<&str>> = logs.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[..3], [vec!["0"], vec!["0"], vec!["0", "1744830464", "65536"]], "{logs}");
    let made =
        find(&agent.state.join("pod-data"), "made-by-one").expect("the file in the emptyDir");
    assert_eq!(owner(&made), (1_744_830_464, 1_744_830_464), "{}", made.display());
    // The status and describe show it.
    let pod = agent.pod("one").unwrap();
    assert_eq!(pod["spec"]["hostUsers"], false);
    let out = Command::new(crate::support::BIN)
        .args(["describe", "pod", "one", "--server", &format!("http://{}", agent.addr)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Host Users:") && text.contains("false (own user namespace)"), "{text}");
}

#[test]
fn pods_get_disjoint_blocks_kept_across_an_agent_restart() {
    let _guard = crate::support::shared();
    let mut agent = crate::support::Agent::start_with(&["--userns-pool", "1811939328:196608"]);
    agent.apply("a.yaml", &userns_pod("a", 3_607_201));
    agent.apply("b.yaml", &userns_pod("b", 3_607_202));
    let a = wait_ids(&agent, "a", 3_607_201).0;
    let b = wait_ids(&agent, "b", 3_607_202).0;
    let blocks = [1_811_939_328, 1_811_939_328 + 65536];
    assert!(a != b && blocks.contains(&a) && blocks.contains(&b), "{a} {b}");
    agent.restart();
    agent.apply("c.yaml", &userns_pod("c", 3_607_203));
    let c = wait_ids(&agent, "c", 3_607_203).0;
    assert_eq!(c, 1_811_939_328 + 2 * 65536, "the restarted agent gave a held block again");
    assert_eq!(host_ids_of("sleep 3607201").unwrap().0, a, "a pod kept running with its ids");
    // A fourth finds the pool exhausted, and says so.
    agent.apply("d.yaml", &userns_pod("d", 3_607_204));
    crate::support::eventually(crate::support::T, || {
        let log = agent.agent_log().join("\n");
        log.contains("no user namespace ids left").then_some(()).ok_or(log)
    });
    // Deleting a pod frees its block for the next one.
    agent.delete("a.yaml");
    let d = wait_ids(&agent, "d", 3_607_204).0;
    assert_eq!(d, a);
}

#[test]
fn sub_path_swaps_never_mount_a_host_directory_in_a_user_namespace() {
    let _guard = crate::support::shared();
    crate::mount_escapes::sub_path_swaps(HOST_USERS_FALSE);
}

#[test]
fn mount_destination_swaps_keep_volumes_inside_the_root_in_a_user_namespace() {
    let _guard = crate::support::shared();
    crate::mount_escapes::mount_destination_swaps(HOST_USERS_FALSE);
}

#[test]
fn agent_written_volumes_are_read_only_inside_a_user_namespace() {
    let _guard = crate::support::shared();
    crate::mount_escapes::agent_written_volumes_read_only(HOST_USERS_FALSE);
}

#[test]
fn exec_d_processes_never_expose_host_objects_in_a_user_namespace() {
    let _guard = crate::support::shared();
    crate::security::exec_d_processes_expose_nothing(HOST_USERS_FALSE);
}

#[test]
fn exec_d_processes_join_the_container_first_in_a_user_namespace() {
    let _guard = crate::support::shared();
    crate::security::exec_d_processes_join_first(HOST_USERS_FALSE);
}
