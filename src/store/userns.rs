//! Which block of host ids each pod with `hostUsers: false` holds (`crate::userns`). A block
//! is recorded before the pod's user namespace exists and freed only once the pod is gone, so
//! two pods never share ids, across agent restarts too (the unique column refuses it).
//!
//! Its own connection, as [`super::Leases`]: blocks are granted by sandbox tasks; each grant is
//! one short `IMMEDIATE` transaction.

use std::path::Path;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{connect, Result, Shared, StoreError};
use crate::userns::Pool;

pub struct IdRanges {
    db: Shared,
}

impl IdRanges {
    /// A connection to the agent's database, which [`super::Store::open`] created and migrated.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: Shared::new(connect(path)?, path) })
    }

    /// The first host id of `pod_uid`'s block: the one it holds (even outside a pool changed
    /// since: its files are owned by those ids), else the pool's lowest free one.
    pub fn grant(&self, pod_uid: &str, pool: &Pool) -> Result<u32> {
        let mut conn = self.db.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.db.err("begin id range"))?;
        let held: Option<u32> = tx
            .query_row(
                "SELECT first_id FROM userns_ranges WHERE pod_uid = ?1",
                params![pod_uid],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db.err("find id range"))?;
        if let Some(first) = held {
            return Ok(first);
        }
        let mut used = vec![false; pool.blocks() as usize];
        let mut taken = 0;
        {
            let mut stmt = tx
                .prepare_cached("SELECT first_id FROM userns_ranges")
                .map_err(self.db.err("read id ranges"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, u32>(0))
                .map_err(self.db.err("read id ranges"))?;
            for first in rows {
                let first = first.map_err(self.db.err("read id ranges"))?;
                if let Some(i) = pool.index_of(first) {
                    used[i as usize] = true;
                    taken += 1;
                }
            }
        }
        let free = used
            .iter()
            .position(|u| !u)
            .ok_or(StoreError::IdRangesExhausted { pool: pool.to_string(), held: taken })?;
        let first = pool.block(free as u32);
        tx.execute(
            "INSERT INTO userns_ranges (pod_uid, first_id) VALUES (?1, ?2)",
            params![pod_uid, first],
        )
        .map_err(self.db.err("insert id range"))?;
        tx.commit().map_err(self.db.err("commit id range"))?;
        Ok(first)
    }

    /// Records a block a running pod already has (a database moved aside while pods ran):
    /// false when another pod holds it.
    pub fn restore(&self, pod_uid: &str, first: u32) -> Result<bool> {
        self.db
            .conn()
            .execute(
                "INSERT INTO userns_ranges (pod_uid, first_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![pod_uid, first],
            )
            .map_err(self.db.err("restore id range"))?;
        Ok(self.all()?.iter().any(|(uid, f)| uid == pod_uid && *f == first))
    }

    /// Frees `pod_uid`'s block; false when it had none.
    pub fn release(&self, pod_uid: &str) -> Result<bool> {
        let n = self
            .db
            .conn()
            .execute("DELETE FROM userns_ranges WHERE pod_uid = ?1", params![pod_uid])
            .map_err(self.db.err("release id range"))?;
        Ok(n == 1)
    }

    /// Every held block as (pod UID, first host id), by first id.
    pub fn all(&self) -> Result<Vec<(String, u32)>> {
        let conn = self.db.conn();
        let mut stmt = conn
            .prepare_cached("SELECT pod_uid, first_id FROM userns_ranges ORDER BY first_id")
            .map_err(self.db.err("list id ranges"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.db.err("list id ranges"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.db.err("list id ranges"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn open() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outpost.db");
        Store::open(&path).unwrap();
        (dir, path)
    }

    #[test]
    fn each_pod_gets_its_own_block_kept_across_reopening_until_released() {
        let (_dir, path) = open();
        let pool: Pool = "196608:196608".parse().unwrap();
        let ranges = IdRanges::open(&path).unwrap();
        assert_eq!(ranges.grant("a", &pool).unwrap(), 196608);
        assert_eq!(ranges.grant("b", &pool).unwrap(), 262144);
        assert_eq!(ranges.grant("a", &pool).unwrap(), 196608, "a pod keeps its block");
        drop(ranges);
        let ranges = IdRanges::open(&path).unwrap();
        assert_eq!(ranges.grant("b", &pool).unwrap(), 262144, "kept across a restart");
        assert_eq!(ranges.grant("c", &pool).unwrap(), 327680);
        let full = ranges.grant("d", &pool).unwrap_err();
        assert!(
            full.to_string().contains("all 3 blocks of 65536 ids in the pool 196608:196608"),
            "{full}"
        );
        assert!(ranges.release("b").unwrap());
        assert!(!ranges.release("b").unwrap());
        // The lowest free block, so ids stay low and a freed block is used again only then.
        assert_eq!(ranges.grant("d", &pool).unwrap(), 262144);
        assert_eq!(
            ranges.all().unwrap(),
            vec![("a".into(), 196608), ("d".into(), 262144), ("c".into(), 327680)]
        );
    }

    #[test]
    fn blocks_held_outside_a_changed_pool_stay_held_and_are_never_given_twice() {
        let (_dir, path) = open();
        let ranges = IdRanges::open(&path).unwrap();
        let old: Pool = "131072:131072".parse().unwrap();
        assert_eq!(ranges.grant("a", &old).unwrap(), 131072);
        let new: Pool = "196608:131072".parse().unwrap();
        assert_eq!(ranges.grant("a", &new).unwrap(), 131072);
        assert_eq!(ranges.grant("b", &new).unwrap(), 196608);
        // A restored block another pod holds is refused.
        assert!(!ranges.restore("c", 196608).unwrap());
        assert!(ranges.restore("c", 262144).unwrap());
        assert!(ranges.restore("c", 262144).unwrap(), "restoring twice is fine");
        assert!(ranges.grant("d", &new).is_err());
    }
}
