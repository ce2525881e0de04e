//! Unmapping the binary's code a process is not running. The agent, every supervisor and every
//! pause map the same 8 MB executable, and all of it that start-up, parsing and libcontainer
//! ever touched stays mapped for the process's life (6 MB of text in an idle agent, 5 MB in
//! each supervisor): PSS splits those pages between the processes, but their union is what the
//! device pays, and mapped executable pages are the last the kernel reclaims. An idle process
//! runs a few hundred KB of it.
//!
//! `MADV_DONTNEED` on a private file mapping drops the page-table entries; the pages stay in
//! the page cache (reclaimable) and the next touch maps them back with a minor fault. It is
//! lossless only where the process never wrote (no copy-on-write page): relocated read-only
//! data (`.data.rel.ro`) is written at start-up, so only the binary's mappings without a single
//! anonymous page qualify.

/// Address ranges of this executable's mappings that hold no private (written) page. At most
/// `N`, with no allocation after the `/proc` read, so the pause can be handed a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodeRanges {
    ranges: [(usize, usize); Self::N],
}

impl CodeRanges {
    const N: usize = 4;

    /// Reads `/proc/self/smaps`: the mappings of the file this function's code lives in, not
    /// writable, with `Anonymous: 0 kB`.
    pub fn of_self() -> Self {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        Self::parse(&smaps, Self::of_self as fn() -> Self as usize)
    }

    fn parse(smaps: &str, code_address: usize) -> Self {
        let mappings = mappings(smaps);
        let Some(file) = mappings
            .iter()
            .find(|m| (m.start..m.end).contains(&code_address))
            .map(|m| m.file)
            .filter(|f| !f.is_empty())
        else {
            return Self::default();
        };
        let mut out = Self::default();
        let clean = mappings
            .iter()
            .filter(|m| m.file == file && !m.writable && m.anonymous_kb == Some(0))
            .map(|m| (m.start, m.end));
        for (slot, range) in out.ranges.iter_mut().zip(clean) {
            *slot = range;
        }
        out
    }

    /// Drops the ranges' page-table entries.
    ///
    /// Safe in any process, on any thread: the ranges hold no written page, so nothing is
    /// lost; a thread running code there faults it back in. Calls nothing but `madvise`, so
    /// the pause may call it with a copy made before it lost `/proc` and its heap.
    pub fn unmap(&self) {
        for &(start, end) in &self.ranges {
            if end > start {
                // SAFETY: a range of this process's own file-backed, never-written mappings
                // (see above): MADV_DONTNEED repopulates them from the file on next access.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
        }
    }

    /// Total bytes covered (for tests and logs).
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads this process's smaps and unmaps its clean code pages: for a long-lived process when
/// idle.
pub fn unmap_idle_code() {
    CodeRanges::of_self().unmap();
}

struct Mapping<'a> {
    start: usize,
    end: usize,
    writable: bool,
    /// `dev inode` of the backing file; empty for anonymous memory.
    file: &'a str,
    anonymous_kb: Option<u64>,
}

/// smaps: a header line per mapping (`start-end perms offset dev inode path`), then
/// `Key: value` lines.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(m) = out.last_mut() {
                m.anonymous_kb = kb.trim().trim_end_matches("kB").trim().parse().ok();
            }
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| {
            Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
        }) else {
            continue;
        };
        let file = if inode == "0" {
            ""
        } else {
            // `dev inode` as one slice of the line.
            let from = line.find(dev).unwrap_or(0);
            &line[from..from + dev.len() + 1 + inode.len()]
        };
        out.push(Mapping {
            start,
            end,
            writable: perms.as_bytes().get(1) == Some(&b'w'),
            file,
            anonymous_kb: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d000000000-55d000100000 r--p 00000000 00:28 5368439                    /outpost
Rss:                 100 kB
Anonymous:             0 kB
55d000100000-55d000700000 r-xp 00100000 00:28 5368439                    /outpost
Rss:                5000 kB
Anonymous:             0 kB
55d000700000-55d000750000 r--p 00700000 00:28 5368439                    /outpost
Anonymous:           300 kB
55d000750000-55d000760000 rw-p 00750000 00:28 5368439                    /outpost
Anonymous:            64 kB
55d000760000-55d000770000 rw-p 00000000 00:00 0
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00026000 fe:00 326279                     /usr/lib/libc.so.6
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_never_written_mappings_qualify() {
        let r = CodeRanges::parse(SMAPS, 0x55d000200000);
        // The header and text, not the relocated read-only data (written at start-up), not
        // .data, not libc.
        assert_eq!(r.ranges[0], (0x55d000000000, 0x55d000100000));
        assert_eq!(r.ranges[1], (0x55d000100000, 0x55d000700000));
        assert_eq!(r.len(), 0x700000);
    }

    #[test]
    fn an_address_outside_any_file_mapping_gives_nothing() {
        assert!(CodeRanges::parse(SMAPS, 0x55d000765000).is_empty());
        assert!(CodeRanges::parse(SMAPS, 0x1000).is_empty());
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_not_trusted() {
        let smaps = "55d000100000-55d000700000 r-xp 00100000 00:28 5 /outpost\n";
        assert!(CodeRanges::parse(smaps, 0x55d000200000).is_empty());
    }

    /// Resident KB of this executable's mappings in `ranges`.
    fn resident_kb(ranges: &CodeRanges) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut inside, mut total) = (false, 0);
        for line in smaps.lines() {
            if let Some((a, _)) = line.split_once(' ').and_then(|(r, _)| r.split_once('-')) {
                if let Ok(start) = usize::from_str_radix(a, 16) {
                    inside = ranges.ranges.iter().any(|&(s, e)| s <= start && start < e);
                    continue;
                }
            }
            if let (true, Some(kb)) = (inside, line.strip_prefix("Rss:")) {
                total += kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
            }
        }
        total
    }

    #[test]
    fn this_process_unmaps_its_code_and_keeps_running_it() {
        let r = CodeRanges::of_self();
        assert!(!r.is_empty(), "no clean mapping of the test binary found");
        let before = resident_kb(&r);
        r.unmap();
        let after = resident_kb(&r);
        // Reading smaps maps some code back in, far from all of it.
        assert!(after < before / 2, "resident {before} kB before, {after} kB after");
        // Code and read-only data still work: they came back from the file.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
