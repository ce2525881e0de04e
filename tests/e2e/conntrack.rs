//! Deleting the conntrack entries of UDP flows to a hostPort (`network::nft::conntrack`, raw
//! ctnetlink) in scratch network namespaces: read back with our own dump and the kernel's
//! `/proc/thread-self/net/nf_conntrack`, and tried with a UDP client that keeps sending.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use outpost::network::nft::conntrack::{self, UdpFlow};
use outpost::network::nft::{HostPort, Proto, Table};

use crate::nft::{link_host_to_pod, run, Ns};

/// Conntrack tracks a namespace's packets once a rule set there needs it (our table's nat
/// chains do).
fn install_table() -> Table {
    let t = Table("outpost".into());
    t.install("10.123.45.0/24".parse().unwrap(), &[]).unwrap();
    t
}

fn to_port(flows: &[UdpFlow], port: u16) -> Vec<UdpFlow> {
    flows.iter().filter(|f| f.dst.port() == port).copied().collect()
}

/// The kernel's own listing (CONFIG_NF_CONNTRACK_PROCFS) of the calling thread's namespace:
/// its udp lines.
fn proc_udp_lines() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack")
        .expect("/proc/thread-self/net/nf_conntrack (CONFIG_NF_CONNTRACK_PROCFS)");
    text.lines().filter(|l| l.contains(" udp ")).map(String::from).collect()
}

#[test]
fn udp_entries_to_one_port_are_deleted_and_the_others_kept() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        run("ip", &["link", "set", "lo", "up"]);
        install_table();
        let (p1, p2) = (5514, 5353);
        let servers: Vec<UdpSocket> =
            [p1, p2].iter().map(|p| UdpSocket::bind(("127.0.0.1", *p)).unwrap()).collect();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (s, p) in servers.iter().zip([p1, p2]) {
            client.send_to(b"x", ("127.0.0.1", p)).unwrap();
            s.recv(&mut [0; 8]).unwrap();
        }
        let flows = conntrack::udp_flows().unwrap();
        let src = client.local_addr().unwrap();
        for p in [p1, p2] {
            let want = UdpFlow {
                src: src.to_string().parse().unwrap(),
                dst: SocketAddrV4::new(Ipv4Addr::LOCALHOST, p),
            };
            assert_eq!(to_port(&flows, p), [want], "{flows:?}");
        }
        let dport = |p: u16| format!("dport={p} ");
        let lines = proc_udp_lines();
        assert!(lines.iter().any(|l| l.contains(&dport(p1))), "{lines:#?}");

        assert_eq!(conntrack::delete_udp_to_port(p1).unwrap(), 1);
        let flows = conntrack::udp_flows().unwrap();
        assert_eq!(to_port(&flows, p1), [], "{flows:?}");
        assert_eq!(to_port(&flows, p2).len(), 1, "{flows:?}");
        let lines = proc_udp_lines();
        assert!(!lines.iter().any(|l| l.contains(&dport(p1))), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains(&dport(p2))), "{lines:#?}");

        assert_eq!(conntrack::delete_udp_to_port(p1).unwrap(), 0, "nothing left to delete");
        assert_eq!(conntrack::delete_udp_to_port(9).unwrap(), 0, "no flow to that port");
    });
}

/// The bug portmap's flush fixes: a client that kept sending to the host's port before the
/// hostPort's rule existed still reaches the host after the rule is added, until its entry
/// goes; then its next datagram reaches the pod.
#[test]
fn a_udp_client_reaches_the_pod_once_its_stale_entry_is_deleted() {
    let _guard = crate::support::shared();
    let (host, pod) = (Ns::new(), Ns::new());
    let (host_port, pod_port) = (5514, 514);
    let (host_side, client) = host.run(|| {
        link_host_to_pod(&pod);
        install_table();
        let host_side = UdpSocket::bind(("10.123.45.1", host_port)).unwrap();
        (host_side, UdpSocket::bind("10.123.45.1:0").unwrap())
    });
    let in_pod = pod.run(|| {
        run("ip", &["addr", "add", "10.123.45.2/24", "dev", "eth0"]);
        run("ip", &["link", "set", "eth0", "up"]);
        UdpSocket::bind(("10.123.45.2", pod_port)).unwrap()
    });
    for s in [&host_side, &in_pod] {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    let send = |what: &[u8]| client.send_to(what, ("10.123.45.1", host_port)).unwrap();
    let received = |s: &UdpSocket| {
        let mut buf = [0; 16];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    };

    send(b"before");
    assert_eq!(received(&host_side).as_deref(), Some(&b"before"[..]));
    let hp = HostPort {
        id: "p".into(),
        host_ip: None,
        host_port,
        protocol: Proto::Udp,
        pod_ip: Ipv4Addr::new(10, 123, 45, 2),
        container_port: pod_port,
    };
    host.run(|| Table("outpost".into()).add_hostports(&[hp]).unwrap());
    send(b"stale");
    assert_eq!(received(&host_side).as_deref(), Some(&b"stale"[..]), "the entry bypasses DNAT");

    assert_eq!(host.run(|| conntrack::delete_udp_to_port(host_port)).unwrap(), 1);
    // A veth that just came up drops packets until the kernel's link watch activates it (up
    // to a second): UDP is not retransmitted, so the client sends again, as a real one does.
    let mut got = None;
    for _ in 0..15 {
        send(b"after");
        got = received(&in_pod);
        if got.is_some() {
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(&b"after"[..]), "the pod never got the datagram");
    assert_eq!(received(&host_side), None, "still reaching the host's port");
}
