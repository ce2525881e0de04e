//! Durable agent state in SQLite: what the engine needs to resume after an agent restart
//! (restart counts, back-off, probe results) and the event history.
//!
//! One writer, the agent's main loop, batching each loop iteration into one transaction.
//! The API never reads SQLite; it serves what the agent publishes in memory.
//!
//! Durability against flash wear: WAL mode with `synchronous=NORMAL`. A commit appends its
//! pages to the WAL without an fsync; only checkpoints (every ~1000 pages) fsync. `FULL` would
//! fsync every loop step that changed something, each a flash program/erase cycle for a few
//! hundred bytes. A power cut may lose the last transactions, never consistency, and losing them
//! costs nothing that matters: running pods are adopted from the runtime, whose exit records
//! are fsynced (`runtime::durable`). An idle agent writes nothing (no change, no transaction).
//!
//! The agent opens with [`Store::open_or_recover`]: damage (a truncated or foreign file, a
//! torn WAL that would drop committed frames, `quick_check` failures) moves the files aside
//! and starts a fresh database.

mod allocations;
mod leases;
mod migrations;
mod recover;
mod tokens;
mod userns;

pub use allocations::{Allocation, Allocations};
pub use leases::{Lease, Leases};
pub use tokens::{TokenRecord, Tokens};
pub use userns::IdRanges;

/// The database's file name in the state directory.
pub const DATABASE: &str = "outpost.db";

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or migrated.
    #[error("state database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// The database was written by a newer outpost.
    #[error("state database {path} has schema version {found}, newer than this outpost knows ({known}): upgrade outpost")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    /// A read or write failed.
    #[error("state database {path}: {op}: {source}")]
    Query { path: PathBuf, op: &'static str, source: rusqlite::Error },
    /// `PRAGMA quick_check` found damage.
    #[error("state database {path}: quick_check: {problems}")]
    Check { path: PathBuf, problems: String },
    /// Every address of the built-in network's subnet is leased.
    #[error("no free address left in {subnet} ({leased} pods hold one each): delete pods, or set a larger --pod-subnet")]
    LeasesExhausted { subnet: String, leased: u32 },
    /// Every block of the user namespace id pool is held by a pod.
    #[error("no user namespace ids left: all {held} blocks of 65536 ids in the pool {pool} are held by pods with hostUsers: false; delete one, or give a larger --userns-pool")]
    IdRangesExhausted { pool: String, held: u32 },
    /// `outpost kubeconfig --user NAME` for a name that already has a token.
    #[error("a token named {name:?} exists already: choose another --user, or revoke it first with `outpost kubeconfig --revoke {name}`")]
    TokenExists { name: String },
    /// A damaged database could not be moved aside.
    #[error("state database {path} is damaged but could not be moved aside: {source}; move it away by hand")]
    Aside { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    /// What makes the database unusable as it is, as opposed to an environment problem.
    fn damage(&self) -> Option<String> {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            StoreError::Check { problems, .. } => Some(format!("quick_check: {problems}")),
            StoreError::Open { source, .. } | StoreError::Query { source, .. } => {
                match source.sqlite_error_code() {
                    Some(NotADatabase | DatabaseCorrupt) => Some(source.to_string()),
                    _ => None,
                }
            }
            StoreError::TooNew { .. }
            | StoreError::Aside { .. }
            | StoreError::LeasesExhausted { .. }
            | StoreError::IdRangesExhausted { .. }
            | StoreError::TokenExists { .. } => None,
        }
    }
}

/// A connection of one of the components sharing the agent's database (leases, tokens,
/// device allocations, user namespace ids); its errors name the file.
struct Shared {
    conn: std::sync::Mutex<Connection>,
    path: PathBuf,
}

impl Shared {
    fn new(conn: Connection, path: &Path) -> Self {
        Self { conn: std::sync::Mutex::new(conn), path: path.to_path_buf() }
    }

    fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Query { path: self.path.clone(), op, source }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the connection with the durability settings (see the module's comment).
fn connect(path: &Path) -> Result<Connection> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    // 512 KiB of page cache instead of SQLite's 2 MiB: the database is small and read mostly
    // at start; a burst of events would otherwise leave the agent 2 MiB larger for good.
    conn.pragma_update(None, "cache_size", -512).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    Ok(conn)
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What is kept of one pod between agent runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod as it was started (JSON): what a restarted agent adopts.
    pub pod: String,
    /// The engine's own serialized state (restart counts, back-off, probes): opaque here.
    pub engine_state: String,
}

/// A Kubernetes event as kubectl shows it; repeats are folded into `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Empty for an event about the node itself, named by `pod_name`.
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    pub container: Option<String>,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: u32,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
}

/// One step of a pod's rollout history (safe updates): a revision started its health gate
/// (`Pending`), passed it (`Ready`), failed it (`Failed`, with `reason`) or another edit cut
/// it short (`Superseded`).
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionRecord {
    pub namespace: String,
    pub name: String,
    /// The content hash (the pod's UID).
    pub hash: String,
    /// The pod as its manifest had it (JSON).
    pub pod: String,
    /// The ConfigMaps and Secrets it read, as they were: `{"configMaps": [...], "secrets":
    /// [...]}` (Secrets with their values: the database is root's, as the manifests are).
    pub config: String,
    /// Unix seconds.
    pub at: i64,
    pub result: String,
    pub reason: Option<String>,
}

/// A change to the rollout history, applied in order.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryRecord {
    Revision(RevisionRecord),
    /// Every revision of (namespace, name) goes: the pod left the manifests.
    Forget {
        namespace: String,
        name: String,
    },
}

/// Revisions kept per pod name, and in all; older ones are pruned, except each name's last
/// Ready revision.
pub const MAX_REVISIONS: i64 = 50;
pub const MAX_REVISIONS_IN_ALL: i64 = 5000;

/// Events kept in the database; older ones are pruned (the API server keeps 1 h by default).
pub const MAX_EVENTS: usize = 5000;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A damaged database that [`Store::open_or_recover`] replaced with a fresh one.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovery {
    /// What was wrong, for the log and the event.
    pub damage: String,
    /// Where the damaged database (and its `-wal`/`-shm`) now are.
    pub kept: PathBuf,
}

impl Store {
    /// Opens (creating or migrating) the database as it is; damage is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = connect(path)?;
        migrations::apply(&mut conn, path)?;
        Ok(Self { conn, path: path.to_path_buf() })
    }

    /// Opens the agent's database, replacing a damaged one: what it held is rebuilt from what
    /// runs, while a damaged file would fail every commit or hide lost records. `unix` names
    /// the set kept aside. Errors that are not damage (permissions, a newer schema) still fail.
    pub fn open_or_recover(path: &Path, unix: i64) -> Result<(Self, Option<Recovery>)> {
        let damage = match recover::inspect(path) {
            Some(damage) => damage,
            None => match Self::open_checked(path) {
                Ok(store) => return Ok((store, None)),
                Err(e) => match e.damage() {
                    Some(damage) => damage,
                    None => return Err(e),
                },
            },
        };
        let kept = recover::move_aside(path, unix)
            .map_err(|source| StoreError::Aside { path: path.to_path_buf(), source })?;
        log::warn!(
            "state database {} is damaged ({damage}): kept aside as {}; starting a fresh one and rebuilding from the running pods",
            path.display(),
            kept.display()
        );
        let store = Self::open(path)?;
        Ok((store, Some(Recovery { damage, kept })))
    }

    /// Opens with `PRAGMA quick_check` before migrating. The check's connection does not
    /// checkpoint when dropped, so a damaged set is kept as found.
    fn open_checked(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let mut conn = connect(path)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(open_err)?;
        let problems: Vec<String> = conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(open_err)?;
        if problems != ["ok"] {
            // One line for the log: SQLite heads its findings with the schema's name.
            let problems = problems.join("\n").replace("*** in database main ***\n", "");
            let problems = problems.replace('\n', "; ");
            return Err(StoreError::Check { path: path.to_path_buf(), problems });
        }
        migrations::apply(&mut conn, path)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false).map_err(open_err)?;
        Ok(Self { conn, path: path.to_path_buf() })
    }

    fn query_err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Query { path: self.path.clone(), op, source }
    }

    /// Writes a batch in one transaction: upserted pods, removed pod UIDs, new events.
    pub fn commit(
        &mut self,
        pods: &[PodRecord],
        removed: &[String],
        events: &[EventRecord],
    ) -> Result<()> {
        self.commit_with_revisions(pods, removed, events, &[])
    }

    /// [`Store::commit`] with rollout history: a revision's result updates its last row if
    /// `Pending` (one row per rollout of a revision), as does `Ready` for the latest row's
    /// `Ready` revision (its config), anything else is a new row.
    pub fn commit_with_revisions(
        &mut self,
        pods: &[PodRecord],
        removed: &[String],
        events: &[EventRecord],
        history: &[HistoryRecord],
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |op: &'static str| {
            let path = path.clone();
            move |source| StoreError::Query { path, op, source }
        };
        let tx = self.conn.transaction().map_err(err("begin"))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO pods (uid, namespace, name, pod, engine_state) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(uid) DO UPDATE SET namespace = ?2, name = ?3, pod = ?4, engine_state = ?5",
                )
                .map_err(err("prepare pods"))?;
            for p in pods {
                upsert
                    .execute(params![p.uid, p.namespace, p.name, p.pod, p.engine_state])
                    .map_err(err("save pod"))?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM pods WHERE uid = ?1")
                .map_err(err("prepare delete"))?;
            for uid in removed {
                delete.execute(params![uid]).map_err(err("delete pod"))?;
            }
            // A repeat (same pod, container, reason and message) bumps the count, as the
            // API server's event correlator folds them.
            let mut bump = tx
                .prepare_cached(
                    "UPDATE events SET count = count + ?1, last_seen = ?2
                     WHERE pod_uid = ?3 AND container IS ?4 AND reason = ?5 AND message = ?6",
                )
                .map_err(err("prepare events"))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (pod_uid, namespace, pod_name, container, type, reason, message, count, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(err("prepare events"))?;
            for e in events {
                let n = bump
                    .execute(params![
                        e.count,
                        e.last_seen,
                        e.pod_uid,
                        e.container,
                        e.reason,
                        e.message
                    ])
                    .map_err(err("update event"))?;
                if n == 0 {
                    insert
                        .execute(params![
                            e.pod_uid,
                            e.namespace,
                            e.pod_name,
                            e.container,
                            e.type_,
                            e.reason,
                            e.message,
                            e.count,
                            e.first_seen,
                            e.last_seen
                        ])
                        .map_err(err("insert event"))?;
                }
            }
            if !events.is_empty() {
                tx.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
                    params![MAX_EVENTS as i64],
                )
                .map_err(err("prune events"))?;
            }
            for change in history {
                let r = match change {
                    HistoryRecord::Revision(r) => r,
                    HistoryRecord::Forget { namespace, name } => {
                        tx.execute(
                            "DELETE FROM revisions WHERE namespace = ?1 AND name = ?2",
                            params![namespace, name],
                        )
                        .map_err(err("forget revisions"))?;
                        continue;
                    }
                };
                let latest: Option<(i64, String, String)> = tx
                    .query_row(
                        "SELECT id, hash, result FROM revisions WHERE namespace = ?1 AND name = ?2
                         ORDER BY id DESC LIMIT 1",
                        params![r.namespace, r.name],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .optional()
                    .map_err(err("read revision"))?;
                // A Ready revision recorded again took ConfigMaps or Secrets edited alone.
                let again =
                    |result: &str| result == "Pending" || result == r.result && result == "Ready";
                let latest = match latest {
                    Some((id, hash, result)) if hash == r.hash && again(&result) => Some(id),
                    // A gate's result with the next edit's row after its own (that edit's
                    // pull failed during the gate).
                    _ if r.result != "Pending" => tx
                        .query_row(
                            "SELECT id, result FROM revisions
                             WHERE namespace = ?1 AND name = ?2 AND hash = ?3 ORDER BY id DESC LIMIT 1",
                            params![r.namespace, r.name, r.hash],
                            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
                        )
                        .optional()
                        .map_err(err("read revision"))?
                        .filter(|(_, result)| result == "Pending")
                        .map(|(id, _)| id),
                    _ => None,
                };
                match latest {
                    Some(id) => {
                        tx.execute(
                            "UPDATE revisions SET result = ?1, reason = ?2, config = ?3 WHERE id = ?4",
                            params![r.result, r.reason, r.config, id],
                        )
                        .map_err(err("update revision"))?;
                    }
                    _ => {
                        tx.execute(
                            "INSERT INTO revisions (namespace, name, hash, pod, config, at, result, reason)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            params![
                                r.namespace,
                                r.name,
                                r.hash,
                                r.pod,
                                r.config,
                                r.at,
                                r.result,
                                r.reason
                            ],
                        )
                        .map_err(err("insert revision"))?;
                        // The last Ready revision stays: it is what a restarted agent rolls
                        // back to.
                        tx.execute(
                            "DELETE FROM revisions WHERE namespace = ?1 AND name = ?2 AND id <=
                             (SELECT MAX(id) FROM revisions WHERE namespace = ?1 AND name = ?2) - ?3
                             AND id IS NOT (SELECT MAX(id) FROM revisions
                                            WHERE namespace = ?1 AND name = ?2 AND result = 'Ready')",
                            params![r.namespace, r.name, MAX_REVISIONS],
                        )
                        .map_err(err("prune revisions"))?;
                    }
                }
            }
            if !history.is_empty() {
                tx.execute(
                    "DELETE FROM revisions WHERE id <= (SELECT MAX(id) FROM revisions) - ?1
                     AND id NOT IN (SELECT MAX(id) FROM revisions WHERE result = 'Ready'
                                    GROUP BY namespace, name)",
                    params![MAX_REVISIONS_IN_ALL],
                )
                .map_err(err("prune revisions"))?;
            }
        }
        tx.commit().map_err(err("commit"))
    }

    /// Rollout history, oldest first; `pod` (namespace, name) filters.
    pub fn revisions(&self, pod: Option<(&str, &str)>) -> Result<Vec<RevisionRecord>> {
        let (namespace, name) = pod.unzip();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT namespace, name, hash, pod, config, at, result, reason FROM revisions
                 WHERE ?1 IS NULL OR (namespace = ?1 AND name = ?2) ORDER BY id",
            )
            .map_err(self.query_err("load revisions"))?;
        let rows = stmt
            .query_map(params![namespace, name], |r| {
                Ok(RevisionRecord {
                    namespace: r.get(0)?,
                    name: r.get(1)?,
                    hash: r.get(2)?,
                    pod: r.get(3)?,
                    config: r.get(4)?,
                    at: r.get(5)?,
                    result: r.get(6)?,
                    reason: r.get(7)?,
                })
            })
            .map_err(self.query_err("load revisions"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.query_err("load revisions"))
    }

    pub fn pods(&self) -> Result<Vec<PodRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT uid, namespace, name, pod, engine_state FROM pods ORDER BY namespace, name",
            )
            .map_err(self.query_err("load pods"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PodRecord {
                    uid: r.get(0)?,
                    namespace: r.get(1)?,
                    name: r.get(2)?,
                    pod: r.get(3)?,
                    engine_state: r.get(4)?,
                })
            })
            .map_err(self.query_err("load pods"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.query_err("load pods"))
    }

    /// Events, oldest first; `namespace` filters.
    pub fn events(&self, namespace: Option<&str>) -> Result<Vec<EventRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT pod_uid, namespace, pod_name, container, type, reason, message, count, first_seen, last_seen
                 FROM events WHERE ?1 IS NULL OR namespace = ?1 ORDER BY last_seen, id",
            )
            .map_err(self.query_err("load events"))?;
        let rows = stmt
            .query_map(params![namespace], |r| {
                Ok(EventRecord {
                    pod_uid: r.get(0)?,
                    namespace: r.get(1)?,
                    pod_name: r.get(2)?,
                    container: r.get(3)?,
                    type_: r.get(4)?,
                    reason: r.get(5)?,
                    message: r.get(6)?,
                    count: r.get(7)?,
                    first_seen: r.get(8)?,
                    last_seen: r.get(9)?,
                })
            })
            .map_err(self.query_err("load events"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.query_err("load events"))
    }

    /// The schema version (for tests and `outpost version`).
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(self.query_err("schema version"))
    }
}

#[cfg(test)]
mod tests;
