//! Root tests, each in network namespaces of its own (never the host's links).

use super::conn::ext_ack_text;
use super::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

const GW: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const POD: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn subnet(s: &str) -> Subnet {
    let (addr, len) = s.split_once('/').unwrap();
    Subnet { addr: addr.parse().unwrap(), len: len.parse().unwrap() }
}

/// A new, empty network namespace (its thread exits; the file keeps it).
fn new_netns() -> File {
    assert!(nix::unistd::Uid::effective().is_root(), "this test needs root (network namespaces)");
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap()
}

/// Runs `f` on a thread inside `ns`.
fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// `ns`'s view of `/sys`: sysfs shows the namespace of whoever mounted it, so a thread in a
/// private mount namespace mounts its own.
fn in_sysfs_of<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    in_netns(ns, || {
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
        mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), none).unwrap();
        f()
    })
}

/// A "host" namespace with bridge `obr0` (GW/24) and a pod namespace joined to it by veth
/// `oveth0`, whose peer `eth0` has POD/24 and the default route via GW.
struct Pod {
    host_ns: File,
    pod_ns: File,
    host: Rtnl,
    pod: Rtnl,
    bridge: u32,
}

fn pod_on_a_bridge() -> Pod {
    let host_ns = new_netns();
    let pod_ns = new_netns();
    let host = in_netns(&host_ns, Rtnl::open).unwrap();
    let bridge = host.ensure_bridge("obr0", GW, 24).unwrap();
    host.add_veth("oveth0", "eth0", pod_ns.as_fd(), bridge).unwrap();
    let pod = Rtnl::open_in(Path::new(&format!("/proc/self/fd/{}", pod_ns.as_raw_fd()))).unwrap();
    pod.configure_pod_interface("eth0", POD, 24, GW).unwrap();
    Pod { host_ns, pod_ns, host, pod, bridge }
}

#[test]
fn the_peer_is_made_in_the_pod_namespace_with_its_address_and_default_route() {
    let p = pod_on_a_bridge();
    // Idempotent, as a retried ADD needs.
    p.pod.configure_pod_interface("eth0", POD, 24, GW).unwrap();

    let host_links = p.host.link_names().unwrap();
    assert!(host_links.contains(&"obr0".into()), "{host_links:?}");
    assert!(host_links.contains(&"oveth0".into()), "{host_links:?}");
    assert!(!host_links.contains(&"eth0".into()), "{host_links:?}");
    let pod_links = p.pod.link_names().unwrap();
    assert!(pod_links.contains(&"eth0".into()), "{pod_links:?}");
    assert!(!pod_links.contains(&"oveth0".into()), "{pod_links:?}");

    let addrs = p.pod.addresses().unwrap();
    let eth0: Vec<_> = addrs.iter().filter(|a| a.device == "eth0").collect();
    assert_eq!(eth0.len(), 1, "{addrs:?}");
    assert_eq!((eth0[0].address, eth0[0].prefix_len), (POD, 24));
    let routes = p.pod.routes().unwrap();
    let default = HostRoute {
        dst: subnet("0.0.0.0/0"),
        gateway: Some(GW),
        device: Some("eth0".into()),
        table: MAIN,
    };
    assert!(routes.contains(&default), "{routes:?}");

    // The same, seen without this module: the kernel's route table text and glibc's
    // getifaddrs, from a thread inside the pod's namespace.
    let (route_text, ifaddrs) = in_netns(&p.pod_ns, || {
        let text = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
        let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter(|i| i.interface_name == "eth0")
            .filter_map(|i| {
                let a = i.address?.as_sockaddr_in()?.ip();
                let m = i.netmask?.as_sockaddr_in()?.ip();
                Some((a, m, i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)))
            })
            .collect();
        (text, addrs)
    });
    // Default destination and mask 0, gateway 10.250.0.1 in little-endian hex, flags UG.
    let line = route_text.lines().find(|l| l.starts_with("eth0\t00000000\t"));
    let f: Vec<&str> = line.expect(&route_text).split_whitespace().collect();
    assert_eq!((f[2], f[3], f[7]), ("0100FA0A", "0003", "00000000"), "{route_text}");
    assert_eq!(ifaddrs, vec![(POD, Ipv4Addr::new(255, 255, 255, 0), true)]);
}

#[test]
fn the_host_end_is_a_hairpin_port_of_the_bridge() {
    let p = pod_on_a_bridge();
    let (master, hairpin, up) = in_sysfs_of(&p.host_ns, || {
        let master = std::fs::read_link("/sys/class/net/oveth0/master").unwrap();
        let hairpin = std::fs::read_to_string("/sys/class/net/oveth0/brport/hairpin_mode");
        let flags = std::fs::read_to_string("/sys/class/net/oveth0/flags").unwrap();
        (master, hairpin.unwrap(), flags)
    });
    assert_eq!(master.file_name().unwrap(), "obr0");
    assert_eq!(hairpin.trim(), "1");
    let flags = u32::from_str_radix(up.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & libc::IFF_UP as u32, libc::IFF_UP as u32, "flags {up}");
}

/// TCP from the pod to a listener on the gateway (on-link), and to one behind it (through the
/// default route).
#[test]
fn the_pod_reaches_the_gateway_and_beyond_it() {
    let p = pod_on_a_bridge();
    let beyond = Ipv4Addr::new(10, 251, 0, 1);
    p.host.add_address(p.bridge, "obr0", beyond, 32).unwrap();
    for ip in [GW, beyond] {
        let listener = in_netns(&p.host_ns, || TcpListener::bind((ip, 0)).unwrap());
        let addr = listener.local_addr().unwrap();
        let client = in_netns(&p.pod_ns, || {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connecting to {addr} from the pod: {e}"));
            c.write_all(b"x").unwrap();
            c
        });
        let (mut conn, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(POD));
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        drop(client);
    }
}

#[test]
fn deleting_the_veth_removes_both_ends_and_a_second_delete_finds_nothing() {
    let p = pod_on_a_bridge();
    assert!(p.host.delete_link("oveth0").unwrap());
    assert!(!p.host.delete_link("oveth0").unwrap());
    assert!(!p.host.link_names().unwrap().contains(&"oveth0".into()));
    assert!(!p.pod.link_names().unwrap().contains(&"eth0".into()));
}

#[test]
fn ensure_bridge_is_idempotent_and_refuses_another_address_or_a_non_bridge() {
    let ns = new_netns();
    let h = in_netns(&ns, Rtnl::open).unwrap();
    let index = h.ensure_bridge("obr0", GW, 24).unwrap();
    assert_eq!(h.ensure_bridge("obr0", GW, 24).unwrap(), index);
    let ours: Vec<_> = h.addresses().unwrap().into_iter().filter(|a| a.index == index).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");

    let other = h.ensure_bridge("obr0", Ipv4Addr::new(10, 250, 1, 1), 24).unwrap_err();
    assert!(matches!(&other, RtnlError::BridgeAddress { found, .. } if found == "10.250.0.1/24"));
    assert_eq!(
        other.to_string(),
        "bridge obr0 has the address 10.250.0.1/24, not 10.250.1.1/24: another network uses it; \
         delete it or choose another subnet"
    );
    // The same address with another prefix is another subnet too.
    assert!(matches!(h.ensure_bridge("obr0", GW, 16), Err(RtnlError::BridgeAddress { .. })));

    // A bridge someone set down comes back up.
    let bare = h.ensure_bridge("obr1", Ipv4Addr::new(10, 250, 2, 1), 24).unwrap();
    let mut down = LinkMessage::default();
    down.header.index = bare;
    down.header.change_mask = LinkFlags::Up;
    h.ack(String::new, RouteNetlinkMessage::SetLink(down), 0).unwrap();
    assert_eq!(h.ensure_bridge("obr1", Ipv4Addr::new(10, 250, 2, 1), 24).unwrap(), bare);
    assert!(h.link("obr1").unwrap().header.flags.contains(LinkFlags::Up));

    let lo = h.ensure_bridge("lo", GW, 24).unwrap_err();
    assert_eq!(lo.to_string(), "link lo exists and is not a bridge (kind none)");
}

#[test]
fn routes_cover_every_table_but_broadcast_entries() {
    let ns = new_netns();
    let h = in_netns(&ns, Rtnl::open).unwrap();
    let br = h.ensure_bridge("obr0", GW, 24).unwrap();
    h.add_route(subnet("10.252.0.0/16"), None, br, 100).unwrap();
    // wg-quick's table: past 255, only in RTA_TABLE.
    h.add_route(subnet("10.253.0.0/16"), Some(Ipv4Addr::new(10, 250, 0, 9)), br, 51820).unwrap();
    let routes = h.routes().unwrap();
    let has = |dst: &str, gateway, table| {
        let want = HostRoute { dst: subnet(dst), gateway, device: Some("obr0".into()), table };
        assert!(routes.contains(&want), "{want:?} not in {routes:?}");
    };
    has("10.252.0.0/16", None, 100);
    has("10.253.0.0/16", Some(Ipv4Addr::new(10, 250, 0, 9)), 51820);
    has("10.250.0.0/24", None, MAIN);
    // The local table's entry for the address stays, its broadcast entry does not.
    has("10.250.0.1/32", None, 255);
    assert!(!routes.iter().any(|r| r.dst == subnet("10.250.0.255/32")), "{routes:?}");
    assert!(routes.iter().all(|r| r.dst.len > 0), "no default route here: {routes:?}");
}

/// 2000 routes take several datagrams (the kernel fills at most 32 KiB each).
#[test]
fn a_dump_of_many_datagrams_is_read_whole() {
    let ns = new_netns();
    let h = in_netns(&ns, Rtnl::open).unwrap();
    let br = h.ensure_bridge("obr0", GW, 24).unwrap();
    for i in 0..2000u32 {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + (i << 8));
        h.add_route(Subnet { addr, len: 24 }, None, br, 100).unwrap();
    }
    let routes = h.routes().unwrap();
    assert_eq!(routes.iter().filter(|r| r.table == 100).count(), 2000);
}

/// A reply to an earlier request still queued (one abandoned on an error) is not taken for
/// the next request's.
#[test]
fn replies_to_an_earlier_request_are_skipped() {
    let ns = new_netns();
    let h = in_netns(&ns, Rtnl::open).unwrap();
    h.ensure_bridge("obr0", GW, 24).unwrap();
    let mut lo = LinkMessage::default();
    lo.attributes.push(LinkAttribute::IfName("lo".into()));
    h.conn.lock().unwrap().send(RouteNetlinkMessage::GetLink(lo), 0).unwrap();
    let mut names = h.link_names().unwrap();
    names.sort();
    assert_eq!(names, ["lo", "obr0"]);
}

#[test]
fn kernel_errors_name_the_operation_the_errno_and_the_kernel_reason() {
    let ns = new_netns();
    let h = in_netns(&ns, Rtnl::open).unwrap();
    let br = h.ensure_bridge("obr0", GW, 24).unwrap();
    let e = h.add_route(subnet("0.0.0.0/0"), Some(Ipv4Addr::new(10, 9, 9, 9)), br, MAIN);
    let e = e.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENETUNREACH));
    assert_eq!(
        e.to_string(),
        "adding route 0.0.0.0/0 via 10.9.9.9 (table 254): ENETUNREACH: Network is unreachable \
         (Nexthop has invalid gateway)"
    );
    let e = h.configure_pod_interface("nope0", POD, 24, GW).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENODEV));
    assert!(e.to_string().starts_with("looking up link nope0: ENODEV"), "{e}");
}

/// Without `NETLINK_CAP_ACK`, the whole request is echoed before the attributes.
#[test]
fn the_kernel_reason_is_found_after_an_uncapped_echo() {
    let mut payload = vec![0u8; 20];
    payload[..4].copy_from_slice(&20u32.to_ne_bytes());
    payload.extend_from_slice(&9u16.to_ne_bytes());
    payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
    payload.extend_from_slice(b"boom\0\0\0\0");
    assert_eq!(ext_ack_text(NLM_F_ACK_TLVS, &payload), Some("boom".into()));
    assert_eq!(ext_ack_text(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload[4..]), Some("boom".into()));
    assert_eq!(ext_ack_text(0, &payload), None);
}
