//! One route netlink socket: requests framed with sequence numbers, replies read until the
//! ack or the end of a dump, the kernel's extended-ack text kept for errors.

use super::*;

/// The socket and the last sequence number used.
pub(super) struct Conn {
    pub(super) sock: Socket,
    pub(super) seq: u32,
}

impl Conn {
    pub(super) fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = NetlinkMessage::from(msg);
        m.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        m.header.sequence_number = self.seq;
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        loop {
            match self.sock.send(&buf, 0) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map(|_| self.seq),
            }
        }
    }

    /// Reads replies to request `seq` until its end. Replies to earlier requests (one that
    /// failed while a dump was still arriving) are skipped by their sequence number.
    pub(super) fn receive(
        &mut self,
        seq: u32,
        what: &dyn Fn() -> String,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Result<(), RtnlError> {
        let bad = |message: String| RtnlError::Reply { what: what(), message };
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
        let mut interrupted = false;
        loop {
            buf.clear();
            let n = match self.sock.recv(&mut buf, libc::MSG_TRUNC) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(RtnlError::Socket { what: what(), error }),
                Ok(n) => n,
            };
            if n > buf.len() {
                return Err(bad(format!(
                    "a datagram of {n} bytes exceeds the {RECV_BUFFER}-byte buffer"
                )));
            }
            let mut rest = &buf[..];
            while !rest.is_empty() {
                let (len, kind, flags, reply_seq) = match NetlinkBuffer::new_checked(rest) {
                    Ok(b) => {
                        (b.length() as usize, b.message_type(), b.flags(), b.sequence_number())
                    }
                    // A malformed datagram: its other messages are lost, the end may be too.
                    Err(e) => return Err(bad(e.to_string())),
                };
                let (this, next) = rest.split_at(len.next_multiple_of(4).min(rest.len()));
                rest = next;
                if reply_seq != seq {
                    continue;
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                let payload = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                    Ok(m) => m.payload,
                    Err(e) if kind == NLMSG_ERROR || kind == NLMSG_DONE => {
                        return Err(bad(e.to_string()))
                    }
                    // One message this crate cannot decode (an attribute newer than it): the
                    // rest of the answer is still good.
                    Err(e) => {
                        log::warn!("{}: skipped an undecodable reply: {e}", what());
                        continue;
                    }
                };
                let refused = |code: i32, ext_ack: Option<String>| RtnlError::Refused {
                    what: what(),
                    errno: Errno::from_raw(code.abs()),
                    message: ext_ack,
                };
                return match payload {
                    NetlinkPayload::InnerMessage(m) => {
                        each(m);
                        continue;
                    }
                    NetlinkPayload::Error(e) => match e.code {
                        None => Ok(()),
                        Some(code) => Err(refused(code.get(), ext_ack_text(flags, &e.header))),
                    },
                    NetlinkPayload::Done(d) if d.code != 0 => {
                        // A dump's TLVs follow its code directly.
                        let text = (flags & NLM_F_ACK_TLVS != 0)
                            .then(|| nla_text(&d.extended_ack))
                            .flatten();
                        Err(refused(d.code, text))
                    }
                    NetlinkPayload::Done(_) if interrupted => Err(refused(
                        libc::EINTR,
                        Some("dump interrupted by a concurrent change".into()),
                    )),
                    NetlinkPayload::Done(_) => Ok(()),
                    _ => continue,
                };
            }
        }
    }
}

/// The kernel's extended-ack text in an `NLMSG_ERROR` payload after its code: the request's
/// header (all of the request unless `NLM_F_CAPPED`), then attributes if `NLM_F_ACK_TLVS`.
pub(super) fn ext_ack_text(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    nla_text(payload.get(echoed.next_multiple_of(4)..)?)
}

fn nla_text(attrs: &[u8]) -> Option<String> {
    NlasIterator::new(attrs)
        .map_while(Result::ok)
        .find(|a| a.kind() == NLMSGERR_ATTR_MSG)
        .map(|a| String::from_utf8_lossy(a.value()).trim_end_matches('\0').to_string())
}
