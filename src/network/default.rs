//! The built-in network as CNI plugins (bridge with host-local IPAM and masquerading egress,
//! portmap for hostPorts, firewall), like podman's and k3s's defaults: what runs where the
//! in-process network ([`super::builtin`]) cannot (no nf_tables).

use std::net::Ipv4Addr;

use serde_json::json;

use super::cni::NetworkList;
use super::subnet::Subnet;

pub const BRIDGE: &str = "outpost0";
pub const NETWORK_NAME: &str = "outpost";

/// The host's IPv4 routes from `/proc/net/route` text (destination and mask in little-endian
/// hex), skipping the default route, which overlaps everything, and our own bridges'.
pub fn host_routes(proc_net_route: &str) -> Vec<Subnet> {
    routes(proc_net_route)
        .filter(|(dev, _)| !dev.starts_with(BRIDGE_PREFIX))
        .map(|(_, s)| s)
        .collect()
}

/// What every bridge of ours is called: `outpost0`, or `outpost` and 8 hex digits.
const BRIDGE_PREFIX: &str = "outpost";

/// The bridge for `subnet`: `outpost0`, unless `outpost0` already serves another subnet (an
/// earlier `--pod-subnet`, or another agent): then `outpost` and the subnet's address in hex
/// (`outpost0a5a0000` for 10.90.0.0/24, within the 15 bytes of an interface name). The bridge
/// plugin would otherwise refuse every pod ("already has an IP address different from"),
/// for ever.
pub fn bridge_for(subnet: Subnet, proc_net_route: &str) -> String {
    match bridge_subnet(proc_net_route) {
        Some(served) if served != subnet => {
            format!("{BRIDGE_PREFIX}{:08x}", u32::from(subnet.addr))
        }
        _ => BRIDGE.to_string(),
    }
}

/// The subnet our bridge already serves (a previous run, or another agent on this host).
pub fn bridge_subnet(proc_net_route: &str) -> Option<Subnet> {
    routes(proc_net_route).find(|(dev, _)| *dev == BRIDGE).map(|(_, s)| s)
}

fn routes(proc_net_route: &str) -> impl Iterator<Item = (&str, Subnet)> {
    proc_net_route.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
        let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
        let len = mask.count_ones() as u8;
        (len > 0).then(|| (f[0], Subnet { addr: Ipv4Addr::from(u32::from_be(dest)), len }))
    })
}

/// The built-in configuration list for `subnet`.
///
/// No `loopback` plugin: the runtime brings `lo` up in-process when it creates the sandbox's
/// namespace (containerd likewise runs loopback outside the pod's conflist), and in a chain
/// it would only cost one more exec per ADD and DEL.
pub fn network(subnet: Subnet, bridge: &str) -> NetworkList {
    let text = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string(), "gateway": subnet.gateway().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
            { "type": "firewall" },
        ],
    })
    .to_string();
    NetworkList::parse(None, &text).expect("the built-in network list is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        cni0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        outpost0\t0000590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn routes_are_read_without_the_default_route() {
        let r = host_routes(ROUTES);
        assert_eq!(r, vec!["192.0.2.0/24".parse().unwrap(), "10.88.0.0/16".parse().unwrap()]);
    }

    #[test]
    fn an_existing_bridge_keeps_its_subnet() {
        assert_eq!(bridge_subnet(ROUTES), Some("10.89.0.0/24".parse().unwrap()));
        assert_eq!(bridge_subnet(""), None);
    }

    #[test]
    fn built_in_network_chains_bridge_portmap_firewall() {
        let n = network("10.88.3.0/24".parse().unwrap(), BRIDGE);
        let types: Vec<&str> = n.plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["bridge", "portmap", "firewall"]);
        assert_eq!(n.plugins[0]["ipam"]["ranges"][0][0]["gateway"], "10.88.3.1");
        assert_eq!(n.source, None);
        assert_eq!(n.plugins[0]["bridge"], "outpost0");
    }

    /// An `outpost0` left with another address blocked every networked pod for ever; the new
    /// subnet gets a bridge of its own, and our bridges' routes are never host routes.
    #[test]
    fn a_subnet_other_than_outpost0s_gets_its_own_bridge() {
        let served: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(bridge_for(served, ROUTES), "outpost0");
        assert_eq!(bridge_for("10.90.0.0/24".parse().unwrap(), ROUTES), "outpost0a5a0000");
        assert_eq!(bridge_for("10.90.0.0/24".parse().unwrap(), ""), "outpost0");
        let both = format!(
            "{ROUTES}outpost0a5a0000\t00005A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(host_routes(&both), host_routes(ROUTES));
        assert!("outpost0a5a0000".len() <= 15, "an interface name has at most 15 bytes");
    }
}
