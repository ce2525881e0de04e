//! The CNI client against Debian's real plugins (containernetworking-plugins), as root.
//!
//! Each test runs in a thread with its own network namespace, so the bridges and veths the
//! plugins create never touch the host's network and vanish with the thread.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use outpost::network::cni::{pod_args, Attachment, Cni, CniError, NetworkList};

const PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

fn require_plugins() {
    assert!(
        PLUGIN_DIRS.iter().any(|d| Path::new(d).join("bridge").exists()),
        "CNI plugins not found in {PLUGIN_DIRS:?}: install containernetworking-plugins (tests/prereqs.sh does)"
    );
}

/// Runs `f` on a thread that has a private network namespace.
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run the tests as root");
        f()
    })
    .join()
    .expect("test thread")
}

/// A process holding a fresh network namespace, standing in for a pod sandbox.
struct Netns(Child);

impl Netns {
    fn new() -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        // SAFETY: unshare is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        Netns(cmd.spawn().expect("spawn sleep"))
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
    fn devices(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/net/dev", self.0.id())).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn network(ipam_dir: &Path) -> NetworkList {
    let text = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "outpost-test",
        "plugins": [{
            "type": "bridge", "bridge": "otest0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.123.45.0/24", "dataDir": ipam_dir},
        }],
    });
    NetworkList::parse(None, &text.to_string()).unwrap()
}

fn attachment(netns: &Netns) -> Attachment {
    Attachment {
        container_id: "pod-uid-1".into(),
        netns: netns.path(),
        ifname: "eth0".into(),
        args: pod_args("default", "web", "pod-uid-1"),
        port_mappings: vec![],
    }
}

fn dirs() -> Vec<PathBuf> {
    PLUGIN_DIRS.iter().map(PathBuf::from).collect()
}

#[test]
fn add_gives_an_ip_and_del_after_restart_releases_it() {
    let _guard = crate::support::shared();
    require_plugins();
    in_private_netns(|| {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = tmp.path().join("ipam");
        let cache = tmp.path().join("cache");
        let netns = Netns::new();
        let att = attachment(&netns);
        let cni = Cni::new(network(&ipam), dirs(), cache.clone());
        let result = smol::block_on(cni.add(&att)).expect("ADD");
        let ip = result.pod_ips().into_iter().next().expect("an IP");
        assert!(ip.starts_with("10.123.45."), "{ip}");
        assert!(netns.devices().contains("eth0:"), "no eth0 in the pod netns");
        let leased = ipam.join("outpost-test").join(&ip);
        assert!(leased.exists(), "host-local did not record {ip}");
        smol::block_on(cni.check(&att)).expect("CHECK");

        // A restarted agent knows the attachment only from the cache.
        let restarted = Cni::new(network(&ipam), dirs(), cache.clone());
        let cached = restarted.cached_attachments();
        assert_eq!(cached, vec![att.clone()]);
        smol::block_on(restarted.del(&cached[0])).expect("DEL");
        assert!(!leased.exists(), "IP {ip} leaked after DEL");
        assert!(restarted.cached_attachments().is_empty());
        assert!(!netns.devices().contains("eth0:"));
        // DEL is idempotent.
        smol::block_on(restarted.del(&att)).expect("second DEL");
    });
}

#[test]
fn a_missing_plugin_is_named_with_the_fix() {
    let _guard = crate::support::shared();
    require_plugins();
    let text = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"no-such-plugin"}]}"#;
    let cni = Cni::new(NetworkList::parse(None, text).unwrap(), dirs(), std::env::temp_dir());
    let netns_path = PathBuf::from("/proc/self/ns/net");
    let att = Attachment {
        container_id: "x".into(),
        netns: netns_path,
        ifname: "eth0".into(),
        args: vec![],
        port_mappings: vec![],
    };
    let err = smol::block_on(cni.add(&att)).unwrap_err();
    assert!(matches!(err, CniError::PluginNotFound { .. }));
    assert_eq!(
        err.to_string(),
        "CNI plugin \"no-such-plugin\" not found in /usr/lib/cni, /opt/cni/bin: install it (Debian: containernetworking-plugins)"
    );
}

#[test]
fn a_plugin_error_carries_its_message() {
    let _guard = crate::support::shared();
    require_plugins();
    in_private_netns(|| {
        let tmp = tempfile::tempdir().unwrap();
        let text = serde_json::json!({
            "cniVersion": "1.0.0", "name": "bad",
            "plugins": [{"type": "bridge", "bridge": "otest1", "ipam": {"type": "host-local", "subnet": "not-a-subnet", "dataDir": tmp.path()}}],
        });
        let cni = Cni::new(
            NetworkList::parse(None, &text.to_string()).unwrap(),
            dirs(),
            tmp.path().join("cache"),
        );
        let netns = Netns::new();
        let err = smol::block_on(cni.add(&attachment(&netns))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("CNI plugin bridge ADD failed: "), "{msg}");
        assert!(msg.contains("not-a-subnet"), "{msg}");
    });
}

#[test]
fn broken_config_lists_are_reported_with_their_path() {
    let _guard = crate::support::shared();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("10-a.conflist"), "{ not json").unwrap();
    std::fs::write(
        tmp.path().join("20-b.conflist"),
        r#"{"name":"b","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let err = NetworkList::find(tmp.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "CNI config {}: invalid JSON",
            tmp.path().join("10-a.conflist").display()
        )),
        "{err}"
    );
    std::fs::remove_file(tmp.path().join("10-a.conflist")).unwrap();
    let found = NetworkList::find(tmp.path()).unwrap().unwrap();
    assert_eq!((found.name.as_str(), found.cni_version.as_str()), ("b", "1.0.0"));
    assert_eq!(NetworkList::find(&tmp.path().join("none")).unwrap(), None);
}

/// The built-in chain (bridge with ipMasq, portmap, firewall) in a temp conf dir, with
/// host-local's store under `dir`.
fn network_paths(dir: &Path) -> outpost::network::NetworkPaths {
    let conf = dir.join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    let mut list = outpost::network::default::network(
        "10.123.46.0/24".parse().unwrap(),
        outpost::network::default::BRIDGE,
    )
    .to_json();
    list["plugins"][0]["ipam"]["dataDir"] = dir.join("ipam").display().to_string().into();
    std::fs::write(conf.join("10-test.conflist"), list.to_string()).unwrap();
    outpost::network::NetworkPaths {
        conf_dir: conf,
        cache_dir: dir.join("cache"),
        netns_dir: dir.join("netns"),
        ..outpost::network::NetworkPaths::standard(dir)
    }
}

fn iptables_nat() -> String {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save: install iptables (tests/prereqs.sh does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sandbox_that_died_is_detached_without_leaving_rules_or_leases() {
    let _guard = crate::support::shared();
    require_plugins();
    in_private_netns(|| {
        let tmp = tempfile::tempdir().unwrap();
        let paths = network_paths(tmp.path());
        let net = outpost::network::Network::load(&paths);
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.uid = Some("pod-uid-2".into());
        let netns = Netns::new();
        let ips = smol::block_on(net.attach(&pod, &netns.path())).expect("ADD");
        assert_eq!(ips.len(), 1);
        assert_eq!(net.cached_ips("pod-uid-2"), ips);
        assert_eq!(net.attached_pods(), ["pod-uid-2"]);
        smol::block_on(net.check("pod-uid-2")).expect("CHECK");
        let masq = |t: &str| t.lines().filter(|l| l.contains("-j MASQUERADE")).count();
        assert_eq!(masq(&iptables_nat()), 1, "{}", iptables_nat());
        let leases = tmp.path().join("ipam").join("outpost");
        assert!(leases.join(&ips[0]).exists());

        // The pause process dies first; the pinned namespace keeps eth0 for DEL.
        drop(netns);
        smol::block_on(net.detach("pod-uid-2")).expect("DEL");
        assert_eq!(masq(&iptables_nat()), 0, "{}", iptables_nat());
        assert!(!leases.join(&ips[0]).exists(), "lease of {} left", ips[0]);
        assert_eq!(std::fs::read_dir(&paths.netns_dir).unwrap().count(), 0, "pin left");
        assert!(net.attached_pods().is_empty());
        // Idempotent: nothing cached, nothing to do.
        smol::block_on(net.detach("pod-uid-2")).expect("second DEL");
    });
}

#[test]
fn a_failed_add_is_undone_and_leaves_no_cache_entry() {
    let _guard = crate::support::shared();
    require_plugins();
    in_private_netns(|| {
        let tmp = tempfile::tempdir().unwrap();
        let paths = network_paths(tmp.path());
        // The chain breaks after the bridge has set up eth0 and leased an IP.
        let mut list: serde_json::Value = serde_json::from_slice(
            &std::fs::read(paths.conf_dir.join("10-test.conflist")).unwrap(),
        )
        .unwrap();
        list["plugins"][1] = serde_json::json!({"type": "no-such-plugin"});
        std::fs::write(paths.conf_dir.join("10-test.conflist"), list.to_string()).unwrap();
        let net = outpost::network::Network::load(&paths);
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.uid = Some("pod-uid-3".into());
        let netns = Netns::new();
        let err = smol::block_on(net.attach(&pod, &netns.path())).unwrap_err();
        assert!(matches!(err, CniError::PluginNotFound { .. }), "{err}");
        assert!(!netns.devices().contains("eth0:"), "eth0 left after the failed ADD");
        let leases = tmp.path().join("ipam").join("outpost");
        let left: Vec<_> = std::fs::read_dir(&leases)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.iter().all(|n| n == "lock" || n.to_string_lossy().starts_with("last_reserved")),
            "{left:?}"
        );
        assert!(net.attached_pods().is_empty());
    });
}
