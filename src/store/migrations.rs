//! Schema migrations, versioned in code: migration N brings `PRAGMA user_version` from N to N+1.
//! Never edit a released migration; append a new one.

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: pods and events.
    "CREATE TABLE pods (
        uid TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        pod TEXT NOT NULL,
        engine_state TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pod_uid TEXT NOT NULL,
        namespace TEXT NOT NULL,
        pod_name TEXT NOT NULL,
        container TEXT,
        type TEXT NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );
    CREATE INDEX events_by_key ON events (pod_uid, reason, message);",
    // 2: the built-in network's IP leases, and where the next search starts in each subnet.
    "CREATE TABLE ip_leases (
        subnet TEXT NOT NULL,
        ip INTEGER NOT NULL,
        container_id TEXT NOT NULL UNIQUE,
        pod_uid TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (subnet, ip)
    );
    CREATE TABLE ip_lease_cursor (subnet TEXT PRIMARY KEY, ip INTEGER NOT NULL);",
    // 3: the secure API's bearer tokens, by SHA-256 only (`outpost kubeconfig`).
    "CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        expires INTEGER
    );",
    // 4: each pod's revisions for safe updates (issue 23): the content hash (UID), the pod and
    // the ConfigMaps and Secrets it read as they were (JSON), when, and how its rollout ended
    // (Pending, Ready, Failed with a reason).
    "CREATE TABLE revisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        pod TEXT NOT NULL,
        config TEXT NOT NULL,
        at INTEGER NOT NULL,
        result TEXT NOT NULL,
        reason TEXT
    );
    CREATE INDEX revisions_by_pod ON revisions (namespace, name, id);",
    // 5: device plugin allocations (issue 26): the devices of an extended resource each
    // container of a pod holds, and the plugin's Allocate answer for it (JSON), kept until
    // the pod is gone, as the kubelet's device manager checkpoint.
    "CREATE TABLE device_allocations (
        pod_uid TEXT NOT NULL,
        container TEXT NOT NULL,
        resource TEXT NOT NULL,
        devices TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (pod_uid, container, resource)
    );",
    // 6: the block of host ids each pod with `hostUsers: false` holds (user namespaces),
    // kept until the pod is gone, as the kubelet's userns manager keeps it in the pod's dir.
    "CREATE TABLE userns_ranges (
        pod_uid TEXT PRIMARY KEY,
        first_id INTEGER NOT NULL UNIQUE
    );",
];

pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1).map_err(err)?;
        tx.commit().map_err(err)?;
        log::info!("state database {}: migrated to schema {}", path.display(), i + 1);
    }
    Ok(())
}

/// The newest schema version this build writes.
#[cfg(test)]
pub const fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
