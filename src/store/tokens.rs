//! The secure API's bearer tokens: only their SHA-256 is stored, with a name (the user
//! kubectl shows), a role and when it was made.
//!
//! Its own connection, like [`super::Leases`]: `outpost kubeconfig` adds and revokes tokens
//! while the agent runs, and the agent looks each request's token up here (one indexed read),
//! so a new token works and a revoked one fails at once, with no cache to invalidate.

use std::path::Path;

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{connect, migrations, Result, Shared, StoreError};

/// One token as listed (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    /// `view` or `admin`.
    pub role: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds after which the token is refused; `None`: until revoked.
    pub expires: Option<i64>,
}

pub struct Tokens {
    db: Shared,
}

/// What is stored and looked up for a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Opens the agent's database, creating or migrating it (the CLI may run before the agent
    /// ever did).
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = connect(path)?;
        migrations::apply(&mut conn, path)?;
        Ok(Self { db: Shared::new(conn, path) })
    }

    /// Records `token` (by its hash) for `name`; a name has one token at a time.
    pub fn add(
        &self,
        name: &str,
        role: &str,
        token: &str,
        created: i64,
        expires: Option<i64>,
    ) -> Result<()> {
        let n = self
            .db
            .conn()
            .execute(
                "INSERT INTO api_tokens (name, role, hash, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING",
                params![name, role, &hash(token)[..], created, expires],
            )
            .map_err(self.db.err("add token"))?;
        if n == 0 {
            return Err(StoreError::TokenExists { name: name.to_string() });
        }
        Ok(())
    }

    /// The token's record, if it is known.
    pub fn find(&self, token: &str) -> Result<Option<TokenRecord>> {
        let conn = self.db.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, role, created, expires FROM api_tokens WHERE hash = ?1")
            .map_err(self.db.err("find token"))?;
        stmt.query_row(params![&hash(token)[..]], |r| {
            Ok(TokenRecord {
                name: r.get(0)?,
                role: r.get(1)?,
                created: r.get(2)?,
                expires: r.get(3)?,
            })
        })
        .optional()
        .map_err(self.db.err("find token"))
    }

    /// Removes `name`'s token: false when there was none.
    pub fn revoke(&self, name: &str) -> Result<bool> {
        let n = self
            .db
            .conn()
            .execute("DELETE FROM api_tokens WHERE name = ?1", params![name])
            .map_err(self.db.err("revoke token"))?;
        Ok(n > 0)
    }

    /// Every token, by name.
    pub fn list(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.db.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, role, created, expires FROM api_tokens ORDER BY name")
            .map_err(self.db.err("list tokens"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenRecord {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    created: r.get(2)?,
                    expires: r.get(3)?,
                })
            })
            .map_err(self.db.err("list tokens"))?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.db.err("list tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_value_until_revoked_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outpost.db");
        let tokens = Tokens::open(&path).unwrap();
        tokens.add("alice", "admin", "secret-token-a", 100, None).unwrap();
        tokens.add("bob", "view", "secret-token-b", 200, None).unwrap();
        let alice =
            TokenRecord { name: "alice".into(), role: "admin".into(), created: 100, expires: None };
        assert_eq!(tokens.find("secret-token-a").unwrap(), Some(alice.clone()));
        assert_eq!(tokens.find("secret-token-b").unwrap().unwrap().role, "view");
        assert_eq!(tokens.find("secret-token-").unwrap(), None);
        assert_eq!(tokens.find("").unwrap(), None);
        // A second connection (the CLI's) sees the agent's changes at once, and vice versa.
        let other = Tokens::open(&path).unwrap();
        assert!(other.revoke("alice").unwrap());
        assert!(!other.revoke("alice").unwrap());
        assert_eq!(tokens.find("secret-token-a").unwrap(), None);
        assert_eq!(tokens.list().unwrap().len(), 1);
        drop((tokens, other));
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("outpost.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(14).any(|w| w == b"secret-token-b"), "token stored in clear");
        }
    }

    #[test]
    fn a_name_has_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(&dir.path().join("outpost.db")).unwrap();
        tokens.add("alice", "view", "t1", 1, None).unwrap();
        let e = tokens.add("alice", "admin", "t2", 2, None).unwrap_err();
        assert!(e.to_string().contains("outpost kubeconfig --revoke alice"), "{e}");
        assert_eq!(tokens.find("t1").unwrap().unwrap().role, "view");
        assert_eq!(tokens.find("t2").unwrap(), None);
    }
}
