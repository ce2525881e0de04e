//! The built-in network's subnet: an IPv4 prefix clear of every other network on the host.
//!
//! Other runtimes take addresses from well-known defaults, often before anything of theirs
//! shows on the host (podman's 10.88.0.0/16 is routed only once its first container runs;
//! service ranges are never routed), so the host's addresses and routes are not enough: the
//! ranges other runtimes default to are refused as well.

use std::net::Ipv4Addr;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = Self::mask(self.len.min(other.len));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.overlaps(&Subnet { addr: ip, len: 32 })
    }

    /// The first host address, used as the bridge's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// The `n`th address of the prefix.
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & Self::mask(self.len)) + n)
    }

    /// How many addresses the prefix holds, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR like 10.2.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        // A pod subnet needs room for the gateway and at least two pods.
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=29).contains(l))
            .ok_or_else(|| format!("{s:?}: the prefix length must be 8 to 29"))?;
        if u32::from(addr) & !Self::mask(len) != 0 {
            return Err(format!(
                "{s:?}: host bits are set (the network is {})",
                Subnet { addr: Ipv4Addr::from(u32::from(addr) & Self::mask(len)), len }
            ));
        }
        Ok(Subnet { addr, len })
    }
}

/// A prefix someone else uses, and who: an address or route on the host, or another
/// runtime's default range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub prefix: Subnet,
    pub by: String,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.prefix, self.by)
    }
}

/// The ranges other runtimes and common setups take by default (their documentation and
/// source: podman's containers.conf `default_subnet_pools`, moby's `ipamutils`, k3s's flags).
const RESERVED: &[(&str, &str)] = &[
    ("10.88.0.0/13", "podman's default network and subnet pools"),
    ("10.96.0.0/11", "podman's subnet pools; Kubernetes' service range"),
    ("10.128.0.0/9", "podman's subnet pools"),
    ("10.42.0.0/15", "k3s's cluster and service ranges"),
    ("172.17.0.0/16", "docker's default bridge"),
    ("172.18.0.0/15", "docker's address pools"),
    ("172.20.0.0/14", "docker's address pools"),
    ("172.24.0.0/13", "docker's address pools"),
    ("192.168.0.0/16", "docker's address pools, libvirt and home networks"),
    ("100.64.0.0/10", "carrier-grade NAT and Tailscale"),
];

/// [`RESERVED`] as prefixes.
pub fn reserved() -> Vec<Taken> {
    RESERVED
        .iter()
        .map(|(p, by)| Taken {
            prefix: p.parse().expect("a valid reserved prefix"),
            by: by.to_string(),
        })
        .collect()
}

/// Candidates, in order: /24s of 10.2.0.0–10.31.255.255 (no runtime's default: 10.0 and
/// 10.1 are skipped as the usual LANs and VPCs), then of 172.16.0.0/16.
fn candidates() -> impl Iterator<Item = Subnet> {
    let ten = (2u8..=31).flat_map(|b| (0..=255u8).map(move |c| Ipv4Addr::new(10, b, c, 0)));
    let one72 = (0..=255u8).map(|c| Ipv4Addr::new(172, 16, c, 0));
    ten.chain(one72).map(|addr| Subnet { addr, len: 24 })
}

/// The first candidate /24 that overlaps nothing taken, on the host or by default.
pub fn pick(taken: &[Taken]) -> Option<Subnet> {
    let reserved = reserved();
    candidates().find(|c| !taken.iter().chain(&reserved).any(|t| t.prefix.overlaps(c)))
}

/// What of `taken` (and the reserved ranges) overlaps `subnet`.
pub fn conflicts(subnet: &Subnet, taken: &[Taken]) -> Vec<Taken> {
    let reserved = reserved();
    taken.iter().chain(&reserved).filter(|t| t.prefix.overlaps(subnet)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(p: &str, by: &str) -> Taken {
        let (addr, len) = p.split_once('/').unwrap();
        Taken {
            prefix: Subnet { addr: addr.parse().unwrap(), len: len.parse().unwrap() },
            by: by.into(),
        }
    }

    #[test]
    fn the_first_pick_is_no_runtimes_default() {
        let first = pick(&[]).unwrap();
        assert_eq!(first, "10.2.0.0/24".parse().unwrap());
        for t in reserved() {
            assert!(!t.prefix.overlaps(&first), "{first} overlaps {t}");
        }
    }

    /// podman's 10.88.0.0/16 before its bridge exists, docker's 172.17/16, k3s's 10.42/16 and
    /// 10.43/16: never picked, whatever the host shows.
    #[test]
    fn other_runtimes_ranges_are_never_picked() {
        for c in candidates() {
            for p in
                ["10.88.0.0/16", "10.89.0.0/16", "172.17.0.0/16", "10.42.0.0/16", "10.43.0.0/16"]
            {
                assert!(!c.overlaps(&p.parse().unwrap()), "candidate {c} overlaps {p}");
            }
        }
        let host = [taken("10.88.0.0/16", "route dev podman0")];
        assert_eq!(pick(&host), Some("10.2.0.0/24".parse().unwrap()));
    }

    #[test]
    fn the_pick_avoids_host_addresses_and_routes_of_any_table() {
        let host = [
            taken("10.0.0.0/14", "route dev wg0 table 51820"),
            taken("10.4.0.7/32", "address of eth1"),
            taken("10.4.1.0/25", "route dev tun0 table main"),
        ];
        assert_eq!(pick(&host), Some("10.4.2.0/24".parse().unwrap()));
        let everything = [taken("10.0.0.0/8", "route dev vpn0")];
        assert_eq!(pick(&everything), Some("172.16.0.0/24".parse().unwrap()));
        let full = [taken("10.0.0.0/8", "a"), taken("172.16.0.0/16", "b")];
        assert_eq!(pick(&full), None);
    }

    #[test]
    fn conflicts_name_what_overlaps() {
        let host = [taken("10.2.0.0/16", "route dev wg0 table main"), taken("10.3.0.0/24", "x")];
        let found = conflicts(&"10.2.5.0/24".parse().unwrap(), &host);
        assert_eq!(found, vec![host[0].clone()]);
        assert_eq!(found[0].to_string(), "10.2.0.0/16 (route dev wg0 table main)");
        let podman = conflicts(&"10.88.0.0/24".parse().unwrap(), &[]);
        assert_eq!(podman.len(), 1);
        assert!(podman[0].by.contains("podman"), "{podman:?}");
    }

    #[test]
    fn subnets_parse_with_room_for_pods_and_no_host_bits() {
        assert_eq!(
            "10.90.3.0/24".parse(),
            Ok(Subnet { addr: Ipv4Addr::new(10, 90, 3, 0), len: 24 })
        );
        assert_eq!(
            "10.90.3.7/24".parse::<Subnet>(),
            Err("\"10.90.3.7/24\": host bits are set (the network is 10.90.3.0/24)".into())
        );
        assert_eq!(
            "10.90.3.0/31".parse::<Subnet>(),
            Err("\"10.90.3.0/31\": the prefix length must be 8 to 29".into())
        );
        assert!("10.90.3.0".parse::<Subnet>().is_err());
        let s: Subnet = "10.2.0.0/24".parse().unwrap();
        assert_eq!(
            (s.gateway(), s.host(7), s.size()),
            (Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(10, 2, 0, 7), 256)
        );
        assert!(
            s.contains(Ipv4Addr::new(10, 2, 0, 255)) && !s.contains(Ipv4Addr::new(10, 2, 1, 0))
        );
    }
}
