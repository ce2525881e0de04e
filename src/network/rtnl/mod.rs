//! Links, addresses and routes over rtnetlink, in-process: the built-in network's bridge, each
//! pod's veth pair and the pod side's address and default route, without `ip` or CNI plugins.
//!
//! Blocking sockets (callers run this off the agent thread: `RTM_NEWLINK` takes the kernel's
//! RTNL lock, which a namespace teardown can hold for long). A netlink socket stays in the
//! network namespace it was created in, so a socket opened inside a pod's namespace
//! ([`Rtnl::open_in`]) configures that namespace from any thread.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::errno::Errno;

use super::subnet::Subnet;

mod conn;

use conn::Conn;

/// Receive buffer: the kernel fills a dump datagram up to 32 KiB (`netlink_recvmsg` caps its
/// `max_recvmsg_len` there); a datagram larger than this is reported, never cut silently.
const RECV_BUFFER: usize = 64 * 1024;

/// Dumps restarted when a concurrent change made the kernel flag them inconsistent.
const DUMP_TRIES: usize = 3;

/// `NLMSGERR_ATTR_MSG` (linux/netlink.h): the extended ack's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The kernel refused a request; `message` is its extended-ack text, when it gave one.
    #[error("{what}: {errno}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused { what: String, errno: Errno, message: Option<String> },
    /// The netlink socket failed.
    #[error("{what}: netlink socket: {error}")]
    Socket { what: String, error: std::io::Error },
    /// A reply could not be read.
    #[error("{what}: unreadable netlink reply: {message}")]
    Reply { what: String, message: String },
    /// The bridge exists without the gateway address but with others: it serves another subnet.
    #[error(
        "bridge {bridge} has the address {found}, not {wanted}: another network uses it; \
         delete it or choose another subnet"
    )]
    BridgeAddress { bridge: String, found: String, wanted: String },
    /// A link with the bridge's name exists and is not a bridge.
    #[error("link {name} exists and is not a bridge (kind {kind})")]
    NotABridge { name: String, kind: String },
    /// No socket could be opened inside a network namespace.
    #[error("opening a netlink socket in network namespace {netns}: {what}: {error}")]
    Netns { netns: PathBuf, what: &'static str, error: std::io::Error },
}

impl RtnlError {
    /// The kernel's errno, for a refused request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RtnlError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// An IPv4 route of any routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    /// `0.0.0.0/0` for a default route.
    pub dst: Subnet,
    pub gateway: Option<Ipv4Addr>,
    /// The output device (a multipath route's first hop); none for blackhole and the like.
    pub device: Option<String>,
    /// The routing table: 254 main, 255 local, others for policy routing (wg-quick, Tailscale).
    pub table: u32,
}

/// An IPv4 address of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddress {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub device: String,
    pub index: u32,
}

/// A non-blocking socket of the calling thread's namespace that receives a message for every
/// IPv4 address or route added or removed (groups `RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE`):
/// something to wait on instead of polling the host's routes.
pub fn subscribe_ipv4_changes() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const GROUPS: u32 = 0x10 | 0x40;
    let flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, flags, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data, passed with its size.
    let bound = unsafe {
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = GROUPS;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len)
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// A route netlink socket of one network namespace. Requests are serialized (the kernel runs
/// them under one lock anyway), so it can be shared between threads.
pub struct Rtnl {
    conn: Mutex<Conn>,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let what = || "opening a route netlink socket".to_string();
        let mut sock = Socket::new(NETLINK_ROUTE)
            .map_err(|error| RtnlError::Socket { what: what(), error })?;
        sock.bind_auto().map_err(|error| RtnlError::Socket { what: what(), error })?;
        // Best effort (kernels before 4.12 lack them): the kernel's reason in errors, and
        // errors that echo only the request's header, not all of it.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Rtnl { conn: Mutex::new(Conn { sock, seq: 0 }) })
    }

    /// A socket in the network namespace at `netns` (a pin, or `/proc/<pid>/ns/net`), opened
    /// by a short-lived thread that joins it: no caller's thread changes namespace.
    pub fn open_in(netns: &Path) -> Result<Self, RtnlError> {
        let err = |what, error| RtnlError::Netns { netns: netns.to_path_buf(), what, error };
        let ns = File::open(netns).map_err(|e| err("open", e))?;
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("rtnl-setns".into())
                .stack_size(64 * 1024)
                .spawn_scoped(s, || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| err("setns", e.into()))?;
                    Rtnl::open()
                })
                .map_err(|e| err("spawn thread", e))?
                .join()
                .unwrap_or_else(|_| Err(err("thread", std::io::Error::other("panicked"))))
        })
    }

    /// Creates bridge `name` if absent, gives it `gateway/prefix_len` if it has no address,
    /// and sets it up; returns its index. A bridge that lacks the gateway address but has
    /// others serves another network: an error naming them.
    pub fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<u32, RtnlError> {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        let created = self.ack(
            || format!("creating bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        match created {
            Err(e) if e.errno() == Some(Errno::EEXIST) => {}
            r => r?,
        }
        let link = self.link(name)?;
        let kind = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.clone()),
                _ => None,
            }),
            _ => None,
        });
        if kind != Some(InfoKind::Bridge) {
            let kind = kind.map_or("none".into(), |k| k.to_string());
            return Err(RtnlError::NotABridge { name: name.into(), kind });
        }
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            self.set_up(index, name)?;
        }
        let wanted = (gateway, prefix_len);
        let found: Vec<(Ipv4Addr, u8)> = self
            .ipv4_addresses()?
            .into_iter()
            .filter(|a| a.0 == index)
            .map(|a| (a.1, a.2))
            .collect();
        if found.contains(&wanted) {
            return Ok(index);
        }
        if !found.is_empty() {
            let found: Vec<String> = found.iter().map(|(a, l)| format!("{a}/{l}")).collect();
            return Err(RtnlError::BridgeAddress {
                bridge: name.into(),
                found: found.join(", "),
                wanted: format!("{gateway}/{prefix_len}"),
            });
        }
        self.add_address(index, name, gateway, prefix_len)?;
        Ok(index)
    }

    /// Creates veth `host_name` with its peer `peer_name` made directly inside the namespace
    /// `peer_netns` (no move afterwards); the host end is up, a port of `bridge` with hairpin
    /// on (a pod reaching itself through a hostPort). Undone if any step fails.
    pub fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: BorrowedFd,
        bridge: u32,
    ) -> Result<(), RtnlError> {
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(peer_name.into()));
        peer.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(host_name.into()));
        m.attributes.push(LinkAttribute::Controller(bridge));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            || format!("creating veth {host_name} (peer {peer_name})"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        // Port options go in an RTM_NEWLINK on the existing link: RTM_SETLINK acks them but
        // ignores them, and the creating message cannot carry them (the kernel looks for the
        // port's master before it sets one).
        let mut port = LinkMessage::default();
        port.attributes.push(LinkAttribute::IfName(host_name.into()));
        port.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
        ]));
        let hairpin = self.ack(
            || format!("setting hairpin mode on {host_name}"),
            RouteNetlinkMessage::NewLink(port),
            0,
        );
        if hairpin.is_err() {
            let _ = self.delete_link(host_name);
        }
        hairpin
    }

    /// The pod side, on a socket of the pod's namespace: `addr/prefix_len` on `name`, `name`
    /// up, and the default route via `gateway`. Repeating it changes nothing.
    pub fn configure_pod_interface(
        &self,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), RtnlError> {
        let index = self.link(name)?.header.index;
        self.add_address(index, name, addr, prefix_len)?;
        self.set_up(index, name)?;
        let default = Subnet { addr: Ipv4Addr::UNSPECIFIED, len: 0 };
        self.add_route(default, Some(gateway), index, u32::from(RouteHeader::RT_TABLE_MAIN))
    }

    /// Deletes link `name` (a veth's peer goes with it); `false` if there was none.
    pub fn delete_link(&self, name: &str) -> Result<bool, RtnlError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self.ack(|| format!("deleting link {name}"), RouteNetlinkMessage::DelLink(m), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of all links.
    pub fn link_names(&self) -> Result<Vec<String>, RtnlError> {
        Ok(self.links()?.into_iter().map(|(_, name)| name).collect())
    }

    /// The IPv4 routes of every table (a route elsewhere than main still takes its prefix:
    /// wg-quick, Tailscale), but for broadcast entries: each is a /32 inside the prefix of an
    /// address [`Rtnl::addresses`] reports anyway. Local routes stay: besides the host's own
    /// addresses, they mark whole ranges local (AnyIP, `ip route add local 10.5.0.0/16`).
    pub fn routes(&self) -> Result<Vec<HostRoute>, RtnlError> {
        let links = self.links()?;
        let name = |index: u32| links.iter().find(|l| l.0 == index).map(|l| l.1.clone());
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        self.dump("listing routes", RouteNetlinkMessage::GetRoute(m), |reply| {
            let RouteNetlinkMessage::NewRoute(r) = reply else { return None };
            if r.header.address_family != AddressFamily::Inet
                || r.header.kind == RouteType::Broadcast
            {
                return None;
            }
            let mut route = HostRoute {
                dst: Subnet {
                    addr: Ipv4Addr::UNSPECIFIED,
                    len: r.header.destination_prefix_length,
                },
                gateway: None,
                device: None,
                table: u32::from(r.header.table),
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst.addr = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::Oif(i) => route.device = name(*i),
                    RouteAttribute::MultiPath(hops) if route.device.is_none() => {
                        route.device = hops.first().and_then(|h| name(h.interface_index));
                    }
                    // Tables past 255 are only in this attribute.
                    RouteAttribute::Table(t) => route.table = *t,
                    _ => {}
                }
            }
            Some(route)
        })
    }

    /// The IPv4 addresses of every interface.
    pub fn addresses(&self) -> Result<Vec<HostAddress>, RtnlError> {
        let links = self.links()?;
        let name = |index: u32| links.iter().find(|l| l.0 == index).map(|l| l.1.clone());
        Ok(self
            .ipv4_addresses()?
            .into_iter()
            .map(|(index, address, prefix_len)| HostAddress {
                address,
                prefix_len,
                device: name(index).unwrap_or_default(),
                index,
            })
            .collect())
    }

    /// (index, name) of every link.
    fn links(&self) -> Result<Vec<(u32, String)>, RtnlError> {
        let m = LinkMessage::default();
        self.dump("listing links", RouteNetlinkMessage::GetLink(m), |reply| {
            let RouteNetlinkMessage::NewLink(l) = reply else { return None };
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((l.header.index, n)),
                _ => None,
            })
        })
    }

    /// (index, address, prefix length) of every IPv4 address.
    fn ipv4_addresses(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, RtnlError> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        self.dump("listing addresses", RouteNetlinkMessage::GetAddress(m), |reply| {
            let RouteNetlinkMessage::NewAddress(a) = reply else { return None };
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
            // point-to-point links (the peer's), and is alone on some.
            let mut found = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => found = Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) if found.is_none() => {
                        found = Some(*ip)
                    }
                    _ => {}
                }
            }
            Some((a.header.index, found?, a.header.prefix_len))
        })
    }

    fn link(&self, name: &str) -> Result<LinkMessage, RtnlError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let mut found = None;
        self.request(
            &|| format!("looking up link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
            &mut |reply| {
                if let RouteNetlinkMessage::NewLink(l) = reply {
                    found = Some(l);
                }
            },
        )?;
        found.ok_or_else(|| RtnlError::Reply {
            what: format!("looking up link {name}"),
            message: "no link in the kernel's answer".into(),
        })
    }

    fn set_up(&self, index: u32, name: &str) -> Result<(), RtnlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.ack(|| format!("setting {name} up"), RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Adds (or replaces: repeating it is harmless) `ip/len` on link `index`.
    fn add_address(&self, index: u32, name: &str, ip: Ipv4Addr, len: u8) -> Result<(), RtnlError> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        self.ack(
            || format!("adding address {ip}/{len} to {name}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Adds (or replaces) the unicast route to `dst` out of link `oif`, via `gateway` if any.
    fn add_route(
        &self,
        dst: Subnet,
        gateway: Option<Ipv4Addr>,
        oif: u32,
        table: u32,
    ) -> Result<(), RtnlError> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = dst.len;
        // Tables past 255 exist only as RTA_TABLE.
        m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        m.attributes.push(RouteAttribute::Table(table));
        if dst.len > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst.addr)));
        }
        if let Some(gw) = gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        self.ack(
            || format!("adding route {dst}{via} (table {table})"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn ack(
        &self,
        what: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), RtnlError> {
        self.request(&what, msg, flags, &mut |_| {})
    }

    /// A dump, each reply mapped by `keep`; restarted if a concurrent change interrupted it.
    fn dump<T>(
        &self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, RtnlError> {
        let mut tries = 0;
        loop {
            let mut out = Vec::new();
            let r = self.request(&|| what.into(), msg.clone(), NLM_F_DUMP, &mut |reply| {
                out.extend(keep(reply))
            });
            tries += 1;
            match r {
                Err(e) if e.errno() == Some(Errno::EINTR) && tries < DUMP_TRIES => continue,
                r => return r.map(|()| out),
            }
        }
    }

    /// The one request/reply exchange: sends `msg` with `flags` (an ack always requested) and
    /// hands each reply to `each` until the ack, the error or a dump's end.
    fn request(
        &self,
        what: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Result<(), RtnlError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let seq =
            conn.send(msg, flags).map_err(|error| RtnlError::Socket { what: what(), error })?;
        conn.receive(seq, what, each)
    }
}

#[cfg(test)]
mod tests;
