//! The host ids pods with `hostUsers: false` run as (the kubelet's user namespace manager):
//! each such pod gets its own block of [`IDS_PER_POD`] uids and gids, aligned to a multiple
//! of it, out of a pool. Container id `n` is host id `first + n`, for uids and gids alike.
//!
//! The pool is, in this order: `--userns-pool`, else the `outpost` user's entries in
//! `/etc/subuid` and `/etc/subgid` (the kubelet reads the `kubelet` user's; both files must
//! give the same range), else [`Pool::DEFAULT`]. A leaf module: no I/O but [`Pool::configured`].

use std::fmt;
use std::str::FromStr;

/// Ids of one pod: container ids 0..65535, the kubelet's fixed length.
pub const IDS_PER_POD: u32 = 65536;

/// The user whose `/etc/subuid` and `/etc/subgid` entries give the pool.
pub const SUBID_USER: &str = "outpost";

/// A range of host ids, `first..first + len`, split into blocks of [`IDS_PER_POD`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    first: u32,
    len: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The range does not split into whole, aligned blocks, or reaches host root's ids.
    #[error("id range {first}:{len}: {why}")]
    Range { first: u64, len: u64, why: &'static str },
    /// Not `FIRST:COUNT`.
    #[error("{text:?}: expected FIRST:COUNT (as in /etc/subuid), e.g. 1879048192:67108864")]
    Syntax { text: String },
    /// `/etc/subuid` and `/etc/subgid` disagree for the user.
    #[error("/etc/subuid gives {user} {uids} but /etc/subgid {gids}: give both the same range, or set --userns-pool")]
    Mismatch { user: String, uids: String, gids: String },
}

impl Pool {
    /// 1024 pods' ids from 0x70000000: above the range systemd leaves to containers
    /// (`systemd-nspawn --private-users=pick`: 0x80000–0x6FFFFFFF) and below its foreign range
    /// (0x7FFE0000) and 2^31 (ids some tools read as negative); far from login users.
    pub const DEFAULT: Pool = Pool { first: 0x7000_0000, len: 1024 * IDS_PER_POD };

    pub fn new(first: u64, len: u64) -> Result<Self, PoolError> {
        let err = |why| Err(PoolError::Range { first, len, why });
        let block = u64::from(IDS_PER_POD);
        if len == 0 || !len.is_multiple_of(block) {
            return err("the count must be a non-zero multiple of 65536");
        }
        if !first.is_multiple_of(block) {
            return err("the first id must be a multiple of 65536");
        }
        if first < block {
            return err("the range must start at 65536 or above: 0-65535 hold the host's own users and root");
        }
        // u32::MAX is the kernel's invalid id, never mappable.
        if first + len > u64::from(u32::MAX) {
            return err("the range must end below 4294967295");
        }
        Ok(Self { first: first as u32, len: len as u32 })
    }

    /// How many pods the pool holds.
    pub fn blocks(&self) -> u32 {
        self.len / IDS_PER_POD
    }

    /// The first host id of block `i` (`i < blocks()`).
    pub fn block(&self, i: u32) -> u32 {
        self.first + i * IDS_PER_POD
    }

    /// The block index of a first host id, if it is one of this pool's.
    pub fn index_of(&self, first: u32) -> Option<u32> {
        let off = first.checked_sub(self.first)?;
        (off.is_multiple_of(IDS_PER_POD) && off < self.len).then_some(off / IDS_PER_POD)
    }

    /// `user`'s pool from the contents of `/etc/subuid` and `/etc/subgid` (`NAME:FIRST:COUNT`
    /// lines; the first of the user's counts, as the kubelet); `None` when neither names it.
    pub fn from_subid(subuid: &str, subgid: &str, user: &str) -> Result<Option<Self>, PoolError> {
        let entry = |text: &str| {
            text.lines().map(str::trim).find_map(|l| {
                let (name, range) = l.split_once(':')?;
                (name == user).then(|| range.to_string())
            })
        };
        match (entry(subuid), entry(subgid)) {
            (None, None) => Ok(None),
            (Some(uids), Some(gids)) if uids == gids => uids.parse().map(Some),
            (uids, gids) => Err(PoolError::Mismatch {
                user: user.to_string(),
                uids: uids.unwrap_or_else(|| "nothing".into()),
                gids: gids.unwrap_or_else(|| "nothing".into()),
            }),
        }
    }

    /// The pool in force: `flag`, else [`SUBID_USER`]'s subordinate ids, else the default.
    pub fn configured(flag: Option<Pool>) -> Result<Pool, PoolError> {
        if let Some(pool) = flag {
            return Ok(pool);
        }
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        let subid = Self::from_subid(&read("/etc/subuid"), &read("/etc/subgid"), SUBID_USER)?;
        Ok(subid.unwrap_or(Self::DEFAULT))
    }
}

impl FromStr for Pool {
    type Err = PoolError;

    fn from_str(s: &str) -> Result<Self, PoolError> {
        let syntax = || PoolError::Syntax { text: s.to_string() };
        let (first, len) = s.trim().split_once(':').ok_or_else(syntax)?;
        let first = first.parse().map_err(|_| syntax())?;
        let len = len.parse().map_err(|_| syntax())?;
        Self::new(first, len)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.first, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_split_into_aligned_blocks_above_the_hosts_ids() {
        let p: Pool = "131072:196608".parse().unwrap();
        assert_eq!((p.blocks(), p.block(0), p.block(2)), (3, 131072, 262144));
        assert_eq!(p.index_of(196608), Some(1));
        assert_eq!(p.index_of(196609), None);
        assert_eq!(p.index_of(65536), None);
        assert_eq!(p.index_of(327680), None);
        assert_eq!(Pool::DEFAULT.blocks(), 1024);
        assert_eq!(Pool::DEFAULT.to_string().parse::<Pool>(), Ok(Pool::DEFAULT));
        for bad in
            ["0:65536", "65537:65536", "65536:1000", "65536:0", "4294901760:65536", "x", "1:"]
        {
            assert!(bad.parse::<Pool>().is_err(), "{bad} accepted");
        }
        assert!("4294836224:65536".parse::<Pool>().is_ok());
    }

    #[test]
    fn subordinate_ids_of_the_user_give_the_pool_when_both_files_agree() {
        let uid = "alice:100000:65536\noutpost:1048576:655360\noutpost:5:5\n";
        let gid = "outpost:1048576:655360\nalice:100000:65536\n";
        let p = Pool::from_subid(uid, gid, "outpost").unwrap().unwrap();
        assert_eq!((p.block(0), p.blocks()), (1048576, 10));
        assert_eq!(Pool::from_subid(uid, gid, "kubelet"), Ok(None));
        assert!(matches!(
            Pool::from_subid(uid, "outpost:2097152:65536\n", "outpost"),
            Err(PoolError::Mismatch { .. })
        ));
        assert!(matches!(Pool::from_subid(uid, "", "outpost"), Err(PoolError::Mismatch { .. })));
        // The kubelet's rule: aligned blocks only.
        let odd = "outpost:100000:65536\n";
        assert!(matches!(Pool::from_subid(odd, odd, "outpost"), Err(PoolError::Range { .. })));
    }
}
