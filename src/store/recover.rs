//! Damage a power cut (or a careless hand) leaves in the state database, found before SQLite
//! hides it: SQLite deletes a WAL beside a 0-byte database, and silently drops every WAL frame
//! from the first bad checksum on, committed or not. A damaged set of files is moved aside for
//! inspection; the agent starts a fresh database and rebuilds from what runs.

use std::path::{Path, PathBuf};

/// SQLite's companion files of a WAL-mode database.
pub(super) fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// What is wrong with the files as they are on disk, before SQLite opens them.
pub(super) fn inspect(path: &Path) -> Option<String> {
    let wal = companion(path, "-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    let mut head = Vec::with_capacity(16);
    match std::fs::File::open(path) {
        Ok(f) => {
            use std::io::Read;
            // Unreadable: SQLite's open reports it, naming the path.
            f.take(16).read_to_end(&mut head).ok()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (wal_len > 0).then(|| "the database file is missing beside its WAL".into());
        }
        Err(_) => return None,
    }
    if head.is_empty() {
        return Some("the database file is empty (truncated to 0 bytes)".into());
    }
    if head != b"SQLite format 3\0" {
        return Some("the database file has no SQLite header".into());
    }
    let wal_bytes = if wal_len > 0 { std::fs::read(&wal).ok()? } else { Vec::new() };
    wal_damage(&wal_bytes)
}

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// A WAL loses committed transactions when its header is broken while it holds frames, or when
/// a frame fails its checksum and a commit frame of the same generation (same salts) follows:
/// SQLite replays only up to the bad frame. A bad frame at the tail is the normal trace of a
/// crash in the middle of a transaction that never committed; stale frames of an older
/// generation (other salts) after a checkpoint are normal too.
pub(super) fn wal_damage(wal: &[u8]) -> Option<String> {
    if wal.len() < WAL_HEADER + FRAME_HEADER + 512 {
        // Too short to hold one frame: nothing committed can be lost.
        return None;
    }
    let be = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let magic = be(wal, 0);
    let page = be(wal, 8) as usize;
    let valid_page = (512..=65536).contains(&page) && page.is_power_of_two();
    if magic & !1 != 0x377f_0682 || be(wal, 4) != 3_007_000 || !valid_page {
        return Some("the WAL header is not a WAL header: every transaction in it is lost".into());
    }
    let big_endian = magic & 1 == 1;
    let sum = checksum(&wal[..24], (0, 0), big_endian);
    if sum != (be(wal, 24), be(wal, 28)) {
        return Some("the WAL header fails its checksum: every transaction in it is lost".into());
    }
    let salts = (be(wal, 16), be(wal, 20));
    let frame = FRAME_HEADER + page;
    let frames = (wal.len() - WAL_HEADER) / frame;
    let mut sum = sum;
    for i in 0..frames {
        let f = &wal[WAL_HEADER + i * frame..WAL_HEADER + (i + 1) * frame];
        let same_generation = (be(f, 8), be(f, 12)) == salts;
        let next = checksum(&f[FRAME_HEADER..], checksum(&f[..8], sum, big_endian), big_endian);
        if same_generation && be(f, 0) != 0 && next == (be(f, 16), be(f, 20)) {
            sum = next;
            continue;
        }
        // Frame i ends the log SQLite replays; a commit of this generation after it is lost.
        let lost = (i + 1..frames).any(|j| {
            let g = &wal[WAL_HEADER + j * frame..];
            (be(g, 8), be(g, 12)) == salts && be(g, 4) != 0
        });
        return lost.then(|| {
            format!("WAL frame {i} is torn and committed frames follow it: they are lost")
        });
    }
    None
}

/// SQLite's WAL checksum: two running sums over 32-bit words in the WAL's byte order.
fn checksum(data: &[u8], (mut s1, mut s2): (u32, u32), big_endian: bool) -> (u32, u32) {
    let word = |c: &[u8]| {
        let b = [c[0], c[1], c[2], c[3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// Moves the database and its `-wal`/`-shm` to `<path>.damaged-<unix time>` (with the same
/// suffixes, so `sqlite3` opens the set as it was). Returns the new database path.
pub(super) fn move_aside(path: &Path, unix: i64) -> std::io::Result<PathBuf> {
    let base = |n: u32| {
        let tail = if n == 0 { String::new() } else { format!(".{n}") };
        companion(path, &format!(".damaged-{unix}{tail}"))
    };
    let mut n = 0;
    while [base(n), companion(&base(n), "-wal")].iter().any(|p| p.symlink_metadata().is_ok()) {
        n += 1;
    }
    let aside = base(n);
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::rename(companion(path, suffix), companion(&aside, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    prune(path);
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}

/// Sets kept aside; older ones are deleted so that repeated damage cannot fill a device.
pub(super) const KEPT: usize = 3;

/// Deletes all but the newest [`KEPT`] sets (by time, then by the same-second counter).
fn prune(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!("{}.damaged-", name.to_string_lossy());
    let Ok(entries) =
        std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    else {
        return;
    };
    let mut sets: Vec<((u64, u32), PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let tail = file.strip_prefix(&prefix)?;
            if tail.ends_with("-wal") || tail.ends_with("-shm") {
                return None;
            }
            let (unix, n) = tail.split_once('.').unwrap_or((tail, "0"));
            Some(((unix.parse().ok()?, n.parse().ok()?), e.path()))
        })
        .collect();
    sets.sort();
    let excess = sets.len().saturating_sub(KEPT);
    for (_, set) in sets.drain(..excess) {
        for suffix in ["", "-wal", "-shm"] {
            let file = companion(&set, suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("removing {}: {e}", file.display()),
            }
        }
        log::info!("state database: removed {} (only the newest {KEPT} are kept)", set.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 512;

    /// A WAL as SQLite writes it: `frames` pages, the last one a commit; `big_endian` picks the
    /// checksum byte order (the magic's low bit).
    fn wal(frames: usize, big_endian: bool) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend(((0x377f_0682u32) | u32::from(big_endian)).to_be_bytes());
        w.extend(3_007_000u32.to_be_bytes());
        w.extend((PAGE as u32).to_be_bytes());
        w.extend(0u32.to_be_bytes());
        w.extend([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]); // salts
        let mut sum = checksum(&w, (0, 0), big_endian);
        w.extend(sum.0.to_be_bytes());
        w.extend(sum.1.to_be_bytes());
        for i in 0..frames {
            let mut head = Vec::new();
            head.extend((i as u32 + 1).to_be_bytes());
            head.extend(if i + 1 == frames { frames as u32 } else { 0 }.to_be_bytes());
            let page = vec![i as u8 + 1; PAGE];
            sum = checksum(&page, checksum(&head, sum, big_endian), big_endian);
            head.extend_from_slice(&w[16..24]);
            head.extend(sum.0.to_be_bytes());
            head.extend(sum.1.to_be_bytes());
            w.extend(head);
            w.extend(page);
        }
        w
    }

    fn frame_page(i: usize) -> usize {
        WAL_HEADER + i * (FRAME_HEADER + PAGE) + FRAME_HEADER
    }

    #[test]
    fn a_whole_wal_is_no_damage_in_either_byte_order() {
        for big_endian in [false, true] {
            assert_eq!(wal_damage(&wal(3, big_endian)), None, "big endian: {big_endian}");
        }
    }

    #[test]
    fn a_torn_frame_before_a_commit_is_damage_in_either_byte_order() {
        for big_endian in [false, true] {
            let mut w = wal(3, big_endian);
            w[frame_page(1) + 7] ^= 0xff;
            assert_eq!(
                wal_damage(&w).as_deref(),
                Some("WAL frame 1 is torn and committed frames follow it: they are lost"),
                "big endian: {big_endian}"
            );
        }
    }

    #[test]
    fn a_torn_commit_frame_at_the_tail_is_a_crash() {
        let mut w = wal(3, false);
        w[frame_page(2) + 7] ^= 0xff;
        assert_eq!(wal_damage(&w), None);
        // Half a frame written: the same.
        let w = wal(3, false);
        assert_eq!(wal_damage(&w[..frame_page(2) + 100]), None);
    }

    #[test]
    fn stale_frames_of_an_older_generation_are_no_damage() {
        let mut w = wal(3, false);
        // A checkpoint restarted the log with new salts; frame 2 is left from before.
        let older = WAL_HEADER + 2 * (FRAME_HEADER + PAGE);
        w[older + 8..older + 16].copy_from_slice(&[9; 8]);
        w[older + 4..older + 8].copy_from_slice(&3u32.to_be_bytes());
        // Frame 1 is then this generation's commit.
        let mut fresh = wal(2, false);
        fresh.extend_from_slice(&w[older..]);
        assert_eq!(wal_damage(&fresh), None);
    }

    #[test]
    fn a_broken_header_is_damage_once_frames_follow() {
        let mut w = wal(3, false);
        w[18] ^= 1; // a salt: the header checksum fails
        assert_eq!(
            wal_damage(&w).as_deref(),
            Some("the WAL header fails its checksum: every transaction in it is lost")
        );
        assert_eq!(wal_damage(&w[..WAL_HEADER + 10]), None, "no frame, nothing lost");
        assert_eq!(wal_damage(&[]), None);
    }
}
