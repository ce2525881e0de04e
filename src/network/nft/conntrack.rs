//! Conntrack entries over ctnetlink (uapi `linux/netfilter/nfnetlink_conntrack.h`), for what
//! the CNI portmap plugin does after adding a UDP hostPort: a UDP flow that reached the host's
//! port before the DNAT rule existed keeps its entry, and with it its old destination, for as
//! long as the client keeps sending (a syslog or DNS client sending every second never times
//! out). Deleting the entry sends its next datagram through the new rule.
//!
//! Like the rest of `nft`, this works in the calling thread's network namespace.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::wire::*;
use super::NftError;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const CT_GET: u16 = NFNL_SUBSYS_CTNETLINK << 8 | 1;
const CT_DELETE: u16 = NFNL_SUBSYS_CTNETLINK << 8 | 2;

// CTA_*, CTA_TUPLE_*, CTA_IP_*, CTA_PROTO_*.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// A tracked UDP flow: its original direction (before any NAT), as conntrack has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlow {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// A UDP entry of the dump, with what identifies it to a delete.
#[derive(Debug, PartialEq)]
struct Entry {
    flow: UdpFlow,
    /// CTA_TUPLE_ORIG as dumped (with its CTA_TUPLE_ZONE, if any).
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
}

/// The IPv4 UDP flows conntrack tracks.
pub fn udp_flows() -> Result<Vec<UdpFlow>, NftError> {
    Ok(udp_entries(&Sock::open()?)?.into_iter().map(|e| e.flow).collect())
}

/// Deletes the IPv4 conntrack entries of UDP flows sent to `port` (whatever address, as
/// portmap does); returns how many it deleted.
pub fn delete_udp_to_port(port: u16) -> Result<usize, NftError> {
    let sock = Sock::open()?;
    let mut deleted = 0;
    for e in udp_entries(&sock)?.into_iter().filter(|e| e.flow.dst.port() == port) {
        match sock.request("delete a conntrack entry", CT_DELETE, NLM_F_ACK, |m| delete(m, &e)) {
            Ok(_) => deleted += 1,
            // Timed out or deleted since the dump.
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The body of a delete: the tuple finds the entry (in its zone); the id makes sure it is the
/// one dumped, not a new flow's.
fn delete(m: &mut Enc, e: &Entry) {
    m.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &e.tuple);
    if let Some(zone) = &e.zone {
        m.attr(CTA_ZONE, zone);
    }
    if let Some(id) = &e.id {
        m.attr(CTA_ID, id);
    }
}

/// The whole IPv4 table, dumped, filtered here (the kernel's CTA_FILTER needs 5.x).
fn udp_entries(sock: &Sock) -> Result<Vec<Entry>, NftError> {
    let replies = sock.request("dump the conntrack table", CT_GET, NLM_F_DUMP, |_| {})?;
    Ok(replies.iter().filter_map(|r| udp_entry(r)).collect())
}

fn find(attributes: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(attributes).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// One dumped entry's attributes (after the nfgenmsg): the entry if it is UDP over IPv4.
fn udp_entry(reply: &[u8]) -> Option<Entry> {
    let tuple = find(reply, CTA_TUPLE_ORIG)?;
    let proto = find(tuple, CTA_TUPLE_PROTO)?;
    if find(proto, CTA_PROTO_NUM)? != [IPPROTO_UDP] {
        return None;
    }
    let ip = find(tuple, CTA_TUPLE_IP)?;
    let addr = |ty| <[u8; 4]>::try_from(find(ip, ty)?).ok().map(Ipv4Addr::from);
    let port = |ty| <[u8; 2]>::try_from(find(proto, ty)?).ok().map(u16::from_be_bytes);
    let flow = UdpFlow {
        src: SocketAddrV4::new(addr(CTA_IP_V4_SRC)?, port(CTA_PROTO_SRC_PORT)?),
        dst: SocketAddrV4::new(addr(CTA_IP_V4_DST)?, port(CTA_PROTO_DST_PORT)?),
    };
    Some(Entry {
        flow,
        tuple: tuple.to_vec(),
        zone: find(reply, CTA_ZONE).map(<[u8]>::to_vec),
        id: find(reply, CTA_ID).map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump reply captured from the kernel (testdata/).
    fn captured() -> Vec<u8> {
        let text = include_str!("testdata/conntrack-udp-5514.hex");
        let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn a_dumped_udp_entry_is_parsed() {
        let reply = captured();
        let e = udp_entry(&reply).unwrap();
        let want = UdpFlow {
            src: "127.0.0.1:32848".parse().unwrap(),
            dst: "127.0.0.1:5514".parse().unwrap(),
        };
        assert_eq!(e.flow, want);
        assert_eq!(e.tuple, reply[4..52], "CTA_TUPLE_ORIG's value, not the reply tuple");
        assert_eq!(e.id.as_deref(), Some(&[0x78, 0x1c, 0x56, 0x23][..]));
        assert_eq!(e.zone, None);
    }

    #[test]
    fn other_protocols_and_truncated_replies_are_skipped() {
        let mut tcp = captured();
        // CTA_PROTO_NUM of the original tuple.
        assert_eq!(tcp[28..33], [5, 0, 1, 0, 17]);
        tcp[32] = 6;
        assert!(udp_entry(&tcp).is_none());
        let reply = captured();
        for cut in [0, 4, 40, 51] {
            assert!(udp_entry(&reply[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_delete_carries_the_original_tuple_and_the_id() {
        let e = udp_entry(&captured()).unwrap();
        let mut m = Enc::default();
        delete(&mut m, &e);
        let sent: Vec<_> = attrs(&m.0).collect();
        assert_eq!(sent, [(CTA_TUPLE_ORIG, &e.tuple[..]), (CTA_ID, &[0x78, 0x1c, 0x56, 0x23][..])]);
        assert_eq!(m.0[2..4], (CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes(), "nested");
    }
}
