//! The built-in network's IP address management. A lease is committed before the pod's
//! interface exists and deleted after it is gone, so a crash at any point neither gives one
//! address to two pods (the primary key refuses it) nor loses one: the network reconciles
//! leases with its attachments at start.
//!
//! Its own connection: leases are granted from network tasks while the agent's loop commits
//! on the other; each grant is one short `IMMEDIATE` transaction, SQLite serialises them.

use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{connect, Result, Shared, StoreError};
use crate::network::subnet::Subnet;

/// One address held by one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub pod_uid: String,
}

pub struct Leases {
    db: Shared,
}

impl Leases {
    /// A connection to the agent's database, which [`super::Store::open`] created and migrated.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: Shared::new(connect(path)?, path) })
    }

    /// The address of `container_id` in `subnet`: its lease if it has one, else the next free
    /// address after the last one given (round robin, as host-local does, so an address just
    /// freed is not reused at once). The gateway (`.1`), network and broadcast addresses are
    /// never given.
    pub fn grant(&self, subnet: Subnet, container_id: &str, pod_uid: &str) -> Result<Ipv4Addr> {
        let key = subnet.to_string();
        let mut conn = self.db.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.db.err("begin lease"))?;
        let held: Option<u32> = tx
            .query_row(
                "SELECT ip FROM ip_leases WHERE subnet = ?1 AND container_id = ?2",
                params![key, container_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db.err("find lease"))?;
        if let Some(ip) = held {
            return Ok(Ipv4Addr::from(ip));
        }
        let cursor: Option<u32> = tx
            .query_row("SELECT ip FROM ip_lease_cursor WHERE subnet = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.db.err("read lease cursor"))?;
        let used: std::collections::HashSet<u32> = {
            let mut stmt = tx
                .prepare_cached("SELECT ip FROM ip_leases WHERE subnet = ?1")
                .map_err(self.db.err("read leases"))?;
            let rows =
                stmt.query_map(params![key], |r| r.get(0)).map_err(self.db.err("read leases"))?;
            rows.collect::<std::result::Result<_, _>>().map_err(self.db.err("read leases"))?
        };
        let first = u32::from(subnet.host(2));
        let last = u32::from(subnet.host(subnet.size() - 2));
        let pool = last - first + 1;
        let start = cursor.filter(|c| (first..=last).contains(c)).map_or(first, |c| c + 1);
        let free = (0..pool)
            .map(|i| first + (start - first + i) % pool)
            .find(|ip| !used.contains(ip))
            .ok_or(StoreError::LeasesExhausted {
                subnet: key.clone(),
                leased: used.len() as u32,
            })?;
        tx.execute(
            "INSERT INTO ip_leases (subnet, ip, container_id, pod_uid, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, free, container_id, pod_uid, crate::format::now().as_second()],
        )
        .map_err(self.db.err("insert lease"))?;
        tx.execute(
            "INSERT INTO ip_lease_cursor (subnet, ip) VALUES (?1, ?2)
             ON CONFLICT(subnet) DO UPDATE SET ip = ?2",
            params![key, free],
        )
        .map_err(self.db.err("move lease cursor"))?;
        tx.commit().map_err(self.db.err("commit lease"))?;
        Ok(Ipv4Addr::from(free))
    }

    /// Records an address an attachment already has (a database moved aside while pods ran):
    /// false when another attachment holds it.
    pub fn restore(
        &self,
        subnet: Subnet,
        ip: Ipv4Addr,
        container_id: &str,
        pod_uid: &str,
    ) -> Result<bool> {
        let n = self
            .db
            .conn()
            .execute(
                "INSERT INTO ip_leases (subnet, ip, container_id, pod_uid, created) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![subnet.to_string(), u32::from(ip), container_id, pod_uid, crate::format::now().as_second()],
            )
            .map_err(self.db.err("restore lease"))?;
        Ok(n == 1 || self.all()?.iter().any(|l| l.container_id == container_id && l.ip == ip))
    }

    /// Frees `container_id`'s address; false when it had none.
    pub fn release(&self, container_id: &str) -> Result<bool> {
        let n = self
            .db
            .conn()
            .execute("DELETE FROM ip_leases WHERE container_id = ?1", params![container_id])
            .map_err(self.db.err("release lease"))?;
        Ok(n > 0)
    }

    /// Every lease, by subnet and address.
    pub fn all(&self) -> Result<Vec<Lease>> {
        let conn = self.db.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT subnet, ip, container_id, pod_uid FROM ip_leases ORDER BY subnet, ip",
            )
            .map_err(self.db.err("list leases"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Lease {
                    subnet: r.get(0)?,
                    ip: Ipv4Addr::from(r.get::<_, u32>(1)?),
                    container_id: r.get(2)?,
                    pod_uid: r.get(3)?,
                })
            })
            .map_err(self.db.err("list leases"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.db.err("list leases"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn open() -> (tempfile::TempDir, Store, Leases) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outpost.db");
        let store = Store::open(&path).unwrap();
        let leases = Leases::open(&path).unwrap();
        (dir, store, leases)
    }

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn grants_skip_the_gateway_and_go_round_robin() {
        let (_dir, _store, leases) = open();
        let s = subnet("10.2.0.0/29"); // .2 to .6 for pods
        let a = leases.grant(s, "a", "pod-a").unwrap();
        let b = leases.grant(s, "b", "pod-b").unwrap();
        assert_eq!((a, b), (Ipv4Addr::new(10, 2, 0, 2), Ipv4Addr::new(10, 2, 0, 3)));
        assert_eq!(leases.grant(s, "a", "pod-a").unwrap(), a, "a second ADD keeps the lease");
        assert!(leases.release("a").unwrap());
        assert!(!leases.release("a").unwrap());
        // .2 was just freed: the next grant moves on, as host-local does.
        assert_eq!(leases.grant(s, "c", "pod-c").unwrap(), Ipv4Addr::new(10, 2, 0, 4));
    }

    #[test]
    fn a_full_subnet_is_refused_with_the_fix_and_wraps_once_freed() {
        let (_dir, _store, leases) = open();
        let s = subnet("10.2.0.0/29");
        for i in 0..5 {
            leases.grant(s, &format!("c{i}"), "p").unwrap();
        }
        let err = leases.grant(s, "c5", "p").unwrap_err();
        assert!(matches!(err, StoreError::LeasesExhausted { leased: 5, .. }), "{err}");
        assert!(
            err.to_string().contains("10.2.0.0/29") && err.to_string().contains("--pod-subnet")
        );
        leases.release("c1").unwrap();
        assert_eq!(leases.grant(s, "c5", "p").unwrap(), Ipv4Addr::new(10, 2, 0, 3));
    }

    /// Two connections granting at once (the agent restarted beside a slow task, or tests):
    /// every address is given once.
    #[test]
    fn concurrent_grants_never_share_an_address() {
        let (dir, _store, _leases) = open();
        let path = dir.path().join("outpost.db");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let leases = Leases::open(&path).unwrap();
                    (0..20)
                        .map(|i| {
                            leases.grant(subnet("10.2.0.0/24"), &format!("{t}-{i}"), "p").unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "an address was given twice");
    }

    #[test]
    fn a_restored_lease_is_kept_and_a_taken_address_refused() {
        let (_dir, _store, leases) = open();
        let s = subnet("10.2.0.0/24");
        let ip = Ipv4Addr::new(10, 2, 0, 9);
        assert!(leases.restore(s, ip, "old", "p").unwrap());
        assert!(leases.restore(s, ip, "old", "p").unwrap(), "restoring twice is fine");
        assert!(!leases.restore(s, ip, "other", "q").unwrap());
        assert_eq!(leases.all().unwrap().len(), 1);
        assert_eq!(leases.grant(s, "old", "p").unwrap(), ip);
    }
}
