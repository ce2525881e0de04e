//! Pod traffic through a host whose FORWARD policy drops (docker sets `iptables -P FORWARD
//! DROP`). An `accept` in outpost's own table cannot undo a `drop` in another base chain on the
//! same hook, so the accept rules go into the chain that drops: iptables-nft's `ip filter
//! FORWARD`. They are written in exactly the encoding `iptables-nft` 1.8.9 itself produces
//! (checked against what it sends): matches as xtables compat `match` expressions
//! (`conntrack` rev 3, `comment` rev 0), a `counter`, and the rule's compat attribute, so
//! `iptables -S`, `iptables-save` and docker keep parsing the table (native nft expressions
//! there make iptables fail with "table `filter' is incompatible, use 'nft' tool").
//!
//! iptables-legacy's chains are invisible to nf_tables: there the operator adds the rules.

use super::wire::*;
use super::{forward_policy_drops, Batch, NftError};
use crate::network::subnet::Subnet;

const TABLE: &str = "filter";
const CHAIN: &str = "FORWARD";
const GETGEN: u8 = 16;
const GEN_ID: u16 = 1;
const NFNL_BATCH_GENID: u16 = 1;
const RULE_COMPAT: u16 = 5;
const NF_ACCEPT: u32 = 1;
// `match` expression attributes (NFTA_MATCH_*).
const MATCH_NAME: u16 = 1;
const MATCH_REV: u16 = 2;
const MATCH_INFO: u16 = 3;
/// `struct xt_comment_info`: `char comment[256]`.
const COMMENT_LEN: usize = 256;
/// `struct xt_conntrack_mtinfo3`, XT_ALIGNed: 8 address/mask pairs (128 bytes), expires min
/// and max, then u16s: l4proto, 4 ports, match_flags (146), invert_flags, state_mask (150), …
const CONNTRACK_INFO_LEN: usize = 168;
const CONNTRACK_MATCH_FLAGS: usize = 146;
const CONNTRACK_STATE_MASK: usize = 150;
/// XT_CONNTRACK_STATE.
const XT_CONNTRACK_STATE: u16 = 1;
/// XT_CONNTRACK_STATE_BIT(IP_CT_ESTABLISHED) | XT_CONNTRACK_STATE_BIT(IP_CT_RELATED).
const STATE_RELATED_ESTABLISHED: u16 = 2 | 4;
/// A concurrent change (docker, iptables) moved the ruleset's generation: look again.
const TRIES: usize = 10;

/// When `ip filter FORWARD` (iptables-nft) drops by policy: inserts at its top, once,
/// `-s SUBNET -j ACCEPT` and `-d SUBNET -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`
/// (the CNI firewall plugin's pair, subnet-wide), each with comment `outpost:<bridge>`;
/// returns whether it added anything. Rules with that comment that differ (another subnet)
/// are replaced, in the same atomic batch.
pub fn allow_forwarding(subnet: Subnet, bridge: &str) -> Result<bool, NftError> {
    let tag = tag(bridge)?;
    if !forward_policy_drops()? {
        return Ok(false);
    }
    let wanted = [accept_from(subnet, &tag), accept_replies_to(subnet, &tag)];
    let sock = Sock::open()?;
    retry_on_new_generation(|| {
        let genid = generation(&sock)?;
        let ours: Vec<Rule> = forward_rules(&sock)?.into_iter().filter(|r| r.tag == tag).collect();
        let present = ours.len() == wanted.len()
            && ours.iter().zip(&wanted).all(|(have, want)| same_rule(&have.exprs, &want.0));
        if present {
            return Ok(false);
        }
        let mut b = batch("allow forwarding", genid);
        delete(&mut b, &ours);
        // Each insert goes to the top: the last one ends up first.
        for rule in wanted.iter().rev() {
            b.push(NEWRULE, NLM_F_CREATE, &format!("insert rule {tag:?}"), |e| {
                e.str(RULE_TABLE, TABLE).str(RULE_CHAIN, CHAIN);
                e.attr(RULE_EXPRESSIONS | NLA_F_NESTED, &rule.0);
                // What iptables-nft keeps of `-p`: no protocol, not inverted.
                e.nest(RULE_COMPAT, |e| {
                    e.be32(1, 0).be32(2, 0);
                });
            });
        }
        b.send(&sock).map(|()| true)
    })
}

/// Removes the rules that [`allow_forwarding`] added for `bridge` (whatever the policy is by
/// now); Ok(0) when none, or no such chain.
pub fn remove_forwarding(bridge: &str) -> Result<usize, NftError> {
    let tag = tag(bridge)?;
    let sock = Sock::open()?;
    retry_on_new_generation(|| {
        let genid = generation(&sock)?;
        let ours: Vec<Rule> = forward_rules(&sock)?.into_iter().filter(|r| r.tag == tag).collect();
        if ours.is_empty() {
            return Ok(0);
        }
        let mut b = batch("remove forwarding", genid);
        delete(&mut b, &ours);
        b.send(&sock).map(|()| ours.len())
    })
}

/// The comment of outpost's rules: `outpost:<bridge>`, at most 255 bytes (xt_comment's).
fn tag(bridge: &str) -> Result<String, NftError> {
    let tag = format!("outpost:{bridge}");
    if bridge.is_empty() || tag.len() >= COMMENT_LEN || bridge.contains('\0') {
        return Err(NftError::Bridge { bridge: bridge.to_string() });
    }
    Ok(tag)
}

/// The expressions of one rule (the inside of NFTA_RULE_EXPRESSIONS).
struct Exprs(Vec<u8>);

/// `-s SUBNET -m comment --comment TAG -j ACCEPT`.
fn accept_from(subnet: Subnet, tag: &str) -> Exprs {
    let mut e = Enc::default();
    address(&mut e, IP_SADDR, subnet);
    comment_match(&mut e, tag);
    accept(&mut e);
    Exprs(e.0)
}

/// `-d SUBNET -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment TAG -j ACCEPT`.
fn accept_replies_to(subnet: Subnet, tag: &str) -> Exprs {
    let mut e = Enc::default();
    address(&mut e, IP_DADDR, subnet);
    let mut info = [0u8; CONNTRACK_INFO_LEN];
    // Host byte order, as the kernel's struct.
    info[CONNTRACK_MATCH_FLAGS..][..2].copy_from_slice(&XT_CONNTRACK_STATE.to_ne_bytes());
    info[CONNTRACK_STATE_MASK..][..2].copy_from_slice(&STATE_RELATED_ESTABLISHED.to_ne_bytes());
    xt_match(&mut e, "conntrack", 3, &info);
    comment_match(&mut e, tag);
    accept(&mut e);
    Exprs(e.0)
}

/// iptables-nft's `-s`/`-d`: a byte-aligned prefix compares only its bytes; any other
/// loads the address, masks and compares.
fn address(e: &mut Enc, offset: u32, s: Subnet) {
    if s.len == 0 {
        return; // 0.0.0.0/0: iptables writes no match
    }
    let bytes = s.addr.octets();
    if s.len.is_multiple_of(8) {
        let n = usize::from(s.len / 8);
        e.load(NETWORK_HEADER, offset, n as u32).cmp(CMP_EQ, &bytes[..n]);
    } else {
        e.prefix(offset, s, true);
    }
}

fn comment_match(e: &mut Enc, tag: &str) {
    let mut info = [0u8; COMMENT_LEN];
    info[..tag.len()].copy_from_slice(tag.as_bytes());
    xt_match(e, "comment", 0, &info);
}

fn xt_match(e: &mut Enc, name: &str, rev: u32, info: &[u8]) {
    e.expr("match", |e| {
        e.str(MATCH_NAME, name).be32(MATCH_REV, rev).attr(MATCH_INFO, info);
    });
}

/// iptables-nft's `counter` (packets, bytes) and `-j ACCEPT`.
fn accept(e: &mut Enc) {
    e.expr("counter", |e| {
        e.attr(1, &0u64.to_be_bytes()).attr(2, &0u64.to_be_bytes());
    });
    e.verdict(NF_ACCEPT, None);
}

/// One expression: name (without NUL) and its data attributes.
type Expr = (Vec<u8>, Vec<(u16, Vec<u8>)>);

fn parse_exprs(buf: &[u8]) -> Vec<Expr> {
    attrs(buf)
        .filter(|(t, _)| *t == LIST_ELEM)
        .map(|(_, el)| {
            let (mut name, mut data) = (Vec::new(), Vec::new());
            for (t, v) in attrs(el) {
                match t {
                    EXPR_NAME => name = v.strip_suffix(&[0]).unwrap_or(v).to_vec(),
                    EXPR_DATA => data = attrs(v).map(|(t, v)| (t, unflagged(v))).collect(),
                    _ => {}
                }
            }
            (name, data)
        })
        .collect()
}

/// `v` with NLA_F_NESTED cleared inside, if it is a list of attributes: the kernel dumps
/// nested verdicts and data without the flag.
fn unflagged(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut rest = v;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < 4 || len > rest.len() {
            return v.to_vec();
        }
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & !NLA_F_NESTED;
        out.extend_from_slice(&rest[..2]);
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&unflagged(&rest[4..len]));
        let next = align(len).min(rest.len());
        out.extend_from_slice(&rest[len..next]);
        rest = &rest[next..];
    }
    if !rest.is_empty() {
        return v.to_vec();
    }
    out
}

/// Whether a rule read back is `want`: the same expressions, each with at least the
/// attributes written (the kernel adds some, e.g. bitwise's op), counters aside.
fn same_rule(have: &[Expr], want: &[u8]) -> bool {
    let uncounted = |x: &&Expr| x.0 != b"counter";
    let want = parse_exprs(want);
    let (have, want): (Vec<&Expr>, Vec<&Expr>) =
        (have.iter().filter(uncounted).collect(), want.iter().filter(uncounted).collect());
    have.len() == want.len()
        && have.iter().zip(&want).all(|(h, w)| h.0 == w.0 && w.1.iter().all(|a| h.1.contains(a)))
}

/// A rule of FORWARD: handle, comment (`-m comment`, or nft's userdata comment), expressions.
struct Rule {
    handle: u64,
    tag: String,
    exprs: Vec<Expr>,
}

fn forward_rules(sock: &Sock) -> Result<Vec<Rule>, NftError> {
    let replies = match sock.query("list chain ip filter FORWARD", GETRULE, NLM_F_DUMP, |e| {
        e.str(RULE_TABLE, TABLE).str(RULE_CHAIN, CHAIN);
    }) {
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
        r => r?,
    };
    let mut rules = Vec::new();
    for m in &replies {
        let (mut handle, mut tag, mut exprs) = (None, None, Vec::new());
        for (t, v) in attrs(m) {
            match t {
                RULE_HANDLE => handle = v.try_into().ok().map(u64::from_be_bytes),
                RULE_USERDATA => tag = tag.or(super::comment(v)),
                RULE_EXPRESSIONS => exprs = parse_exprs(v),
                _ => {}
            }
        }
        tag = tag.or_else(|| xt_comment(&exprs));
        if let (Some(handle), Some(tag)) = (handle, tag) {
            rules.push(Rule { handle, tag, exprs });
        }
    }
    Ok(rules)
}

/// The text of a rule's `-m comment` match.
fn xt_comment(exprs: &[Expr]) -> Option<String> {
    exprs.iter().filter(|(name, _)| name == b"match").find_map(|(_, data)| {
        let attr = |ty| data.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.as_slice());
        if attr(MATCH_NAME)? != b"comment\0" {
            return None;
        }
        let info = attr(MATCH_INFO)?;
        let text = info.split(|b| *b == 0).next()?;
        String::from_utf8(text.to_vec()).ok()
    })
}

/// The ruleset's generation: a batch that carries it is refused (ERESTART) if anything changed
/// since, so what was read still holds when the batch applies.
fn generation(sock: &Sock) -> Result<u32, NftError> {
    let replies = sock.query("get generation", GETGEN, NLM_F_ACK, |_| {})?;
    let id = replies
        .iter()
        .flat_map(|m| attrs(m))
        .find(|(t, _)| *t == GEN_ID)
        .and_then(|(_, v)| v.try_into().ok().map(u32::from_be_bytes))
        .ok_or(NftError::Reply { op: "get generation", what: "no generation id" });
    id
}

fn retry_on_new_generation<T>(mut f: impl FnMut() -> Result<T, NftError>) -> Result<T, NftError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match f() {
            Err(e) if matches!(e.errno(), Some(libc::ERESTART | libc::EINTR)) && tries < TRIES => {}
            r => return r,
        }
    }
}

fn batch(op: &'static str, genid: u32) -> Batch {
    let mut buf = Enc::default();
    message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES, |e| {
        e.be32(NFNL_BATCH_GENID, genid);
    });
    Batch { op, table: TABLE.into(), buf, last: 0, what: vec![format!("{op} ip {TABLE} {CHAIN}")] }
}

fn delete(b: &mut Batch, rules: &[Rule]) {
    for r in rules {
        b.push(DELRULE, 0, &format!("delete rule {} {:?}", r.handle, r.tag), |e| {
            e.str(RULE_TABLE, TABLE)
                .str(RULE_CHAIN, CHAIN)
                .attr(RULE_HANDLE, &r.handle.to_be_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What iptables v1.8.9 sent for the rule (testdata/, captured with strace).
    fn golden(name: &str) -> Vec<u8> {
        let text = match name {
            "replies" => include_str!("testdata/replies-10.1.2.0-24.hex"),
            _ => include_str!("testdata/from-10.1.16.0-20.hex"),
        };
        let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[cfg(target_endian = "little")] // the conntrack match's struct is in host byte order
    #[test]
    fn rules_are_encoded_as_iptables_nft_writes_them() {
        let tag = tag("br0").unwrap();
        let replies = accept_replies_to("10.1.2.0/24".parse().unwrap(), &tag);
        assert_eq!(replies.0, golden("replies"));
        let from = accept_from("10.1.16.0/20".parse().unwrap(), &tag);
        assert_eq!(from.0, golden("from"));
    }

    #[test]
    fn rules_are_recognised_by_their_comment_and_content() {
        let tag = tag("br0").unwrap();
        let s = "10.1.2.0/24".parse().unwrap();
        let exprs = parse_exprs(&accept_replies_to(s, &tag).0);
        let names: Vec<&[u8]> = exprs.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"payload"[..], b"cmp", b"match", b"match", b"counter", b"immediate"]);
        assert_eq!(xt_comment(&exprs).as_deref(), Some("outpost:br0"));
        assert_eq!(
            xt_comment(&parse_exprs(&accept_from(s, &tag).0)).as_deref(),
            Some("outpost:br0")
        );

        assert!(same_rule(&exprs, &accept_replies_to(s, &tag).0));
        // Counters read back are not zero; the kernel adds attributes of its own.
        let mut counted = exprs.clone();
        counted[4].1[0].1 = 7u64.to_be_bytes().to_vec();
        counted[1].1.push((9, vec![1, 2, 3, 4]));
        assert!(same_rule(&counted, &accept_replies_to(s, &tag).0));
        assert!(!same_rule(&exprs, &accept_replies_to("10.1.3.0/24".parse().unwrap(), &tag).0));
        assert!(!same_rule(&exprs, &accept_from(s, &tag).0));
        assert!(!same_rule(&exprs[..5], &accept_replies_to(s, &tag).0));
    }

    #[test]
    fn nested_flags_are_ignored_when_rules_are_compared() {
        let mut flagged = Enc::default();
        flagged.verdict(NF_ACCEPT, None);
        let mut kernels = flagged.0.clone();
        // The verdict's innermost nests, as the kernel dumps them: without the flag.
        for at in [32, 36] {
            kernels[at + 3] &= 0x7f;
        }
        assert_ne!(flagged.0, kernels);
        assert_eq!(parse_exprs(&flagged.0), parse_exprs(&kernels));
        let zeros = [0u8; 8];
        assert_eq!(unflagged(&zeros), zeros, "not attributes: kept as is");
    }

    #[test]
    fn a_bridge_name_must_fit_a_comment() {
        assert_eq!(tag("outpost0").unwrap(), "outpost:outpost0");
        assert!(tag("").is_err());
        assert!(tag("a\0b").is_err());
        assert!(tag(&"a".repeat(247)).is_ok());
        let e = tag(&"a".repeat(248)).unwrap_err();
        assert!(e.to_string().contains("bridge"), "{e}");
    }
}
