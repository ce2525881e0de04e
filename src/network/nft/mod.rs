//! outpost's nftables table (`ip outpost0`, named after its bridge), written over netlink (no
//! `nft` binary, no libnftnl):
//! masquerade for pod egress, hostPort DNAT (the CNI portmap plugin's rules) and the kubelet's
//! guard that keeps pods off the host's 127.0.0.1 services. The few messages and expressions
//! outpost needs are encoded here (uapi `linux/netfilter/nf_tables.h`); `nft list table ip
//! outpost0` shows them as written in [`Table::install`].
//!
//! Every call works in the network namespace of the calling thread: a netlink socket belongs
//! to the namespace of the thread that opens it.

use std::io;
use std::net::Ipv4Addr;

use super::subnet::Subnet;

/// One table of outpost's, by name (each agent's is named after its bridge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table(pub String);
const HOSTPORTS: &str = "hostports";

pub mod conntrack;
mod forward;
mod wire;

pub use forward::{allow_forwarding, remove_forwarding};
use wire::*;

/// A hostPort: traffic to `host_ip` (any local address when `None`) on `host_port` goes to
/// the pod's `container_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The sandbox's id, kept with the rule (as its comment) so it can be removed by id.
    pub id: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub protocol: Proto,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl std::str::FromStr for Proto {
    type Err = String;
    /// The `portMappings` spelling: `tcp`, `udp`, `sctp`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(format!("unknown protocol {s:?}")),
        }
    }
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables: {op}: {source}")]
    Socket { op: &'static str, source: io::Error },
    /// The kernel refused a message; `message` is its extended ack text, if any.
    #[error("nftables: {op}: {}{}", io::Error::from_raw_os_error(*errno),
        message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { op: String, errno: i32, message: Option<String> },
    #[error("nftables: {op}: {what}")]
    Reply { op: &'static str, what: &'static str },
    #[error("nftables: hostPort id {id:?} must be 1 to 127 bytes without NUL")]
    Id { id: String },
    #[error("nftables: bridge name {bridge:?} cannot be part of an iptables comment: it must be 1 to 247 bytes without NUL")]
    Bridge { bridge: String },
}

impl NftError {
    /// The kernel's errno, when it refused a message.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { errno, .. } => Some(*errno),
            NftError::Socket { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl Table {
    /// Creates or replaces the table in one atomic batch, with `hostports` in it (those
    /// of the pods still running, so an agent restart never interrupts a hostPort). Any error
    /// means the kernel lacks something (nf_tables, or its `nat`, `masq`, `fib` or `ct`
    /// expressions): nothing was changed, and the caller falls back to the CNI plugins.
    pub fn install(&self, subnet: Subnet, hostports: &[HostPort]) -> Result<(), NftError> {
        let s = subnet;
        let loopback = Subnet { addr: Ipv4Addr::new(127, 0, 0, 0), len: 8 };
        let multicast = Subnet { addr: Ipv4Addr::new(224, 0, 0, 0), len: 4 };
        let mut b = Batch::new("install table", &self.0);
        let create = NLM_F_CREATE;
        // The idiom `add table; delete table; add table …`: replaces whatever is there, or
        // creates it, atomically.
        b.push(NEWTABLE, create, "add table", |e| b_table(e, &self.0));
        b.push(DELTABLE, 0, "delete table", |e| b_table(e, &self.0));
        b.push(NEWTABLE, create, "add table", |e| b_table(e, &self.0));
        // Priorities: srcnat 100, dstnat -100, filter 0.
        for (name, kind, hook, prio) in [
            ("postrouting", "nat", POSTROUTING, 100),
            ("prerouting", "nat", PREROUTING, -100i32),
            ("output", "nat", OUTPUT, -100),
            ("input", "filter", INPUT, 0),
        ] {
            b.push(NEWCHAIN, create, &format!("add chain {name}"), |e| {
                e.str(CHAIN_TABLE, &self.0).str(CHAIN_NAME, name);
                e.nest(CHAIN_HOOK, |e| {
                    e.be32(HOOK_HOOKNUM, hook).be32(HOOK_PRIORITY, prio as u32);
                });
                e.str(CHAIN_TYPE, kind);
            });
        }
        b.push(NEWCHAIN, create, "add chain hostports", |e| {
            e.str(CHAIN_TABLE, &self.0).str(CHAIN_NAME, HOSTPORTS);
        });
        // Egress (the bridge plugin's ipMasq).
        b.rule("postrouting", None, |e| {
            e.prefix(IP_SADDR, s, true)
                .prefix(IP_DADDR, s, false)
                .prefix(IP_DADDR, multicast, false);
            e.expr("masq", |_| {});
        });
        // 127.0.0.1:hostPort: the pod must answer an address it can reach (portmap's snat).
        b.rule("postrouting", None, |e| {
            e.prefix(IP_SADDR, loopback, true).prefix(IP_DADDR, s, true);
            e.expr("masq", |_| {});
        });
        // Hairpin: a pod reaching its own hostPort.
        b.rule("postrouting", None, |e| {
            e.prefix(IP_SADDR, s, true).prefix(IP_DADDR, s, true).ct_bits(
                CT_STATUS,
                IPS_DST_NAT,
                true,
            );
            e.expr("masq", |_| {});
        });
        for chain in ["prerouting", "output"] {
            b.rule(chain, None, |e| {
                // fib daddr type local
                e.expr("fib", |e| {
                    e.be32(1, REG_1).be32(2, 3).be32(3, 2); // DREG, RESULT_ADDRTYPE, F_DADDR
                });
                e.cmp(CMP_EQ, &2u32.to_ne_bytes()); // RTN_LOCAL
                e.verdict(NFT_JUMP, Some(HOSTPORTS));
            });
        }
        // The kubelet's KUBE-FIREWALL "block incoming localnet connections" (CVE-2020-8558):
        // route_localnet on the bridge lets a pod send to 127.0.0.1. Only replies and DNATed
        // connections (127.0.0.1:hostPort) may pass: `! -s 127.0.0.0/8 -d 127.0.0.0/8 -m
        // conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`. A packet without conntrack
        // (INVALID) has no ct status to test, hence the second rule.
        b.rule("input", None, |e| {
            e.prefix(IP_SADDR, loopback, false).prefix(IP_DADDR, loopback, true);
            e.ct_bits(CT_STATE, CT_STATE_ESTABLISHED_RELATED, false);
            e.ct_bits(CT_STATUS, IPS_DST_NAT, false).verdict(NF_DROP, None);
        });
        b.rule("input", None, |e| {
            e.prefix(IP_SADDR, loopback, false).prefix(IP_DADDR, loopback, true);
            e.ct_bits(CT_STATE, CT_STATE_INVALID, true).verdict(NF_DROP, None);
        });
        for hp in hostports {
            b.hostport(hp)?;
        }
        b.send(&Sock::open()?)
    }

    /// Adds hostPort rules, in one batch (all or none).
    pub fn add_hostports(&self, ports: &[HostPort]) -> Result<(), NftError> {
        let mut b = Batch::new("add hostports", &self.0);
        for hp in ports {
            b.hostport(hp)?;
        }
        b.send(&Sock::open()?)
    }

    /// Removes every hostPort rule of sandbox `id`; returns how many there were (0 when none, or
    /// no table).
    pub fn remove_hostports(&self, id: &str) -> Result<usize, NftError> {
        let sock = Sock::open()?;
        let handles: Vec<u64> = hostport_rules(&sock, &self.0)?
            .into_iter()
            .filter(|(_, i)| i == id)
            .map(|(h, _)| h)
            .collect();
        if handles.is_empty() {
            return Ok(0);
        }
        let mut b = Batch::new("remove hostports", &self.0);
        for h in &handles {
            b.push(DELRULE, 0, &format!("delete rule {h} of {id}"), |e| {
                e.str(RULE_TABLE, &self.0)
                    .str(RULE_CHAIN, HOSTPORTS)
                    .attr(RULE_HANDLE, &h.to_be_bytes());
            });
        }
        match b.send(&sock) {
            // The table went away in between: so did the rules.
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(0),
            r => r.map(|()| handles.len()),
        }
    }

    /// The sandbox ids with hostPort rules, sorted, once each (for leak checks and reconciling
    /// at start); empty without a table.
    pub fn list_hostport_ids(&self) -> Result<Vec<String>, NftError> {
        let mut ids: Vec<String> =
            hostport_rules(&Sock::open()?, &self.0)?.into_iter().map(|(_, id)| id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Removes the table and everything in it; no table is fine.
    pub fn remove(&self) -> Result<(), NftError> {
        let mut b = Batch::new("remove table", &self.0);
        b.push(DELTABLE, 0, "delete table", |e| b_table(e, &self.0));
        match b.send(&Sock::open()?) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

/// Whether iptables-nft's `ip filter FORWARD` chain drops by policy (docker sets that), so
/// pod traffic needs accept rules there; read-only. A host without that chain, or with
/// iptables-legacy (invisible to nf_tables), answers false.
pub fn forward_policy_drops() -> Result<bool, NftError> {
    let op = "get chain ip filter FORWARD";
    let sock = Sock::open()?;
    let replies = match sock.query(op, GETCHAIN, NLM_F_ACK, |e| {
        e.str(CHAIN_TABLE, "filter").str(CHAIN_NAME, "FORWARD");
    }) {
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
        r => r?,
    };
    let policy = replies.iter().flat_map(|m| attrs(m)).find(|(t, _)| *t == CHAIN_POLICY);
    Ok(policy.is_some_and(|(_, v)| v.get(..4) == Some(&NF_DROP.to_be_bytes()[..])))
}

fn b_table(e: &mut Enc, table: &str) {
    e.str(TABLE_NAME, table);
}

/// (handle, sandbox id) of each rule in chain `hostports` that has an id. A dump that a
/// concurrent change cut (it could miss a rule, which would then leak) is taken again.
fn hostport_rules(sock: &Sock, table: &str) -> Result<Vec<(u64, String)>, NftError> {
    let mut tries = 0;
    let replies = loop {
        tries += 1;
        match sock.query("list chain hostports", GETRULE, NLM_F_DUMP, |e| {
            e.str(RULE_TABLE, table).str(RULE_CHAIN, HOSTPORTS);
        }) {
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) if e.errno() == Some(libc::EINTR) && tries < 100 => continue,
            r => break r?,
        }
    };
    let mut rules = Vec::new();
    for m in &replies {
        let (mut handle, mut id) = (None, None);
        for (t, v) in attrs(m) {
            match t {
                RULE_HANDLE => handle = v.try_into().ok().map(u64::from_be_bytes),
                RULE_USERDATA => id = comment(v),
                _ => {}
            }
        }
        if let (Some(h), Some(id)) = (handle, id) {
            rules.push((h, id));
        }
    }
    Ok(rules)
}

/// The rule comment in nft's userdata TLVs (`NFTNL_UDATA_RULE_COMMENT`: type 0, length,
/// NUL-terminated text), which is how `nft list` shows it.
fn userdata_comment(id: &str) -> Result<Vec<u8>, NftError> {
    if id.is_empty() || id.len() > 127 || id.contains('\0') {
        return Err(NftError::Id { id: id.to_string() });
    }
    let mut v = vec![0, id.len() as u8 + 1];
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    Ok(v)
}

fn comment(mut ud: &[u8]) -> Option<String> {
    while let [ty, len, rest @ ..] = ud {
        let value = rest.get(..usize::from(*len))?;
        if *ty == 0 {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        ud = &rest[value.len()..];
    }
    None
}

/// An nfnetlink batch, applied by the kernel all or nothing. Only the last message asks for an
/// ack (the kernel reports every refused one anyway): acks for a thousand rules would
/// overflow the socket's receive buffer.
struct Batch {
    op: &'static str,
    table: String,
    buf: Enc,
    /// Where the last message starts.
    last: usize,
    /// What each message does, by sequence number (the begin message's is `op`).
    what: Vec<String>,
}

impl Batch {
    fn new(op: &'static str, table: &str) -> Self {
        let mut buf = Enc::default();
        message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        Batch { op, table: table.to_string(), buf, last: 0, what: vec![format!("{op} ip {table}")] }
    }

    fn push(&mut self, ty: u8, flags: u16, what: &str, body: impl FnOnce(&mut Enc)) {
        let seq = self.what.len() as u32;
        let ty = NFNL_SUBSYS_NFTABLES << 8 | u16::from(ty);
        self.last = self.buf.0.len();
        message(&mut self.buf, ty, NLM_F_REQUEST | flags, seq, NFPROTO_IPV4, 0, body);
        self.what.push(format!("{} ip {}: {what}", self.op, self.table));
    }

    fn rule(&mut self, chain: &str, userdata: Option<&[u8]>, exprs: impl FnOnce(&mut Enc)) {
        let table = self.table.clone();
        self.push(
            NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &format!("add rule to chain {chain}"),
            |e| {
                e.str(RULE_TABLE, &table).str(RULE_CHAIN, chain).nest(RULE_EXPRESSIONS, exprs);
                if let Some(u) = userdata {
                    e.attr(RULE_USERDATA, u);
                }
            },
        );
    }

    /// `[ip daddr HOSTIP] meta l4proto P th dport HP dnat to POD:CP comment "id"`.
    fn hostport(&mut self, hp: &HostPort) -> Result<(), NftError> {
        let comment = userdata_comment(&hp.id)?;
        self.rule(HOSTPORTS, Some(&comment), |e| {
            if let Some(ip) = hp.host_ip.filter(|ip| !ip.is_unspecified()) {
                e.load(NETWORK_HEADER, IP_DADDR, 4).cmp(CMP_EQ, &ip.octets());
            }
            e.expr("meta", |e| {
                e.be32(1, REG_1).be32(2, 16); // META_L4PROTO
            });
            e.cmp(CMP_EQ, &[hp.protocol.number()]);
            e.load(TRANSPORT_HEADER, 2, 2).cmp(CMP_EQ, &hp.host_port.to_be_bytes());
            e.immediate(REG_1, &hp.pod_ip.octets());
            e.immediate(REG_2, &hp.container_port.to_be_bytes());
            e.expr("nat", |e| {
                // DNAT, IPv4, address in register 1, port in register 2.
                e.be32(1, 1).be32(2, u32::from(NFPROTO_IPV4)).be32(3, REG_1).be32(5, REG_2);
            });
        });
        Ok(())
    }

    /// Sends the batch and reads every ack: the first refusal is the error.
    fn send(mut self, sock: &Sock) -> Result<(), NftError> {
        let end = self.what.len() as u32;
        if end == 1 {
            return Ok(()); // nothing to do
        }
        let flags = &mut self.buf.0[self.last + 6..self.last + 8];
        let with_ack = u16::from_ne_bytes([flags[0], flags[1]]) | NLM_F_ACK;
        flags.copy_from_slice(&with_ack.to_ne_bytes());
        message(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        sock.send(self.op, &self.buf.0)?;
        // The kernel handles a batch inside sendmsg: every answer is queued by now.
        let (mut acked, mut overrun) = (false, false);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match sock.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Refusals past the receive buffer were dropped; the first ones are queued.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overrun = true;
                    continue;
                }
                Err(source) => return Err(NftError::Socket { op: self.op, source }),
            };
            for (ty, _, seq, payload) in messages(&buf[..n]) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let what = self.what.get(seq as usize).map_or(self.op, |w| w.as_str());
                check_ack(what, payload)?;
                acked |= seq == end - 1;
            }
        }
        if overrun && !acked {
            let source = io::Error::from_raw_os_error(libc::ENOBUFS);
            return Err(NftError::Socket { op: self.op, source });
        } else if !acked {
            return Err(NftError::Reply { op: self.op, what: "the kernel did not ack the batch" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
