//! outpost's nftables table (`network::nft`, raw netlink) in scratch network namespaces,
//! read back with the real `nft` tool (package nftables; tests only, outpost never runs it),
//! and tried with real connections over a veth pair.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use nix::sched::CloneFlags;
use outpost::network::nft::{self, HostPort, Proto, Table};
use outpost::network::subnet::Subnet;

/// The table the tests write (in their scratch namespaces).
fn table() -> Table {
    Table("outpost".into())
}

const SUBNET: &str = "10.123.45.0/24";

fn subnet() -> Subnet {
    SUBNET.parse().unwrap()
}

/// A network namespace of the test's own, held by a descriptor.
pub(crate) struct Ns(File);

impl Ns {
    pub(crate) fn new() -> Ns {
        let f = std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            File::open("/proc/thread-self/ns/net").expect("open the new netns")
        });
        Ns(f.join().unwrap())
    }

    /// Runs `f` on a thread in this namespace (sockets it opens, and commands it runs, stay in it).
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&self.0, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// A path `ip … netns` opens.
    pub(crate) fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.0.as_raw_fd())
    }
}

/// Runs a command in the calling thread's namespace; its stdout, or a panic with its stderr.
pub(crate) fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd}: {e}: install nftables and iproute2 (tests/prereqs.sh does; tests only)")
    });
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed() -> String {
    run("nft", &["list", "table", "ip", "outpost"])
}

fn hp(id: &str, port: u16, protocol: Proto) -> HostPort {
    HostPort {
        id: id.into(),
        host_ip: None,
        host_port: port,
        protocol,
        pod_ip: Ipv4Addr::new(10, 123, 45, 2),
        container_port: 80,
    }
}

fn hostport_lines(listing: &str) -> Vec<String> {
    listing.lines().map(str::trim).filter(|l| l.contains("dnat to")).map(String::from).collect()
}

#[test]
fn the_table_reads_back_as_nft_prints_it() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        let mut dns = hp("pod-b", 53, Proto::Udp);
        dns.host_ip = Some(Ipv4Addr::new(192, 0, 2, 1));
        table().install(subnet(), &[hp("pod-a", 8080, Proto::Tcp), dns]).unwrap();
        let t = listed();
        for line in [
            "type nat hook postrouting priority srcnat; policy accept;",
            "ip saddr 10.123.45.0/24 ip daddr != 10.123.45.0/24 ip daddr != 224.0.0.0/4 masquerade",
            "ip saddr 127.0.0.0/8 ip daddr 10.123.45.0/24 masquerade",
            "ip saddr 10.123.45.0/24 ip daddr 10.123.45.0/24 ct status dnat masquerade",
            "type nat hook prerouting priority dstnat; policy accept;",
            "fib daddr type local jump hostports",
            "type filter hook input priority filter; policy accept;",
            "ip saddr != 127.0.0.0/8 ip daddr 127.0.0.0/8 ct state ! established,related ct status ! dnat drop",
            "ip saddr != 127.0.0.0/8 ip daddr 127.0.0.0/8 ct state invalid drop",
            "tcp dport 8080 dnat to 10.123.45.2:80 comment \"pod-a\"",
            "ip daddr 192.0.2.1 udp dport 53 dnat to 10.123.45.2:80 comment \"pod-b\"",
        ] {
            assert!(t.contains(line), "missing {line:?} in:\n{t}");
        }
        // nft 1.0.6 prints dstnat only for prerouting.
        assert!(
            ["hook output priority -100;", "hook output priority dstnat;"]
                .iter()
                .any(|l| t.contains(l)),
            "{t}"
        );
        assert_eq!(t.matches("fib daddr type local jump hostports").count(), 2, "{t}");
        assert!(!t.contains("owner"), "the table must outlive the agent's socket:\n{t}");
    });
}

#[test]
fn hostports_are_added_listed_and_removed_by_id() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        table().install(subnet(), &[]).unwrap();
        assert_eq!(table().list_hostport_ids().unwrap(), Vec::<String>::new());
        table().add_hostports(&[hp("a", 8080, Proto::Tcp), hp("a", 8081, Proto::Sctp)]).unwrap();
        table().add_hostports(&[hp("b", 9090, Proto::Tcp)]).unwrap();
        assert_eq!(table().list_hostport_ids().unwrap(), ["a", "b"]);
        assert_eq!(hostport_lines(&listed()).len(), 3);

        assert_eq!(table().remove_hostports("a").unwrap(), 2);
        assert_eq!(
            hostport_lines(&listed()),
            ["tcp dport 9090 dnat to 10.123.45.2:80 comment \"b\""]
        );
        assert_eq!(table().list_hostport_ids().unwrap(), ["b"]);
        assert_eq!(table().remove_hostports("a").unwrap(), 0, "already gone");
    });
}

#[test]
fn install_replaces_the_table_keeping_the_hostports_passed() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        table().install(subnet(), &[hp("kept", 8080, Proto::Tcp)]).unwrap();
        table().add_hostports(&[hp("gone", 9090, Proto::Tcp)]).unwrap();
        // An agent restart: the running pods' hostPorts are passed again.
        table().install(subnet(), &[hp("kept", 8080, Proto::Tcp)]).unwrap();
        let t = listed();
        assert_eq!(hostport_lines(&t), ["tcp dport 8080 dnat to 10.123.45.2:80 comment \"kept\""]);
        assert_eq!(t.matches("masquerade").count(), 3, "rules not doubled:\n{t}");
        assert_eq!(t.matches("drop").count(), 2, "rules not doubled:\n{t}");
        assert_eq!(table().list_hostport_ids().unwrap(), ["kept"]);

        table().remove().unwrap();
        let out = Command::new("nft").args(["list", "table", "ip", "outpost"]).output().unwrap();
        assert!(!out.status.success(), "the table is gone");
    });
}

#[test]
fn without_the_table_removals_succeed_and_additions_fail() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        table().remove().unwrap();
        assert_eq!(table().remove_hostports("a").unwrap(), 0);
        assert_eq!(table().list_hostport_ids().unwrap(), Vec::<String>::new());
        let e = table().add_hostports(&[hp("a", 8080, Proto::Tcp)]).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        assert!(e.to_string().contains("add rule to chain hostports"), "{e}");

        table().install(subnet(), &[]).unwrap();
        let e = table().add_hostports(&[hp("", 8080, Proto::Tcp)]).unwrap_err();
        assert!(e.to_string().contains("hostPort id"), "{e}");
        // A bad id fails the call before anything is sent.
        let mut bad = hp("b", 8081, Proto::Tcp);
        bad.id = "x".repeat(128);
        assert!(table().add_hostports(&[hp("a", 8080, Proto::Tcp), bad]).is_err());
        assert_eq!(table().list_hostport_ids().unwrap(), Vec::<String>::new());
    });
}

#[test]
fn a_forward_policy_drop_is_read_from_iptables_nft() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        assert!(!nft::forward_policy_drops().unwrap(), "no ip filter table");
        run("nft", &["add table ip filter"]);
        run(
            "nft",
            &["add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"],
        );
        assert!(nft::forward_policy_drops().unwrap());
        run("nft", &["chain ip filter FORWARD { policy accept; }"]);
        assert!(!nft::forward_policy_drops().unwrap());
    });
}

/// Serves `reply` to every connection on `l`, on a thread of its own.
pub(crate) fn serve(l: TcpListener, reply: &'static str) {
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

/// What the server at `addr` says, or the error. The timeout outlasts the first SYN's
/// retransmission (1 s): a veth that just came up drops packets until the kernel's link
/// watch activates it, up to a second later.
pub(crate) fn fetch(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

pub(crate) fn write(path: &str, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// A host namespace and a pod namespace joined by a veth pair, as the bridge would: the
/// hostPort works from the host on 127.0.0.1 and its own address, and from the pod (hairpin);
/// the pod cannot reach the host's 127.0.0.1 services once the table is in.
#[test]
fn hostports_and_the_localnet_guard_on_real_connections() {
    let _guard = crate::support::shared();
    let (host, pod) = (Ns::new(), Ns::new());
    host.run(|| {
        link_host_to_pod(&pod);
        write("/proc/sys/net/ipv4/conf/vh/route_localnet", "1");
        serve(TcpListener::bind("127.0.0.1:9999").unwrap(), "host");
    });
    pod.run(|| {
        run("ip", &["addr", "add", "10.123.45.2/24", "dev", "eth0"]);
        run("ip", &["link", "set", "eth0", "up"]);
        // What a pod with NET_ADMIN can do: send to 127.0.0.1 through the gateway.
        write("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1");
        run("ip", &["route", "add", "127.0.0.1/32", "via", "10.123.45.1", "dev", "eth0"]);
        serve(TcpListener::bind("10.123.45.2:80").unwrap(), "pod");
        assert_eq!(fetch("127.0.0.1:9999").unwrap(), "host", "without the table, it gets through");
    });

    host.run(|| table().install(subnet(), &[hp("p", 8080, Proto::Tcp)]).unwrap());
    pod.run(|| {
        let got = fetch("127.0.0.1:9999");
        assert!(got.is_err(), "the pod reached the host's 127.0.0.1:9999: {got:?}");
        // Back to a plain pod, whose 127.0.0.1 is its own: answers to a connection from the
        // host's 127.0.0.1 arrive only if they were masqueraded.
        run("ip", &["route", "del", "127.0.0.1/32"]);
        run("ip", &["link", "set", "lo", "up"]);
        assert_eq!(fetch("10.123.45.1:8080").unwrap(), "pod", "hairpin hostPort");
    });
    host.run(|| {
        assert_eq!(fetch("127.0.0.1:8080").unwrap(), "pod");
        assert_eq!(fetch("10.123.45.1:8080").unwrap(), "pod");
        assert_eq!(table().remove_hostports("p").unwrap(), 1);
        assert!(fetch("127.0.0.1:8080").is_err(), "the hostPort is gone");
    });
}

/// More rules than the socket's default buffers hold (about 600 fit a 212 KiB send buffer):
/// still one batch, one ack, and a dump over several reads.
#[test]
fn a_thousand_hostports_go_in_one_batch() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        let ports: Vec<HostPort> =
            (0..1000).map(|i| hp(&format!("pod-{i:04}"), 10000 + i, Proto::Tcp)).collect();
        table().install(subnet(), &ports).unwrap();
        let ids = table().list_hostport_ids().unwrap();
        assert_eq!(ids.len(), 1000);
        assert_eq!((ids[0].as_str(), ids[999].as_str()), ("pod-0000", "pod-0999"));
        assert_eq!(table().remove_hostports("pod-0500").unwrap(), 1);
        assert_eq!(hostport_lines(&listed()).len(), 999);

        // Every message refused: the first refusal is the error.
        table().remove().unwrap();
        let e = table().add_hostports(&ports).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    });
}

/// A dump cut by a concurrent change (rules shifting under it) is taken again: listing never
/// misses a rule that stayed.
#[test]
fn listing_while_rules_change_misses_none() {
    let _guard = crate::support::shared();
    let ns = Ns::new();
    let ports: Vec<HostPort> =
        (0..1000).map(|i| hp(&format!("pod-{i:04}"), 10000 + i, Proto::Tcp)).collect();
    ns.run(|| table().install(subnet(), &ports).unwrap());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // The first rule moves to the end, over and over (every other one shifts), about as
        // often as a dump of 1000 rules takes.
        s.spawn(|| {
            ns.run(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    table().remove_hostports("pod-0000").unwrap();
                    table().add_hostports(&ports[..1]).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        });
        // Fails only after the churn stopped, so a failure cannot hang the test.
        let worst = ns.run(|| {
            (0..100).try_fold(0, |worst, _| {
                let ids = table().list_hostport_ids()?;
                let missing = ports[1..].iter().filter(|p| ids.binary_search(&p.id).is_err());
                Ok::<_, nft::NftError>(worst.max(missing.count()))
            })
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(worst.unwrap(), 0, "rules missed by a listing");
    });
}

/// On a thread in the "host" namespace: `lo` up, a veth `vh` with 10.123.45.1/24 whose peer
/// `eth0` is in `pod`, forwarding on.
pub(crate) fn link_host_to_pod(pod: &Ns) {
    run("ip", &["link", "set", "lo", "up"]);
    run("ip", &["link", "add", "vh", "type", "veth", "peer", "name", "eth0", "netns", &pod.path()]);
    run("ip", &["addr", "add", "10.123.45.1/24", "dev", "vh"]);
    run("ip", &["link", "set", "vh", "up"]);
    write("/proc/sys/net/ipv4/ip_forward", "1");
}
