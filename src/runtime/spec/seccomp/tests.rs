use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompOperator as Op,
};
use serde_json::json;

use super::*;

fn caps(list: &[Capability]) -> HashSet<Capability> {
    list.iter().copied().collect()
}

/// The syscall names the profile allows with no argument condition.
fn allowed(p: &LinuxSeccomp) -> HashSet<String> {
    p.syscalls()
        .iter()
        .flatten()
        .filter(|s| {
            s.action() == Action::ScmpActAllow && s.args().as_ref().is_none_or(Vec::is_empty)
        })
        .flat_map(|s| s.names().clone())
        .collect()
}

fn conditional(p: &LinuxSeccomp, name: &str) -> Vec<(Op, u64, Option<u64>)> {
    p.syscalls()
        .iter()
        .flatten()
        .filter(|s| s.names().iter().any(|n| n == name))
        .flat_map(|s| s.args().clone().unwrap_or_default())
        .map(|a| (a.op(), a.value(), a.value_two()))
        .collect()
}

#[test]
fn default_profile_denies_by_default_and_allows_the_common_set() {
    let p = default_profile(&caps(&[]), Cpu::X86_64, (6, 1));
    assert_eq!(p.default_action(), Action::ScmpActErrno);
    let a = allowed(&p);
    for name in ["read", "write", "execve", "mkdirat", "close_range", "rseq", "ptrace"] {
        assert!(a.contains(name), "{name} allowed");
    }
    for name in ["mount", "unshare", "setns", "bpf", "reboot", "chroot", "clone", "socket"] {
        assert!(!a.contains(name), "{name} not allowed unconditionally");
    }
}

#[test]
fn capabilities_unlock_their_syscalls() {
    let none = allowed(&default_profile(&caps(&[]), Cpu::X86_64, (6, 1)));
    let admin = default_profile(&caps(&[Capability::SysAdmin]), Cpu::X86_64, (6, 1));
    let a = allowed(&admin);
    for name in ["mount", "unshare", "setns", "clone", "clone3", "sethostname", "umount2"] {
        assert!(a.contains(name) && !none.contains(name), "{name} with CAP_SYS_ADMIN only");
    }
    // With CAP_SYS_ADMIN neither the clone flag filter nor clone3's ENOSYS.
    assert!(conditional(&admin, "clone").is_empty());
    assert!(!admin.syscalls().iter().flatten().any(|s| s.action() == Action::ScmpActErrno));
    for (cap, name) in [
        (Capability::SysChroot, "chroot"),
        (Capability::SysBoot, "reboot"),
        (Capability::SysPtrace, "kcmp"),
        (Capability::SysTime, "settimeofday"),
        (Capability::DacReadSearch, "open_by_handle_at"),
        (Capability::SysModule, "init_module"),
        (Capability::Bpf, "bpf"),
        (Capability::Perfmon, "perf_event_open"),
        (Capability::SysNice, "mbind"),
    ] {
        assert!(!none.contains(name));
        assert!(allowed(&default_profile(&caps(&[cap]), Cpu::X86_64, (6, 1))).contains(name));
    }
}

#[test]
fn clone_without_sys_admin_is_filtered_and_clone3_gives_enosys() {
    let p = default_profile(&caps(&[Capability::Chown]), Cpu::Aarch64, (6, 1));
    let flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;
    assert_eq!(conditional(&p, "clone"), vec![(Op::ScmpCmpMaskedEq, flags, Some(0))]);
    let clone3: Vec<_> =
        p.syscalls().iter().flatten().filter(|s| s.names() == &["clone3".to_string()]).collect();
    assert_eq!(clone3.len(), 1);
    assert_eq!((clone3[0].action(), clone3[0].errno_ret()), (Action::ScmpActErrno, Some(38)));
}

#[test]
fn socket_and_personality_have_containerds_argument_filters() {
    let p = default_profile(&caps(&[]), Cpu::X86_64, (6, 1));
    let socket = conditional(&p, "socket");
    let ops: Vec<(Op, u64)> = socket.iter().map(|(o, v, _)| (*o, *v)).collect();
    assert_eq!(ops, vec![(Op::ScmpCmpLt, 38), (Op::ScmpCmpEq, 39), (Op::ScmpCmpGt, 40)]);
    let personas: Vec<u64> = conditional(&p, "personality").iter().map(|(_, v, _)| *v).collect();
    assert_eq!(personas, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
}

#[test]
fn architectures_and_arch_specific_syscalls() {
    let x86 = default_profile(&caps(&[]), Cpu::X86_64, (6, 1));
    assert_eq!(
        x86.architectures().clone(),
        Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
    );
    assert!(allowed(&x86).contains("arch_prctl") && !allowed(&x86).contains("set_tls"));
    let arm64 = default_profile(&caps(&[]), Cpu::Aarch64, (6, 1));
    assert_eq!(arm64.architectures().clone(), Some(vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]));
    assert!(allowed(&arm64).contains("set_tls") && !allowed(&arm64).contains("arch_prctl"));
    // containerd names no architectures for 32-bit ARM: the native one only.
    let arm = default_profile(&caps(&[]), Cpu::Arm, (6, 1));
    assert_eq!(arm.architectures().clone(), None);
    assert!(allowed(&arm).contains("cacheflush"));
}

#[test]
fn ptrace_needs_kernel_4_8() {
    assert!(!allowed(&default_profile(&caps(&[]), Cpu::X86_64, (4, 4))).contains("ptrace"));
    assert!(allowed(&default_profile(&caps(&[]), Cpu::X86_64, (4, 8))).contains("ptrace"));
}

#[test]
fn default_profile_compiles() {
    for cpu in [Cpu::native(), Cpu::Other] {
        let f = Filter::compile(&default_profile(&caps(&[]), cpu, (6, 1))).expect("compiles");
        assert!(f.len() > 100, "a real program: {} instructions", f.len());
    }
}

fn pod(
    pod_profile: Option<serde_json::Value>,
    container_profile: Option<serde_json::Value>,
) -> (Pod, Container) {
    let mut c = json!({"name": "app", "image": "busybox"});
    if let Some(p) = container_profile {
        c["securityContext"] = json!({"seccompProfile": p});
    }
    let mut spec = json!({"containers": [c.clone()]});
    if let Some(p) = pod_profile {
        spec["securityContext"] = json!({"seccompProfile": p});
    }
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
    (pod, serde_json::from_value(c).unwrap())
}

fn node(default_on: bool, root: &std::path::Path) -> SeccompNode {
    SeccompNode { default_runtime_default: default_on, profile_root: root.into(), kernel: (6, 1) }
}

#[test]
fn container_overrides_pod_and_node_default_applies_when_neither_says() {
    let root = std::path::Path::new("/nonexistent");
    let none = caps(&[]);
    let rd = json!({"type": "RuntimeDefault"});
    let un = json!({"type": "Unconfined"});
    let pick = |pp, cp, default_on| {
        let (p, c) = pod(pp, cp);
        container_seccomp(&p, &c, false, &none, &node(default_on, root)).unwrap().is_some()
    };
    assert!(pick(None, None, true), "outpost's default: RuntimeDefault");
    assert!(!pick(None, None, false), "--seccomp-default=false: Unconfined");
    assert!(!pick(Some(rd.clone()), Some(un.clone()), true), "container Unconfined wins");
    assert!(pick(Some(un.clone()), Some(rd.clone()), false), "container RuntimeDefault wins");
    assert!(!pick(Some(un), None, true), "pod Unconfined");
    assert!(pick(Some(rd), None, false), "pod RuntimeDefault");
}

#[test]
fn privileged_containers_get_no_filter_even_when_asked() {
    let (p, c) = pod(None, Some(json!({"type": "RuntimeDefault"})));
    let n = node(true, std::path::Path::new("/nonexistent"));
    assert!(container_seccomp(&p, &c, true, &caps(&[]), &n).unwrap().is_none());
}

#[test]
fn localhost_profiles_load_and_bad_ones_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("seccomp");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let good = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"}]
    });
    std::fs::write(root.join("sub/deny-mkdir.json"), good.to_string()).unwrap();
    std::fs::write(root.join("bad.json"), "{\"defaultAction\": 3}").unwrap();
    std::fs::write(
        root.join("docker.json"),
        json!({"defaultAction": "SCMP_ACT_ERRNO", "archMap": []}).to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("notify.json"),
        json!({"defaultAction": "SCMP_ACT_NOTIFY"}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("outside.json"), good.to_string()).unwrap();
    std::os::unix::fs::symlink("../outside.json", root.join("escape.json")).unwrap();

    let (p, c) =
        pod(None, Some(json!({"type": "Localhost", "localhostProfile": "sub/deny-mkdir.json"})));
    let loaded = container_seccomp(&p, &c, false, &caps(&[]), &node(true, &root)).unwrap().unwrap();
    assert_eq!(loaded.default_action(), Action::ScmpActAllow);
    assert_eq!(loaded.syscalls().as_ref().unwrap()[0].names(), &["mkdirat", "mkdir"]);

    let err = |name: &str| load_localhost(&root, name).unwrap_err().to_string();
    let missing = err("missing.json");
    assert!(missing.contains(&root.join("missing.json").display().to_string()), "{missing}");
    assert!(missing.contains("No such file"), "{missing}");
    assert!(err("bad.json").contains("not an OCI seccomp profile"), "{}", err("bad.json"));
    assert!(err("docker.json").contains("unknown fields archMap"), "{}", err("docker.json"));
    assert!(err("notify.json").contains("SCMP_ACT_NOTIFY"));
    assert!(err("escape.json").contains("outside the profile directory"), "{}", err("escape.json"));
    assert!(err("../outside.json").contains("outside the profile directory"));
    assert!(err(".").contains("outside the profile directory"));
    let (p, c) = pod(Some(json!({"type": "Localhost"})), None);
    let e = container_seccomp(&p, &c, false, &caps(&[]), &node(true, &root)).unwrap_err();
    assert!(e.to_string().contains("needs localhostProfile"), "{e}");
}

#[test]
fn a_profile_is_compiled_once_per_process() {
    let p = default_profile(&caps(&[Capability::Kill]), Cpu::native(), (5, 10));
    let first = compiled(&p).expect("compiles");
    let again = compiled(&p.clone()).expect("compiles");
    assert!(std::sync::Arc::ptr_eq(&first, &again), "the second compile came from the cache");
    assert_eq!(*first, Filter::compile(&p).unwrap());
    let other = default_profile(&caps(&[Capability::SysAdmin]), Cpu::native(), (5, 10));
    assert_ne!(*compiled(&other).unwrap(), *first, "another profile, another filter");
}

#[test]
fn the_profile_the_fork_server_compiles_is_the_one_a_default_container_gets() {
    let (p, c) = pod(None, None);
    let security = crate::runtime::spec::security::security(&c, &mut Vec::new());
    let node = SeccompNode { kernel: kernel_version(), ..node(true, std::path::Path::new("/x")) };
    let got = container_seccomp(&p, &c, false, &security.capabilities, &node).unwrap();
    assert_eq!(got, Some(default_for_default_caps()));
}
