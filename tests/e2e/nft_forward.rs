//! outpost's accept rules in iptables-nft's `ip filter FORWARD` (`nft::allow_forwarding`), in
//! scratch network namespaces: the real `iptables` (tests only) must still parse the table and
//! print them as its own, and pod traffic must pass a FORWARD DROP policy with them.

use std::net::TcpListener;

use outpost::network::nft;
use outpost::network::subnet::Subnet;

use crate::nft::{fetch, run, serve, write, Ns};

const BRIDGE: &str = "outpost0";

fn subnet() -> Subnet {
    "10.123.45.0/24".parse().unwrap()
}

/// The FORWARD chain as `iptables -S` prints it; fails if iptables finds the table incompatible.
fn forward() -> Vec<String> {
    run("iptables", &["-S", "FORWARD"]).lines().map(String::from).collect()
}

const OURS: [&str; 2] = [
    "-A FORWARD -s 10.123.45.0/24 -m comment --comment \"outpost:outpost0\" -j ACCEPT",
    "-A FORWARD -d 10.123.45.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"outpost:outpost0\" -j ACCEPT",
];

#[test]
fn forwarding_rules_read_back_as_iptables_prints_them() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        run("iptables", &["-P", "FORWARD", "DROP"]);
        run("iptables", &["-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT"]);
        assert!(nft::allow_forwarding(subnet(), BRIDGE).unwrap());
        let operators = "-A FORWARD -i eth9 -j ACCEPT";
        assert_eq!(forward(), ["-P FORWARD DROP", OURS[0], OURS[1], operators]);
        let saved = run("iptables-save", &[]);
        assert!(saved.contains(OURS[1]), "{saved}");

        assert!(!nft::allow_forwarding(subnet(), BRIDGE).unwrap(), "already there");
        assert_eq!(forward().len(), 4, "no duplicates");
        // Another agent's bridge has rules of its own.
        assert!(nft::allow_forwarding("10.123.46.0/24".parse().unwrap(), "other").unwrap());
        assert_eq!(forward().len(), 6);
        assert_eq!(nft::remove_forwarding("other").unwrap(), 2);

        // A new subnet replaces the old rules.
        assert!(nft::allow_forwarding("10.123.44.0/22".parse().unwrap(), BRIDGE).unwrap());
        let rules = forward();
        assert_eq!(rules.len(), 4, "{rules:?}");
        assert!(rules[1].starts_with("-A FORWARD -s 10.123.44.0/22 -m comment"), "{rules:?}");

        assert_eq!(nft::remove_forwarding(BRIDGE).unwrap(), 2);
        assert_eq!(forward(), ["-P FORWARD DROP", operators]);
        assert_eq!(nft::remove_forwarding(BRIDGE).unwrap(), 0, "already gone");
    });
}

/// Rules that iptables itself wrote are recognised as ours: the encodings are the same.
#[test]
fn rules_written_by_iptables_count_as_present() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        run("iptables", &["-P", "FORWARD", "DROP"]);
        for rule in OURS.iter().rev() {
            let args: Vec<String> = shell_words(rule.replacen("-A", "-I", 1).as_str());
            run("iptables", &args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        assert_eq!(forward()[1..], OURS);
        assert!(!nft::allow_forwarding(subnet(), BRIDGE).unwrap());
        assert_eq!(forward()[1..], OURS);
        assert_eq!(nft::remove_forwarding(BRIDGE).unwrap(), 2);
    });
}

/// Splits on spaces, keeping a quoted word whole (enough for OURS).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    for (i, part) in s.split('"').enumerate() {
        if i % 2 == 1 {
            words.push(part.to_string());
        } else {
            words.extend(part.split_whitespace().map(String::from));
        }
    }
    words
}

#[test]
fn without_a_dropping_forward_policy_nothing_is_added() {
    let _guard = crate::support::shared();
    Ns::new().run(|| {
        assert!(!nft::allow_forwarding(subnet(), BRIDGE).unwrap(), "no ip filter table");
        assert_eq!(nft::remove_forwarding(BRIDGE).unwrap(), 0);
        run("iptables", &["-P", "FORWARD", "ACCEPT"]);
        assert!(!nft::allow_forwarding(subnet(), BRIDGE).unwrap());
        assert_eq!(forward(), ["-P FORWARD ACCEPT"]);
        assert!(nft::allow_forwarding(subnet(), "").is_err(), "no bridge name");
    });
}

/// A pod namespace and an outside namespace routed through a host namespace whose FORWARD
/// policy drops: the pod reaches the outside (and gets its answers) only with the rules, and
/// the outside still cannot open connections to the pod.
#[test]
fn pod_traffic_passes_a_forward_drop_policy() {
    let _guard = crate::support::shared();
    let (host, pod, outside) = (Ns::new(), Ns::new(), Ns::new());
    host.run(|| {
        for (veth, peer, addr) in
            [("vp", pod.path(), "10.123.45.1/24"), ("vo", outside.path(), "10.99.0.1/24")]
        {
            run(
                "ip",
                &["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &peer],
            );
            run("ip", &["addr", "add", addr, "dev", veth]);
            run("ip", &["link", "set", veth, "up"]);
        }
        write("/proc/sys/net/ipv4/ip_forward", "1");
    });
    for (ns, addr, gw, to) in [
        (&pod, "10.123.45.2/24", "10.123.45.1", "default"),
        (&outside, "10.99.0.2/24", "10.99.0.1", "10.123.45.0/24"),
    ] {
        ns.run(|| {
            run("ip", &["addr", "add", addr, "dev", "eth0"]);
            run("ip", &["link", "set", "eth0", "up"]);
            run("ip", &["route", "add", to, "via", gw]);
        });
    }
    outside.run(|| serve(TcpListener::bind("10.99.0.2:80").unwrap(), "outside"));
    pod.run(|| serve(TcpListener::bind("10.123.45.2:80").unwrap(), "pod"));
    pod.run(|| assert_eq!(fetch("10.99.0.2:80").unwrap(), "outside", "policy accept"));

    host.run(|| run("iptables", &["-P", "FORWARD", "DROP"]));
    pod.run(|| assert!(fetch("10.99.0.2:80").is_err(), "FORWARD DROP without our rules"));
    host.run(|| assert!(nft::allow_forwarding(subnet(), BRIDGE).unwrap()));
    pod.run(|| assert_eq!(fetch("10.99.0.2:80").unwrap(), "outside", "with our rules"));
    outside.run(|| assert!(fetch("10.123.45.2:80").is_err(), "only replies reach the pod"));
    host.run(|| assert_eq!(nft::remove_forwarding(BRIDGE).unwrap(), 2));
    pod.run(|| assert!(fetch("10.99.0.2:80").is_err(), "the rules are gone"));
}
