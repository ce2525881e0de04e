//! Recognizes and decompresses tar streams by their magic bytes, not by media type or file
//! name: archives and layers lie about both often enough.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Identifies the compression from the first bytes; Err names an unsupported format.
pub fn detect(head: &[u8]) -> Result<Compression, &'static str> {
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => Err("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Err("xz"),
        [0x04, 0x22, 0x4d, 0x18, ..] => Err("lz4"),
        _ => Ok(Compression::None),
    }
}

/// A decompressing reader.
pub type Decoder<'a> = Box<dyn Read + 'a>;

/// Peeks at `reader` and wraps it in the matching decoder.
pub fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
) -> io::Result<Result<(Compression, Decoder<'a>), &'static str>> {
    let kind = match detect(reader.fill_buf()?) {
        Ok(k) => k,
        Err(name) => return Ok(Err(name)),
    };
    let boxed: Decoder<'a> = match kind {
        Compression::None => Box::new(reader),
        // Multi-member: `cat a.gz b.gz` is a valid gzip stream, and pigz writes such files.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdReader::new(reader)),
    };
    Ok(Ok((kind, boxed)))
}

/// zstd decoding across concatenated and skippable frames (zstd:chunked layers use both).
struct ZstdReader<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    fn new(source: R) -> Self {
        ZstdReader { source, decoder: FrameDecoder::new(), in_frame: false }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.in_frame {
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                if self.decoder.is_finished() {
                    self.in_frame = false;
                    continue;
                }
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(io::Error::other)?;
                continue;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped =
                        io::copy(&mut (&mut self.source).take(u64::from(length)), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Ok(Compression::Zstd));
        assert_eq!(detect(b"BZh9"), Err("bzip2"));
        assert_eq!(detect(b"bin/"), Ok(Compression::None));
        assert_eq!(detect(b""), Ok(Compression::None));
    }

    #[test]
    fn zstd_concatenated_and_skippable_frames() {
        let level = ruzstd::encoding::CompressionLevel::Fastest;
        let mut data = ruzstd::encoding::compress_to_vec(&b"hello "[..], level);
        // A skippable frame: magic 0x184D2A50, length 3, payload.
        data.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        data.extend(ruzstd::encoding::compress_to_vec(&b"world"[..], level));
        let mut out = String::new();
        let (kind, mut r) = decompress(&data[..]).unwrap().unwrap();
        assert_eq!(kind, Compression::Zstd);
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
