//! Container output → CRI log files (`<rfc3339nano> <stream> <F|P> <content>`), rotated by size
//! as they are written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::runtime::timefmt::rfc3339_nanos;
use crate::runtime::types::LogOptions;

/// Longest content of one log line; longer lines are cut into `P` (partial) chunks, like
/// containerd's 16 KiB default.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One instance's log file (both streams), with size-based rotation:
/// `N.log` is current, `N.log.1` the newest rotated, up to `N.log.<max_files - 1>`.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    options: LogOptions,
    warned: bool,
}

impl LogFile {
    pub fn open(path: &Path, options: LogOptions) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_path_buf(), file: Some(file), size, options, warned: false })
    }

    /// Appends one record; `content` has no newline.
    pub fn write_record(
        &mut self,
        time: SystemTime,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) {
        let tag = if partial { "P" } else { "F" };
        let mut line = format!("{} {} {tag} ", rfc3339_nanos(time), stream.as_str()).into_bytes();
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.options.max_size {
            self.rotate();
        }
        let result = match &mut self.file {
            Some(f) => f.write_all(&line),
            None => Err(std::io::Error::other("log file not open")),
        };
        match result {
            Ok(()) => self.size += line.len() as u64,
            Err(e) if !self.warned => {
                log::warn!("cannot write log {}: {e}; dropping output", self.path.display());
                self.warned = true;
            }
            Err(_) => {}
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) {
        self.file = None;
        let keep = self.options.max_files.max(1) - 1;
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(keep));
            for n in (1..keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            let _ = std::fs::rename(&self.path, self.rotated(1));
        }
        self.size = 0;
        match OpenOptions::new().create(true).append(true).open(&self.path) {
            Ok(f) => self.file = Some(f),
            Err(e) => log::warn!("cannot reopen log {}: {e}", self.path.display()),
        }
    }
}

/// Splits a stream into CRI records: complete lines as `F`, lines longer than [`MAX_LINE`] as
/// `P` chunks, and keeps an unfinished line until its newline, EOF or [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(partial, content)` for each record ready.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&data[..i], &data[i + 1..]);
            if self.pending.is_empty() {
                emit_line(line, emit);
            } else {
                self.pending.extend_from_slice(line);
                let whole = std::mem::take(&mut self.pending);
                emit_line(&whole, emit);
            }
            data = rest;
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE {
            emit(true, &self.pending[..MAX_LINE]);
            self.pending.drain(..MAX_LINE);
        }
    }

    /// What is pending now, as a partial record: a terminal's prompt or echo has no newline
    /// yet, and a reader following the log (attach) must see it now.
    pub fn flush_partial(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &std::mem::take(&mut self.pending));
        }
    }

    /// At EOF an unfinished last line is a full record.
    pub fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(false, &std::mem::take(&mut self.pending));
        }
    }
}

fn emit_line(mut line: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
    while line.len() > MAX_LINE {
        emit(true, &line[..MAX_LINE]);
        line = &line[MAX_LINE..];
    }
    emit(false, line);
}

/// The read end of a container's stdout or stderr pipe.
pub struct LogPipe {
    pub fd: OwnedFd,
    pub stream: Stream,
    pub splitter: LineSplitter,
    /// Key of the instance whose log file this feeds.
    pub instance: String,
    /// A terminal's master: an unfinished line is written as a partial record as soon as
    /// what is there has been read, not at its newline.
    pub terminal: bool,
}

/// Result of reading a pipe until it would block.
pub enum Pumped {
    Open,
    Eof,
}

impl LogPipe {
    /// Reads what is available (bounded, so one chatty container cannot starve the loop) and
    /// writes it to `file`.
    pub fn pump(&mut self, file: &mut LogFile) -> Pumped {
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..16 {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    let now = SystemTime::now();
                    let stream = self.stream;
                    self.splitter.finish(&mut |p, c| file.write_record(now, stream, p, c));
                    return Pumped::Eof;
                }
                Ok(n) => {
                    let now = SystemTime::now();
                    let stream = self.stream;
                    self.splitter.feed(&buf[..n], &mut |p, c| file.write_record(now, stream, p, c));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    if self.terminal {
                        let (now, stream) = (SystemTime::now(), self.stream);
                        self.splitter
                            .flush_partial(&mut |p, c| file.write_record(now, stream, p, c));
                    }
                    return Pumped::Open;
                }
                // A terminal's master once every holder of the terminal closed it.
                Err(nix::errno::Errno::EIO) => {
                    let now = SystemTime::now();
                    let stream = self.stream;
                    self.splitter.finish(&mut |p, c| file.write_record(now, stream, p, c));
                    return Pumped::Eof;
                }
                Err(e) => {
                    log::warn!("read log pipe of {}: {e}", self.instance);
                    return Pumped::Eof;
                }
            }
        }
        Pumped::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], eof: bool) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.feed(c, &mut |p, c| out.push((p, c.to_vec())));
        }
        if eof {
            s.finish(&mut |p, c| out.push((p, c.to_vec())));
        }
        out
    }

    #[test]
    fn lines_partials_and_eof() {
        assert_eq!(
            split(&[b"a\nb", b"c\n"], false),
            vec![(false, b"a".to_vec()), (false, b"bc".to_vec())]
        );
        assert_eq!(split(&[b"x"], false), vec![]);
        assert_eq!(split(&[b"x"], true), vec![(false, b"x".to_vec())]);
        assert_eq!(split(&[b"\n"], false), vec![(false, b"".to_vec())]);
    }

    #[test]
    fn a_flush_writes_the_unfinished_line_as_a_partial_record() {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut emit = |p: bool, c: &[u8]| out.push((p, c.to_vec()));
        s.feed(b"hello\n/ # ", &mut emit);
        s.flush_partial(&mut emit);
        s.flush_partial(&mut emit);
        s.feed(b"ls\n", &mut emit);
        assert_eq!(
            out,
            vec![(false, b"hello".to_vec()), (true, b"/ # ".to_vec()), (false, b"ls".to_vec())]
        );
    }

    #[test]
    fn long_lines_become_partial_chunks() {
        let long = vec![b'z'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input], false);
        let tags: Vec<(bool, usize)> = out.iter().map(|(p, c)| (*p, c.len())).collect();
        assert_eq!(tags, vec![(true, MAX_LINE), (true, MAX_LINE), (false, 5)]);
        // Unfinished long output is flushed as partial chunks without waiting for a newline.
        let out = split(&[&long], false);
        let tags: Vec<(bool, usize)> = out.iter().map(|(p, c)| (*p, c.len())).collect();
        assert_eq!(tags, vec![(true, MAX_LINE), (true, MAX_LINE)]);
    }

    #[test]
    fn rotates_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut f = LogFile::open(&path, LogOptions { max_size: 100, max_files: 3 }).expect("open");
        let t = SystemTime::UNIX_EPOCH;
        // Each record is 50 bytes (30 timestamp + ` stdout F ` + 9 + newline): two per file.
        for i in 0..7u8 {
            f.write_record(t, Stream::Stdout, false, &[b'0' + i; 9]);
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(path.clone()), "1970-01-01T00:00:00.000000000Z stdout F 666666666\n");
        assert_eq!(
            read(dir.path().join("0.log.1")),
            "1970-01-01T00:00:00.000000000Z stdout F 444444444\n1970-01-01T00:00:00.000000000Z stdout F 555555555\n"
        );
        assert!(dir.path().join("0.log.2").exists());
        assert!(!dir.path().join("0.log.3").exists());
    }
}
