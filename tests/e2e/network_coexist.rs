//! The built-in network beside other runtimes and against hostile pods: podman's config and
//! bridge are left alone, no plugin process runs, old bridges in another runtime's range are
//! cleared, and a pod cannot reach services bound to the host's 127.0.0.1 (CVE-2020-8558).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::network_support::*;
use crate::support::{pod, Agent, T};
use outpost::network::rtnl::Rtnl;

/// Runs `f` on a thread inside the network namespace pinned at `pin`.
fn in_netns<R: Send + 'static>(pin: &Path, f: impl FnOnce() -> R + Send + 'static) -> R {
    let pin = pin.to_path_buf();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&pin).unwrap();
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (install iproute2)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A stand-in for podman on this host: its CNI conflist in /etc/cni/net.d, its bridge
/// `cni-podman0` with 10.88.0.1/16, and one "container" at 10.88.0.2 serving TCP.
struct FakePodman {
    conflist: Option<PathBuf>,
    pin: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
}

const PODMAN_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "podman",
  "plugins": [
    { "type": "bridge", "bridge": "cni-podman0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "routes": [{ "dst": "0.0.0.0/0" }],
                "ranges": [[{ "subnet": "10.88.0.0/16", "gateway": "10.88.0.1" }]] } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "firewall" },
    { "type": "tuning" }
  ]
}"#;

impl FakePodman {
    fn start() -> Self {
        let path = PathBuf::from("/etc/cni/net.d/87-podman-bridge.conflist");
        // A real podman's file stays as it is; ours is removed after.
        let conflist = (!path.exists()).then(|| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, PODMAN_CONFLIST).unwrap();
            path
        });
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("netns");
        smol::block_on(outpost::network::netns::create(&pin)).unwrap();
        let host = Rtnl::open().unwrap();
        let bridge = host.ensure_bridge("cni-podman0", Ipv4Addr::new(10, 88, 0, 1), 16).unwrap();
        let ns = std::fs::File::open(&pin).unwrap();
        host.add_veth("vethfakepodman", "eth0", ns.as_fd(), bridge).unwrap();
        Rtnl::open_in(&pin)
            .unwrap()
            .configure_pod_interface(
                "eth0",
                Ipv4Addr::new(10, 88, 0, 2),
                16,
                Ipv4Addr::new(10, 88, 0, 1),
            )
            .unwrap();
        let listener =
            in_netns(&pin, || TcpListener::bind((Ipv4Addr::new(10, 88, 0, 2), 0)).unwrap());
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"podman-container\n");
            }
        });
        Self { conflist, pin, _dir: dir, port }
    }

    /// Whether the host still reaches the podman container.
    fn reachable(&self) -> bool {
        let addr = (Ipv4Addr::new(10, 88, 0, 2), self.port).into();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return false;
        };
        let mut got = String::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let _ = s.read_to_string(&mut got);
        got == "podman-container\n"
    }
}

impl Drop for FakePodman {
    fn drop(&mut self) {
        if let Some(path) = &self.conflist {
            let _ = std::fs::remove_file(path);
        }
        if let Ok(host) = Rtnl::open() {
            let _ = host.delete_link("vethfakepodman");
            let _ = host.delete_link("cni-podman0");
        }
        let _ = outpost::network::netns::unpin(&self.pin);
    }
}

/// Routes on outpost's bridges, from /proc/net/route: (device, destination, prefix length).
fn outpost_routes() -> Vec<(String, Ipv4Addr, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let dest = Ipv4Addr::from(u32::from_be(dest));
            f[0].starts_with("outpost").then(|| (f[0].to_string(), dest, mask.count_ones()))
        })
        .collect()
}

/// The issue's failure: outpost took podman's conflist from /etc/cni/net.d and a subnet inside
/// podman's 10.88.0.0/16, and the more specific route left on `outpost0` cut the host off
/// podman's containers. Now outpost uses its own directory and a range no runtime defaults to,
/// podman's container stays reachable throughout, and no route of ours is left.
#[test]
fn podmans_conflist_and_bridge_are_left_alone() {
    let _guard = crate::support::shared();
    let podman = FakePodman::start();
    assert!(podman.reachable(), "the fake podman container does not answer");
    let agent = Agent::start();
    let port = free_port();
    let ports = format!("    ports:\n    - containerPort: 8080\n      hostPort: {port}\n");
    agent.apply("web.yaml", &web_pod("web", "outpost-pod", 8080, &ports, GRACE));
    let p = agent.wait_pod("web", T, running_with_ip);
    let ip: Ipv4Addr = pod_ip(&p).parse().unwrap();
    let podman_net: outpost::network::subnet::Subnet = "10.88.0.0/13".parse().unwrap();
    assert!(!podman_net.contains(ip), "pod {ip} is in podman's range");
    assert!(
        agent.agent_log().iter().any(|l| l.contains("no .conflist in /etc/outpost/cni/net.d")),
        "the agent did not use its own CNI directory"
    );
    assert_eq!(http_body(format!("{ip}:8080").parse().unwrap()), "outpost-pod\n");
    assert_eq!(http_body(format!("127.0.0.1:{port}").parse().unwrap()), "outpost-pod\n");
    assert!(podman.reachable(), "podman's container became unreachable beside outpost's pod");
    for (dev, dest, len) in outpost_routes() {
        let route = outpost::network::subnet::Subnet { addr: dest, len: len as u8 };
        assert!(!route.overlaps(&podman_net), "route {route} dev {dev} shadows podman's network");
    }
    let (bridge, _) = bridge_of(&agent);
    agent.delete("web.yaml");
    agent.wait_gone("web", T);
    let start = Instant::now();
    while interface_ip(&bridge).is_some() {
        assert!(start.elapsed() < T, "bridge {bridge} outlived the last pod");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(podman.reachable(), "podman's container is unreachable after outpost's pod left");
}

/// No CNI plugin exists at all, yet pods get addresses and hostPorts: the built-in network
/// runs no plugin process.
#[test]
fn the_built_in_network_runs_without_any_cni_plugin() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--cni-bin-dir", "/nonexistent/cni"]);
    let port = free_port();
    let ports = format!("    ports:\n    - containerPort: 8080\n      hostPort: {port}\n");
    agent.apply("web.yaml", &web_pod("web", "no-plugins", 8080, &ports, GRACE));
    let p = agent.wait_pod("web", T, running_with_ip);
    assert_eq!(http_body(format!("127.0.0.1:{port}").parse().unwrap()), "no-plugins\n");
    assert_eq!(http_body(format!("{}:8080", pod_ip(&p)).parse().unwrap()), "no-plugins\n");
}

/// A bridge an older outpost left in podman's range (no port, no owner) shadowed podman's
/// network for good; an agent starting removes it. One outside those ranges, or owned by
/// another agent, is not ours to remove.
#[test]
fn a_bridge_an_older_outpost_left_in_podmans_range_is_removed_at_start() {
    let _guard = crate::support::shared();
    let host = Rtnl::open().unwrap();
    host.ensure_bridge("outpostold88", Ipv4Addr::new(10, 88, 77, 1), 24).unwrap();
    host.ensure_bridge("outpostold5", Ipv4Addr::new(10, 5, 77, 1), 24).unwrap();
    let agent = Agent::start();
    let start = Instant::now();
    while interface_ip("outpostold88").is_some() {
        assert!(start.elapsed() < T, "the old bridge in podman's range was not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(interface_ip("outpostold5"), Some(Ipv4Addr::new(10, 5, 77, 1)));
    drop(agent);
    host.delete_link("outpostold5").unwrap();
}

/// CVE-2020-8558: hostPorts on 127.0.0.1 need `route_localnet` on the bridge, which lets a pod
/// send to the host's 127.0.0.1 through its gateway. A root pod that routes 127.0.0.1 via
/// the gateway (raw frames do the same with only NET_RAW) reaches the host over the bridge,
/// but not a service bound to the host's loopback.
#[test]
fn a_pod_cannot_reach_services_on_the_hosts_loopback() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("evil.yaml", &pod("evil", "sleep 3600", "", GRACE));
    let p = agent.wait_pod("evil", T, running_with_ip);
    let (_, subnet) = bridge_of(&agent);
    let gateway = subnet.gateway();
    let secret = TcpListener::bind("127.0.0.1:0").unwrap();
    let secret_port = secret.local_addr().unwrap().port();
    let open = TcpListener::bind((gateway, 0)).unwrap();
    let open_port = open.local_addr().unwrap().port();
    let g = given_for(&agent, &[p["metadata"]["uid"].as_str().unwrap().to_string()]);
    let pin = agent.state.join("cni").join("netns").join(&g[0].container_id);
    let (to_gateway, to_loopback) = in_netns(&pin, move || {
        // What a hostile root pod does in its own namespace.
        std::fs::write("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1").unwrap();
        std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1").unwrap();
        // 127.0.0.1 must not be the pod's own: its address goes, and with it the local route.
        run(Command::new("ip").args(["addr", "flush", "dev", "lo"]));
        run(Command::new("ip").args([
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
        ]));
        let try_connect = |addr: std::net::SocketAddr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let route = Command::new("ip").args(["route", "get", "127.0.0.1"]).output().unwrap();
        let route = String::from_utf8_lossy(&route.stdout).into_owned();
        assert!(route.contains("dev eth0"), "127.0.0.1 is not routed to the host: {route}");
        (
            try_connect((gateway, open_port).into()),
            try_connect((Ipv4Addr::LOCALHOST, secret_port).into()),
        )
    });
    assert_eq!(to_gateway, Ok(()), "the pod should reach the host through its gateway");
    assert!(to_loopback.is_err(), "the pod reached a service on the host's 127.0.0.1");
    secret.set_nonblocking(true).unwrap();
    assert!(secret.accept().is_err(), "the loopback service got a connection from the pod");
}

/// A network that appears after outpost chose its subnet (a VPN, in any routing table) is
/// logged once with what overlaps.
#[test]
fn a_route_that_comes_to_overlap_the_pods_subnet_is_logged() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("a.yaml", &pod("a", "sleep 3600", "", GRACE));
    agent.wait_pod("a", T, running_with_ip);
    let (bridge, subnet) = bridge_of(&agent);
    let half = format!("{}/25", subnet.addr);
    run(Command::new("ip").args(["route", "add", "blackhole", &half, "table", "4242"]));
    let expected = format!(
        "network: the pods' subnet {subnet} (bridge {bridge}) now overlaps {half} (route dev none table 4242)"
    );
    let start = Instant::now();
    while !agent.agent_log().iter().any(|l| l.contains(&expected)) {
        if start.elapsed() > T {
            let _ = Command::new("ip")
                .args(["route", "del", "blackhole", &half, "table", "4242"])
                .output();
            panic!("no log line {expected:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another change elsewhere: the same overlap is not logged again.
    run(Command::new("ip").args(["route", "add", "blackhole", "198.51.100.0/24", "table", "4242"]));
    std::thread::sleep(Duration::from_secs(3));
    run(Command::new("ip").args(["route", "del", "blackhole", "198.51.100.0/24", "table", "4242"]));
    run(Command::new("ip").args(["route", "del", "blackhole", &half, "table", "4242"]));
    let logged = agent.agent_log().iter().filter(|l| l.contains(&expected)).count();
    assert_eq!(logged, 1, "the overlap was logged {logged} times");
}
