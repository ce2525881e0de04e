//! The netlink side of nftables: constants from uapi `linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`, attribute encoding and parsing, and the socket.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::NftError;
use crate::network::subnet::Subnet;

// Netlink and nfnetlink framing.
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 1;
pub(super) const NLM_F_ACK: u16 = 4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub(super) const NFNL_MSG_BATCH_END: u16 = 17;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFPROTO_IPV4: u8 = 2;

// Message types (`NFT_MSG_*`).
pub(super) const NEWTABLE: u8 = 0;
pub(super) const DELTABLE: u8 = 2;
pub(super) const NEWCHAIN: u8 = 3;
pub(super) const GETCHAIN: u8 = 4;
pub(super) const NEWRULE: u8 = 6;
pub(super) const GETRULE: u8 = 7;
pub(super) const DELRULE: u8 = 8;

// Attributes: NFTA_TABLE_*, NFTA_CHAIN_*, NFTA_HOOK_*, NFTA_RULE_*, NFTA_LIST_ELEM,
// NFTA_EXPR_*, NFTA_DATA_*, NFTA_VERDICT_*.
pub(super) const TABLE_NAME: u16 = 1;
pub(super) const CHAIN_TABLE: u16 = 1;
pub(super) const CHAIN_NAME: u16 = 3;
pub(super) const CHAIN_HOOK: u16 = 4;
pub(super) const CHAIN_POLICY: u16 = 5;
pub(super) const CHAIN_TYPE: u16 = 7;
pub(super) const HOOK_HOOKNUM: u16 = 1;
pub(super) const HOOK_PRIORITY: u16 = 2;
pub(super) const RULE_TABLE: u16 = 1;
pub(super) const RULE_CHAIN: u16 = 2;
pub(super) const RULE_HANDLE: u16 = 3;
pub(super) const RULE_EXPRESSIONS: u16 = 4;
pub(super) const RULE_USERDATA: u16 = 7;
pub(super) const LIST_ELEM: u16 = 1;
pub(super) const EXPR_NAME: u16 = 1;
pub(super) const EXPR_DATA: u16 = 2;
pub(super) const DATA_VALUE: u16 = 1;
pub(super) const DATA_VERDICT: u16 = 2;
pub(super) const VERDICT_CODE: u16 = 1;
pub(super) const VERDICT_CHAIN: u16 = 2;

// Netfilter hooks.
pub(super) const PREROUTING: u32 = 0;
pub(super) const INPUT: u32 = 1;
pub(super) const OUTPUT: u32 = 3;
pub(super) const POSTROUTING: u32 = 4;

// Registers, verdicts, payload bases, comparisons, ct keys and bits.
pub(super) const REG_VERDICT: u32 = 0;
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;
pub(super) const NF_DROP: u32 = 0;
pub(super) const NFT_JUMP: u32 = -3i32 as u32;
pub(super) const NETWORK_HEADER: u32 = 1;
pub(super) const TRANSPORT_HEADER: u32 = 2;
pub(super) const CMP_EQ: u32 = 0;
pub(super) const CMP_NEQ: u32 = 1;
pub(super) const CT_STATE: u32 = 0;
pub(super) const CT_STATUS: u32 = 2;
pub(super) const CT_STATE_INVALID: u32 = 1;
pub(super) const CT_STATE_ESTABLISHED_RELATED: u32 = 2 | 4;
pub(super) const IPS_DST_NAT: u32 = 0x20;
pub(super) const IP_SADDR: u32 = 12;
pub(super) const IP_DADDR: u32 = 16;

/// Netlink attributes (type without flags, value) of `buf`, stopping at a malformed one.
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?));
        let ty = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & !NLA_F_NESTED;
        let value = buf.get(4..len)?;
        buf = buf.get(align(len)..).unwrap_or_default();
        Some((ty, value))
    })
}

pub(super) fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attribute encoding onto a buffer; values are big-endian, as nf_tables wants.
#[derive(Default)]
pub(super) struct Enc(pub(super) Vec<u8>);

impl Enc {
    pub(super) fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    pub(super) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        self.attr(ty, &[s.as_bytes(), &[0]].concat())
    }

    pub(super) fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    pub(super) fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.0.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        inner(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// One expression of a rule.
    pub(super) fn expr(&mut self, name: &str, data: impl FnOnce(&mut Self)) -> &mut Self {
        self.nest(LIST_ELEM, |e| {
            e.str(EXPR_NAME, name).nest(EXPR_DATA, data);
        })
    }

    /// Loads `len` bytes at `offset` of a header into register 1.
    pub(super) fn load(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expr("payload", |e| {
            e.be32(1, REG_1).be32(2, base).be32(3, offset).be32(4, len);
        })
    }

    pub(super) fn cmp(&mut self, op: u32, value: &[u8]) -> &mut Self {
        self.expr("cmp", |e| {
            e.be32(1, REG_1).be32(2, op).nest(3, |e| {
                e.attr(DATA_VALUE, value);
            });
        })
    }

    /// Register 1 &= mask.
    pub(super) fn mask(&mut self, mask: &[u8]) -> &mut Self {
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
    pub(super) fn prefix(&mut self, offset: u32, p: Subnet, equal: bool) -> &mut Self {
        self.load(NETWORK_HEADER, offset, 4);
        if p.len < 32 {
            self.mask(&(u32::MAX << (32 - u32::from(p.len))).to_be_bytes());
        }
        self.cmp(if equal { CMP_EQ } else { CMP_NEQ }, &p.addr.octets())
    }

    /// `ct state|status` has any (`set`) or none of `bits` (host byte order, as conntrack).
    pub(super) fn ct_bits(&mut self, key: u32, bits: u32, set: bool) -> &mut Self {
        self.expr("ct", |e| {
            e.be32(1, REG_1).be32(2, key);
        });
        self.mask(&bits.to_ne_bytes()).cmp(if set { CMP_NEQ } else { CMP_EQ }, &[0; 4])
    }

    pub(super) fn immediate(&mut self, reg: u32, value: &[u8]) -> &mut Self {
        self.expr("immediate", |e| {
            e.be32(1, reg).nest(2, |e| {
                e.attr(DATA_VALUE, value);
            });
        })
    }

    pub(super) fn verdict(&mut self, code: u32, chain: Option<&str>) -> &mut Self {
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
pub(super) fn message(
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

/// Messages in a receive buffer: (type, flags, seq, payload).
pub(super) fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
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
pub(super) fn check_ack(what: &str, payload: &[u8]) -> Result<(), NftError> {
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
pub(super) struct Sock(ManuallyDrop<OwnedFd>);

impl Drop for Sock {
    /// Closing a netfilter socket waits for nf_tables' pending destruction of replaced or
    /// deleted objects (`nft_rcv_nl_event` flushes that work, which waits a full RCU grace
    /// period, ~10 ms), and every table install leaves some: the close runs on a short-lived
    /// thread of its own, off the pod start path.
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is never used again.
        let fd = unsafe { ManuallyDrop::take(&mut self.0) };
        let closer = std::thread::Builder::new().name("nft-close".into());
        if let Err(e) = closer.spawn(move || drop(fd)) {
            log::debug!("nftables: closing the socket inline: {e}");
        }
    }
}

impl Sock {
    pub(super) fn open() -> Result<Self, NftError> {
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
        let sock = Sock(ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) }));
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

    pub(super) fn send(&self, op: &'static str, buf: &[u8]) -> Result<(), NftError> {
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

    pub(super) fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: buf is valid and writable for its length.
        let n =
            unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// An nf_tables get request (a dump with NLM_F_DUMP): the attributes of each reply, up
    /// to the dump's end or the ack.
    pub(super) fn query(
        &self,
        op: &'static str,
        ty: u8,
        flags: u16,
        body: impl FnOnce(&mut Enc),
    ) -> Result<Vec<Vec<u8>>, NftError> {
        self.request(op, NFNL_SUBSYS_NFTABLES << 8 | u16::from(ty), flags, body)
    }

    /// [`Sock::query`] for any nfnetlink subsystem: `ty` is `subsystem << 8 | message`.
    pub(super) fn request(
        &self,
        op: &'static str,
        ty: u16,
        flags: u16,
        body: impl FnOnce(&mut Enc),
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let mut req = Enc::default();
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
