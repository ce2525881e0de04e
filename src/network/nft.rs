//! outpost's nftables table, `ip outpost`, written over netlink (no `nft` binary, no libnftnl):
//! masquerade for pod egress, hostPort DNAT (the CNI portmap plugin's rules) and the kubelet's
//! guard that keeps pods off the host's 127.0.0.1 services. The few messages and expressions
//! outpost needs are encoded here (uapi `linux/netfilter/nf_tables.h`); `nft list table ip
//! outpost` shows them as written in [`install`].
//!
//! Every call works in the network namespace of the calling thread: a netlink socket belongs
//! to the namespace of the thread that opens it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::default::Subnet;

pub const TABLE: &str = "outpost";
const HOSTPORTS: &str = "hostports";

// Netlink and nfnetlink framing.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_IPV4: u8 = 2;

// Message types (`NFT_MSG_*`).
const NEWTABLE: u8 = 0;
const DELTABLE: u8 = 2;
const NEWCHAIN: u8 = 3;
const GETCHAIN: u8 = 4;
const NEWRULE: u8 = 6;
const GETRULE: u8 = 7;
const DELRULE: u8 = 8;

// Attributes: NFTA_TABLE_*, NFTA_CHAIN_*, NFTA_HOOK_*, NFTA_RULE_*, NFTA_LIST_ELEM,
// NFTA_EXPR_*, NFTA_DATA_*, NFTA_VERDICT_*.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;

// Netfilter hooks.
const PREROUTING: u32 = 0;
const INPUT: u32 = 1;
const OUTPUT: u32 = 3;
const POSTROUTING: u32 = 4;

// Registers, verdicts, payload bases, comparisons, ct keys and bits.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const NF_DROP: u32 = 0;
const NFT_JUMP: u32 = -3i32 as u32;
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CT_STATE: u32 = 0;
const CT_STATUS: u32 = 2;
const CT_STATE_INVALID: u32 = 1;
const CT_STATE_ESTABLISHED_RELATED: u32 = 2 | 4;
const IPS_DST_NAT: u32 = 0x20;
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;

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

/// Creates or replaces table `ip outpost` in one atomic batch, with `hostports` in it (those
/// of the pods still running, so an agent restart never interrupts a hostPort). Any error
/// means the kernel lacks something (nf_tables, or its `nat`, `masq`, `fib` or `ct`
/// expressions): nothing was changed, and the caller falls back to the CNI plugins.
pub fn install(subnet: Subnet, hostports: &[HostPort]) -> Result<(), NftError> {
    let s = subnet;
    let loopback = Subnet { addr: Ipv4Addr::new(127, 0, 0, 0), len: 8 };
    let multicast = Subnet { addr: Ipv4Addr::new(224, 0, 0, 0), len: 4 };
    let mut b = Batch::new("install table ip outpost");
    let create = NLM_F_CREATE;
    // The idiom `add table; delete table; add table …`: replaces whatever is there, or
    // creates it, atomically.
    b.push(NEWTABLE, create, "add table", table_name);
    b.push(DELTABLE, 0, "delete table", table_name);
    b.push(NEWTABLE, create, "add table", table_name);
    // Priorities: srcnat 100, dstnat -100, filter 0.
    for (name, kind, hook, prio) in [
        ("postrouting", "nat", POSTROUTING, 100),
        ("prerouting", "nat", PREROUTING, -100i32),
        ("output", "nat", OUTPUT, -100),
        ("input", "filter", INPUT, 0),
    ] {
        b.push(NEWCHAIN, create, &format!("add chain {name}"), |e| {
            e.str(CHAIN_TABLE, TABLE).str(CHAIN_NAME, name);
            e.nest(CHAIN_HOOK, |e| {
                e.be32(HOOK_HOOKNUM, hook).be32(HOOK_PRIORITY, prio as u32);
            });
            e.str(CHAIN_TYPE, kind);
        });
    }
    b.push(NEWCHAIN, create, "add chain hostports", |e| {
        e.str(CHAIN_TABLE, TABLE).str(CHAIN_NAME, HOSTPORTS);
    });
    // Egress (the bridge plugin's ipMasq).
    b.rule("postrouting", None, |e| {
        e.prefix(IP_SADDR, s, true).prefix(IP_DADDR, s, false).prefix(IP_DADDR, multicast, false);
        e.expr("masq", |_| {});
    });
    // 127.0.0.1:hostPort: the pod must answer an address it can reach (portmap's snat).
    b.rule("postrouting", None, |e| {
        e.prefix(IP_SADDR, loopback, true).prefix(IP_DADDR, s, true);
        e.expr("masq", |_| {});
    });
    // Hairpin: a pod reaching its own hostPort.
    b.rule("postrouting", None, |e| {
        e.prefix(IP_SADDR, s, true).prefix(IP_DADDR, s, true).ct_bits(CT_STATUS, IPS_DST_NAT, true);
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
pub fn add_hostports(ports: &[HostPort]) -> Result<(), NftError> {
    let mut b = Batch::new("add hostports");
    for hp in ports {
        b.hostport(hp)?;
    }
    b.send(&Sock::open()?)
}

/// Removes every hostPort rule of sandbox `id`; returns how many there were (0 when none, or
/// no table).
pub fn remove_hostports(id: &str) -> Result<usize, NftError> {
    let sock = Sock::open()?;
    let handles: Vec<u64> =
        hostport_rules(&sock)?.into_iter().filter(|(_, i)| i == id).map(|(h, _)| h).collect();
    if handles.is_empty() {
        return Ok(0);
    }
    let mut b = Batch::new("remove hostports");
    for h in &handles {
        b.push(DELRULE, 0, &format!("delete rule {h} of {id}"), |e| {
            e.str(RULE_TABLE, TABLE).str(RULE_CHAIN, HOSTPORTS).attr(RULE_HANDLE, &h.to_be_bytes());
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
pub fn list_hostport_ids() -> Result<Vec<String>, NftError> {
    let mut ids: Vec<String> =
        hostport_rules(&Sock::open()?)?.into_iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Removes table `ip outpost` and everything in it; no table is fine.
pub fn remove_table() -> Result<(), NftError> {
    let mut b = Batch::new("remove table ip outpost");
    b.push(DELTABLE, 0, "delete table", table_name);
    match b.send(&Sock::open()?) {
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
        r => r,
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

fn table_name(e: &mut Enc) {
    e.str(TABLE_NAME, TABLE);
}

/// (handle, sandbox id) of each rule in chain `hostports` that has an id. A dump that a
/// concurrent change cut (it could miss a rule, which would then leak) is taken again.
fn hostport_rules(sock: &Sock) -> Result<Vec<(u64, String)>, NftError> {
    let mut tries = 0;
    let replies = loop {
        tries += 1;
        match sock.query("list chain hostports", GETRULE, NLM_F_DUMP, |e| {
            e.str(RULE_TABLE, TABLE).str(RULE_CHAIN, HOSTPORTS);
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

/// Netlink attributes (type without flags, value) of `buf`, stopping at a malformed one.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?));
        let ty = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & !NLA_F_NESTED;
        let value = buf.get(4..len)?;
        buf = buf.get(align(len)..).unwrap_or_default();
        Some((ty, value))
    })
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attribute encoding onto a buffer; values are big-endian, as nf_tables wants.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        self.attr(ty, &[s.as_bytes(), &[0]].concat())
    }

    fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.0.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        inner(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// One expression of a rule.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Self)) -> &mut Self {
        self.nest(LIST_ELEM, |e| {
            e.str(EXPR_NAME, name).nest(EXPR_DATA, data);
        })
    }

    /// Loads `len` bytes at `offset` of a header into register 1.
    fn load(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expr("payload", |e| {
            e.be32(1, REG_1).be32(2, base).be32(3, offset).be32(4, len);
        })
    }

    fn cmp(&mut self, op: u32, value: &[u8]) -> &mut Self {
        self.expr("cmp", |e| {
            e.be32(1, REG_1).be32(2, op).nest(3, |e| {
                e.attr(DATA_VALUE, value);
            });
        })
    }

    /// Register 1 &= mask.
    fn mask(&mut self, mask: &[u8]) -> &mut Self {
        self.expr("bitwise", |e| {
            e.be32(1, REG_1).be32(2, REG_1).be32(3, mask.len() as u32);
            e.nest(4, |e| {
                e.attr(DATA_VALUE, mask);
            });
            e.nest(5, |e| {
                e.attr(DATA_VALUE, &vec![0; mask.len()]);
            });
        })
    }

    /// `ip saddr|daddr [!=] prefix`.
    fn prefix(&mut self, offset: u32, p: Subnet, equal: bool) -> &mut Self {
        self.load(NETWORK_HEADER, offset, 4);
        if p.len < 32 {
            self.mask(&(u32::MAX << (32 - u32::from(p.len))).to_be_bytes());
        }
        self.cmp(if equal { CMP_EQ } else { CMP_NEQ }, &p.addr.octets())
    }

    /// `ct state|status` has any (`set`) or none of `bits` (host byte order, as conntrack).
    fn ct_bits(&mut self, key: u32, bits: u32, set: bool) -> &mut Self {
        self.expr("ct", |e| {
            e.be32(1, REG_1).be32(2, key);
        });
        self.mask(&bits.to_ne_bytes()).cmp(if set { CMP_NEQ } else { CMP_EQ }, &[0; 4])
    }

    fn immediate(&mut self, reg: u32, value: &[u8]) -> &mut Self {
        self.expr("immediate", |e| {
            e.be32(1, reg).nest(2, |e| {
                e.attr(DATA_VALUE, value);
            });
        })
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) -> &mut Self {
        self.expr("immediate", |e| {
            e.be32(1, REG_VERDICT).nest(2, |e| {
                e.nest(DATA_VERDICT, |e| {
                    e.be32(VERDICT_CODE, code);
                    if let Some(c) = chain {
                        e.str(VERDICT_CHAIN, c);
                    }
                });
            });
        })
    }
}

/// Appends a netlink header and an nfgenmsg, then `body`; fixes the length.
fn message(
    buf: &mut Enc,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Enc),
) {
    let start = buf.0.len();
    for part in [
        &0u32.to_ne_bytes()[..],
        &ty.to_ne_bytes(),
        &flags.to_ne_bytes(),
        &seq.to_ne_bytes(),
        &[0; 4],
    ] {
        buf.0.extend_from_slice(part);
    }
    buf.0.extend_from_slice(&[family, 0]);
    buf.0.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    let len = (buf.0.len() - start) as u32;
    buf.0[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An nfnetlink batch, applied by the kernel all or nothing. Only the last message asks for an
/// ack (the kernel reports every refused one anyway): acks for a thousand rules would
/// overflow the socket's receive buffer.
struct Batch {
    op: &'static str,
    buf: Enc,
    /// Where the last message starts.
    last: usize,
    /// What each message does, by sequence number (the begin message's is `op`).
    what: Vec<String>,
}

impl Batch {
    fn new(op: &'static str) -> Self {
        let mut buf = Enc::default();
        message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        Batch { op, buf, last: 0, what: vec![op.to_string()] }
    }

    fn push(&mut self, ty: u8, flags: u16, what: &str, body: impl FnOnce(&mut Enc)) {
        let seq = self.what.len() as u32;
        let ty = NFNL_SUBSYS_NFTABLES << 8 | u16::from(ty);
        self.last = self.buf.0.len();
        message(&mut self.buf, ty, NLM_F_REQUEST | flags, seq, NFPROTO_IPV4, 0, body);
        self.what.push(format!("{}: {what}", self.op));
    }

    fn rule(&mut self, chain: &str, userdata: Option<&[u8]>, exprs: impl FnOnce(&mut Enc)) {
        self.push(
            NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &format!("add rule to chain {chain}"),
            |e| {
                e.str(RULE_TABLE, TABLE).str(RULE_CHAIN, chain).nest(RULE_EXPRESSIONS, exprs);
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

/// Messages in a receive buffer: (type, flags, seq, payload).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
        let flags = u16::from_ne_bytes(buf.get(6..8)?.try_into().ok()?);
        let seq = u32::from_ne_bytes(buf.get(8..12)?.try_into().ok()?);
        let payload = buf.get(16..len)?;
        buf = buf.get(align(len)..).unwrap_or_default();
        Some((ty, flags, seq, payload))
    })
}

/// An `NLMSG_ERROR` payload: errno 0 is an ack; else the error, with the kernel's extended
/// ack text (NLMSGERR_ATTR_MSG) when it gave one. The socket caps acks at the request's
/// header (NETLINK_CAP_ACK), so the attributes follow it.
fn check_ack(what: &str, payload: &[u8]) -> Result<(), NftError> {
    let code = payload.get(..4).map_or(0, |c| i32::from_ne_bytes(c.try_into().unwrap_or_default()));
    if code == 0 {
        return Ok(());
    }
    let message = payload
        .get(20..)
        .and_then(|tlvs| attrs(tlvs).find(|(t, _)| *t == 1))
        .map(|(_, v)| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned());
    Err(NftError::Kernel { op: what.to_string(), errno: -code, message })
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
struct Sock(OwnedFd);

impl Sock {
    fn open() -> Result<Self, NftError> {
        let op = "open a netlink socket";
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(NftError::Socket { op, source: io::Error::last_os_error() });
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let sock = Sock(unsafe { OwnedFd::from_raw_fd(fd) });
        // Error text from the kernel, and acks without the request echoed. Best effort: a
        // kernel without them still answers with the errno.
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: an int option, passed with its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(sock)
    }

    fn send(&self, op: &'static str, buf: &[u8]) -> Result<(), NftError> {
        // A batch must fit the send buffer in one message (212 KiB by default: ~600 rules).
        if buf.len() > 1 << 17 {
            let size = buf.len() as libc::c_int;
            // SAFETY: an int option, passed with its size.
            unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // SAFETY: buf is valid for its length; the kernel is the default destination.
        let n = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(NftError::Socket { op, source: io::Error::last_os_error() });
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: buf is valid and writable for its length.
        let n =
            unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// A get request (a dump with NLM_F_DUMP): the attributes of each reply, up to the
    /// dump's end or the ack.
    fn query(
        &self,
        op: &'static str,
        ty: u8,
        flags: u16,
        body: impl FnOnce(&mut Enc),
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let mut req = Enc::default();
        let ty = NFNL_SUBSYS_NFTABLES << 8 | u16::from(ty);
        message(&mut req, ty, NLM_F_REQUEST | flags, 1, NFPROTO_IPV4, 0, body);
        self.send(op, &req.0)?;
        let (mut replies, mut interrupted) = (Vec::new(), false);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.recv(&mut buf, 0).map_err(|source| NftError::Socket { op, source })?;
            if n == 0 {
                return Err(NftError::Reply { op, what: "the kernel closed the socket" });
            }
            for (ty, flags, _, payload) in messages(&buf[..n]) {
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match ty {
                    NLMSG_DONE if interrupted => {
                        let message = Some("the ruleset changed during the dump".into());
                        return Err(NftError::Kernel {
                            op: op.into(),
                            errno: libc::EINTR,
                            message,
                        });
                    }
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => return check_ack(op, payload).map(|()| replies),
                    // Skip the nfgenmsg.
                    _ => replies.push(payload.get(4..).unwrap_or_default().to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_with_the_flag() {
        let mut e = Enc::default();
        e.nest(4, |e| {
            e.str(1, "ab").be32(2, 0x0102_0304);
        });
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[20u8, 0, 4, 0x80][..],        // nested, length covers the padded children
            &[7, 0, 1, 0, b'a', b'b', 0, 0], // "ab\0", length 7, padded to 8
            &[8, 0, 2, 0, 1, 2, 3, 4],       // big-endian
        ]
        .concat();
        assert_eq!(e.0, want);
        let outer: Vec<_> = attrs(&e.0).collect();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, 4, "the nested flag is masked off");
        let inner: Vec<_> = attrs(outer[0].1).collect();
        assert_eq!(inner, vec![(1, &b"ab\0"[..]), (2, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn a_prefix_match_loads_masks_and_compares() {
        let mut e = Enc::default();
        e.prefix(IP_SADDR, "10.88.16.0/20".parse().unwrap(), false);
        type Expr = (String, Vec<(u16, Vec<u8>)>);
        let exprs: Vec<Expr> = attrs(&e.0)
            .map(|(_, el)| {
                let mut it = attrs(el);
                let name = it.next().unwrap().1;
                let data = attrs(it.next().unwrap().1).map(|(t, v)| (t, v.to_vec())).collect();
                (String::from_utf8(name.to_vec()).unwrap(), data)
            })
            .collect();
        let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["payload\0", "bitwise\0", "cmp\0"]);
        assert_eq!(exprs[0].1[2], (3, vec![0, 0, 0, 12]), "offset of ip saddr");
        let mask = attrs(&exprs[1].1[3].1).next().unwrap().1.to_vec();
        assert_eq!(mask, [255, 255, 240, 0]);
        assert_eq!(exprs[2].1[1], (2, vec![0, 0, 0, 1]), "!=");
        assert_eq!(attrs(&exprs[2].1[2].1).next().unwrap().1, [10, 88, 16, 0]);
    }

    #[test]
    fn a_batch_frames_its_messages() {
        let mut b = Batch::new("test");
        b.push(DELTABLE, 0, "delete table", table_name);
        let msgs: Vec<_> = messages(&b.buf.0).collect();
        assert_eq!(msgs.len(), 2);
        let (ty, flags, seq, payload) = msgs[0];
        assert_eq!((ty, flags, seq), (NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0));
        assert_eq!(payload, [0, 0, 0, 10], "res_id is the nftables subsystem, big-endian");
        let (ty, flags, seq, payload) = msgs[1];
        assert_eq!((ty, flags, seq), (10 << 8 | 2, NLM_F_REQUEST, 1));
        assert_eq!(&payload[..4], [NFPROTO_IPV4, 0, 0, 0]);
        assert_eq!(attrs(&payload[4..]).next(), Some((TABLE_NAME, &b"outpost\0"[..])));
    }

    #[test]
    fn ids_round_trip_as_nft_comments() {
        let ud = userdata_comment("abc").unwrap();
        assert_eq!(ud, [0, 4, b'a', b'b', b'c', 0]);
        assert_eq!(comment(&ud).as_deref(), Some("abc"));
        // Another TLV first (nft may store more than the comment).
        assert_eq!(comment(&[1, 1, 9, 0, 2, b'x', 0]).as_deref(), Some("x"));
        assert_eq!(comment(&[0, 9, b'x']), None, "truncated");
        assert!(userdata_comment("").is_err());
        assert!(userdata_comment(&"a".repeat(128)).is_err());
    }

    #[test]
    fn an_ack_with_an_error_carries_the_kernel_text() {
        let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]); // the request's header
        let mut tlvs = Enc::default();
        tlvs.str(1, "No such chain");
        payload.extend_from_slice(&tlvs.0);
        let e = check_ack("install: add rule", &payload).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let text = e.to_string();
        assert!(text.contains("install: add rule") && text.contains("(No such chain)"), "{text}");
        assert!(check_ack("x", &[0; 20]).is_ok());
    }
}
