//! The part of SPDY/3.1 that kubectl's port-forward uses (`k8s.io/apimachinery`'s httpstream
//! on moby/spdystream): frames, and name/value header blocks compressed with zlib and the
//! protocol's dictionary. kubectl opens streams and sends data; the server replies to each
//! new stream, echoes pings and sends data. spdystream does no flow control, so window
//! updates are ignored and none are sent.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// SPDY/3's header compression dictionary (the spec's, byte for byte: 1423 bytes).
const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream was cancelled.
pub const CANCEL: u32 = 5;
/// Larger frames are refused (kubectl sends at most 32 KiB of data per frame).
const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SPDY {0}")]
    Malformed(&'static str),
}

/// One frame received.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        id: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// Settings, window updates, headers, noops: nothing to do.
    Other,
}

/// Reads frames off the byte stream, with the receiving direction's header decompressor.
pub struct Reader {
    input: Vec<u8>,
    inflate: Inflate,
}

impl Reader {
    pub fn new() -> Self {
        Self { input: Vec::new(), inflate: Inflate::new() }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.input.len() < 8 {
            return Ok(None);
        }
        let head = &self.input[..8];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if self.input.len() < 8 + len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.input.drain(..8 + len).collect();
        let (head, body) = frame.split_at(8);
        let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let id = word(head) & 0x7fff_ffff;
            return Ok(Some(Frame::Data { id, fin: flags & FLAG_FIN != 0, data: body.to_vec() }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let id =
            |what| body.get(..4).map(|b| word(b) & 0x7fff_ffff).ok_or(SpdyError::Malformed(what));
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = id("SYN_STREAM")?;
                let block = body.get(10..).ok_or(SpdyError::Malformed("SYN_STREAM"))?;
                let headers = parse_headers(&self.inflate.inflate(block)?)?;
                Frame::SynStream { id, headers }
            }
            RST_STREAM => Frame::RstStream { id: id("RST_STREAM")? },
            PING => {
                Frame::Ping { id: body.get(..4).map(word).ok_or(SpdyError::Malformed("PING"))? }
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }
}

/// A name/value block: count, then length-prefixed names and values (32-bit big-endian).
fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Malformed("header block");
    let mut pos = 0;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = block.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = word(take(4)?);
        // Several values of one name are NUL-separated; port-forward's have one.
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// The receiving direction's zlib stream: one for the whole connection, primed with the
/// dictionary, each header block ending at a sync flush.
struct Inflate {
    state: Box<DecompressorOxide>,
    /// The 32 KiB window, used as a ring; starts with the dictionary in it.
    window: Vec<u8>,
    pos: usize,
    /// The zlib header (and dictionary id) not yet skipped.
    header: usize,
}

const WINDOW: usize = 32 * 1024;

impl Inflate {
    fn new() -> Self {
        let mut window = vec![0u8; WINDOW];
        window[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        Self { state: Box::default(), window, pos: DICTIONARY.len(), header: 2 }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let bad = SpdyError::Malformed("header compression");
        while self.header > 0 && !input.is_empty() {
            // CMF, FLG (with FDICT set, the 4-byte dictionary id follows): raw deflate after.
            if self.header == 1 && input[0] & 0x20 != 0 {
                self.header += 4;
            }
            input = &input[1..];
            self.header -= 1;
        }
        let mut out = Vec::new();
        loop {
            let (status, used, written) = decompress(
                &mut self.state,
                input,
                &mut self.window,
                self.pos,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            out.extend_from_slice(&self.window[self.pos..self.pos + written]);
            self.pos = (self.pos + written) & (WINDOW - 1);
            input = &input[used..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if input.is_empty() => {
                    return Ok(out)
                }
                TINFLStatus::NeedsMoreInput if used + written > 0 => continue,
                _ => return Err(bad),
            }
        }
    }
}

/// Encodes the frames the server sends. Header blocks are "compressed" as stored deflate
/// blocks in the one zlib stream of this direction: valid for any inflater, no compressor.
pub struct Writer {
    zlib_started: bool,
}

impl Writer {
    pub fn new() -> Self {
        Self { zlib_started: false }
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + body.len());
        f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(body);
        f
    }

    /// SYN_REPLY with no headers: the stream is accepted.
    pub fn syn_reply(&mut self, id: u32) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        let block = 0u32.to_be_bytes();
        if !self.zlib_started {
            // zlib header without a preset dictionary (CMF 0x78, FLG 0x01: check bits only).
            body.extend_from_slice(&[0x78, 0x01]);
            self.zlib_started = true;
        }
        // A non-final stored block: BFINAL 0, BTYPE 00, then LEN and its complement.
        body.push(0);
        let len = block.len() as u16;
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&(!len).to_le_bytes());
        body.extend_from_slice(&block);
        // And an empty one, as zlib's sync flush ends: Go's inflater hands out a stored
        // block's bytes only once the next block starts.
        body.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        Self::control(SYN_REPLY, 0, &body)
    }

    pub fn ping(id: u32) -> Vec<u8> {
        Self::control(PING, 0, &id.to_be_bytes())
    }

    pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&status.to_be_bytes());
        Self::control(RST_STREAM, 0, &body)
    }

    pub fn data(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        f.push(if fin { FLAG_FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header_block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            b.extend_from_slice(&(k.len() as u32).to_be_bytes());
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The zlib dictionary id every SPDY/3 peer sends in its first header block.
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &byte in DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    /// Two SYN_STREAMs compressed as Go does (one zlib stream with the dictionary, a sync
    /// flush per block), here with zlib's own raw deflate and the dictionary as history.
    #[test]
    fn reads_syn_streams_compressed_against_the_dictionary() {
        use flate2::{Compress, Compression, FlushCompress};
        let mut z = Compress::new(Compression::best(), false);
        // Prime the raw deflater's history the way a preset dictionary does: compress it and
        // drop that output; the peer's inflater starts from the same window.
        let mut sink = vec![0u8; 4096];
        z.compress(DICTIONARY, &mut sink, FlushCompress::Sync).unwrap();
        let _ = z.total_out();
        let mut frames = Vec::new();
        let mut first = true;
        for (id, kind) in [(1u32, "error"), (3, "data")] {
            let block = header_block(&[("streamType", kind), ("port", "80"), ("requestID", "0")]);
            let mut out = vec![0u8; 4096];
            let before = z.total_out();
            z.compress(&block, &mut out, FlushCompress::Sync).unwrap();
            let mut compressed = out[..(z.total_out() - before) as usize].to_vec();
            if first {
                // zlib header with FDICT and the dictionary id.
                let mut h = vec![0x78, 0xbb];
                h.extend_from_slice(&0xe3c6_a7c2u32.to_be_bytes());
                h.extend(compressed);
                compressed = h;
                first = false;
            }
            let mut body = id.to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            body.extend(compressed);
            frames.write_all(&Writer::control(SYN_STREAM, 0, &body)).unwrap();
        }
        let mut r = Reader::new();
        // Byte by byte: frames split anywhere still parse.
        let mut got = Vec::new();
        for b in frames {
            r.push(&[b]);
            while let Some(f) = r.next().unwrap() {
                got.push(f);
            }
        }
        let want = |id, kind: &str| Frame::SynStream {
            id,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), "80".into()),
                ("requestid".into(), "0".into()),
            ],
        };
        assert_eq!(got, vec![want(1, "error"), want(3, "data")]);
    }

    #[test]
    fn replies_are_valid_zlib_for_any_inflater() {
        let mut w = Writer::new();
        let (a, b) = (w.syn_reply(1), w.syn_reply(3));
        let mut stream = a[12..].to_vec();
        stream.extend_from_slice(&b[12..]);
        let mut d = flate2::Decompress::new(true);
        let mut out = vec![0u8; 64];
        d.decompress(&stream, &mut out, flate2::FlushDecompress::Sync).unwrap();
        assert_eq!(d.total_out(), 8, "two empty header blocks");
        assert_eq!(&out[..8], &[0u8; 8]);
    }
}
