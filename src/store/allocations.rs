//! Device plugin allocations: which devices of an extended resource each pod's container
//! holds, with the plugin's Allocate answer, so a restarted agent neither gives them to
//! another pod nor asks the plugin again (the kubelet's device manager checkpoint).
//!
//! Its own connection, as [`super::Leases`]: allocations are made by container start tasks.

use std::path::Path;

use rusqlite::params;

use super::{connect, Result, Shared};

/// One container's devices of one resource; `response` is the plugin's answer as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub pod_uid: String,
    pub container: String,
    pub resource: String,
    pub devices: Vec<String>,
    pub response: String,
}

pub struct Allocations {
    db: Shared,
}

impl Allocations {
    /// A connection to the agent's database, which [`super::Store::open`] created and migrated.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: Shared::new(connect(path)?, path) })
    }

    pub fn insert(&self, a: &Allocation) -> Result<()> {
        self.db.conn()
            .execute(
                "INSERT OR REPLACE INTO device_allocations (pod_uid, container, resource, devices, response)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    a.pod_uid,
                    a.container,
                    a.resource,
                    serde_json::to_string(&a.devices).unwrap_or_default(),
                    a.response
                ],
            )
            .map_err(self.db.err("record device allocation"))?;
        Ok(())
    }

    /// Frees every device of `pod_uid`; returns how many allocations it had.
    pub fn release(&self, pod_uid: &str) -> Result<usize> {
        self.db
            .conn()
            .execute("DELETE FROM device_allocations WHERE pod_uid = ?1", params![pod_uid])
            .map_err(self.db.err("release device allocations"))
    }

    pub fn all(&self) -> Result<Vec<Allocation>> {
        let conn = self.db.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT pod_uid, container, resource, devices, response FROM device_allocations
                 ORDER BY pod_uid, container, resource",
            )
            .map_err(self.db.err("list device allocations"))?;
        let rows = stmt
            .query_map([], |r| {
                let devices: String = r.get(3)?;
                Ok(Allocation {
                    pod_uid: r.get(0)?,
                    container: r.get(1)?,
                    resource: r.get(2)?,
                    // Written by `insert`: a JSON array of strings.
                    devices: serde_json::from_str(&devices).unwrap_or_default(),
                    response: r.get(4)?,
                })
            })
            .map_err(self.db.err("list device allocations"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.db.err("list device allocations"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn allocations_persist_until_the_pod_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outpost.db");
        let _store = Store::open(&path).unwrap();
        let a = Allocation {
            pod_uid: "p1".into(),
            container: "app".into(),
            resource: "example.com/dev".into(),
            devices: vec!["dev0".into(), "dev,1".into()],
            response: "{}".into(),
        };
        Allocations::open(&path).unwrap().insert(&a).unwrap();
        let reopened = Allocations::open(&path).unwrap();
        assert_eq!(reopened.all().unwrap(), vec![a]);
        assert_eq!(reopened.release("p2").unwrap(), 0);
        assert_eq!(reopened.release("p1").unwrap(), 1);
        assert!(reopened.all().unwrap().is_empty());
    }
}
