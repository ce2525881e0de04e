use super::*;
use libcontainer::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process};

#[test]
fn capability_masks_use_kernel_numbers() {
    let set = |caps: &[Capability]| Some(caps.iter().copied().collect::<Capabilities>());
    // CAP_CHOWN 0, CAP_KILL 5, CAP_NET_BIND_SERVICE 10, CAP_SYS_ADMIN 21, CAP_BPF 39.
    let caps =
        set(&[Capability::Chown, Capability::Kill, Capability::NetBindService, Capability::Bpf]);
    assert_eq!(mask(&caps), 1 | 1 << 5 | 1 << 10 | 1 << 39);
    assert_eq!(mask(&set(&[Capability::SysAdmin])), 1 << 21);
    assert_eq!(mask(&None), 0);
}

#[test]
fn rlimits_fit_the_targets_rlim_t() {
    assert_eq!(rlim(1024), 1024);
    assert_eq!(rlim(u64::MAX), libc::RLIM_INFINITY);
    // Too wide for a 32-bit rlim_t: unlimited there, kept where rlim_t has 64 bits.
    let big = 1u64 << 33;
    let want =
        if size_of::<libc::rlim_t>() == 8 { big as libc::rlim_t } else { libc::RLIM_INFINITY };
    assert_eq!(rlim(big), want);
}

#[test]
fn template_takes_the_containers_process() {
    let mut spec = Spec::default();
    let mut process = Process::default();
    process.set_env(Some(vec!["A=1".into(), "PATH=/bin:/usr/bin".into()]));
    process.set_cwd("/work".into());
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some([Capability::Kill].into()));
    caps.set_effective(Some([Capability::Kill].into()));
    caps.set_permitted(Some([Capability::Kill].into()));
    caps.set_inheritable(Some(Default::default()));
    caps.set_ambient(Some(Default::default()));
    process.set_capabilities(Some(caps));
    process.set_no_new_privileges(Some(true));
    process.set_oom_score_adj(Some(1000));
    let mut user = process.user().clone();
    user.set_uid(1000);
    user.set_gid(3000);
    user.set_additional_gids(Some(vec![3000, 4000]));
    process.set_user(user);
    spec.set_process(Some(process));
    let ns = |typ| {
        let mut ns = libcontainer::oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(typ);
        ns
    };
    let types = [LinuxNamespaceType::Mount, LinuxNamespaceType::Pid, LinuxNamespaceType::Network];
    let linux = spec.linux_mut().as_mut().expect("linux");
    linux.set_namespaces(Some(types.into_iter().map(ns).collect()));
    let t =
        ExecTemplate::new("app#0", &spec, 1, Path::new("/nonexistent"), None).expect("template");
    assert_eq!(t.path, vec!["/bin".to_string(), "/usr/bin".to_string()]);
    assert_eq!(t.env, vec![c_string("A=1"), c_string("PATH=/bin:/usr/bin")]);
    assert_eq!(t.cwd, c_string("/work"));
    assert_eq!((t.uid, t.gid, t.groups.clone()), (1000, 3000, vec![3000, 4000]));
    let kill = 1 << 5;
    assert_eq!(
        t.caps,
        Some(CapSets {
            bounding: kill,
            effective: kill,
            permitted: kill,
            inheritable: 0,
            ambient: 0
        })
    );
    assert!(t.no_new_privs);
    assert_eq!(t.oom_score_adj, Some(c_string("1000")));
    // The spec's namespaces, mount last; pid is entered by the parent.
    let names: Vec<&str> = t.namespaces.iter().map(|(n, _)| *n).collect();
    assert_eq!((names, t.pid_namespace), (vec!["net", "mnt"], true));
    assert!(t.cgroup_procs.is_empty(), "pid 1 is in no cgroup below /nonexistent");
}
