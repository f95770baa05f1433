//! Admin API keys: one workspace per key, stored hashed.
//!
//! A key is `ek_` followed by 32 random bytes in unpadded base64url; only
//! its SHA-256 (lowercase hex) is stored, with a public key id used to list
//! and revoke it. The key itself is shown once, by `enrichd apikey create`.
//! A request's key is hashed and looked up by hash ([`KeyStore::api_key_by_hash`]):
//! the hash of an unguessable key is itself unguessable, so the lookup needs
//! no constant-time comparison, and (like the async-job callback token) it
//! is the one read here not scoped by workspace — it says which workspace
//! the key belongs to.
//!
//! Every statement is the same text on SQLite and PostgreSQL, so one macro
//! implements [`KeyStore`] for both (like `store::crm` and `store::jobs`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sql::read_err;
use super::{StoreError, StoreFuture};
use crate::core::lead::WorkspaceId;
use crate::core::value::UnixMillis;

/// What every key starts with (recognisable in a secret scanner).
pub const KEY_PREFIX: &str = "ek_";

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub workspace: WorkspaceId,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// A newly generated key: shown once, then only its hash is kept.
pub struct NewApiKey {
    pub key_id: String,
    /// The secret: `ek_` + 32 random bytes, base64url without padding.
    pub key: String,
    pub hash: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The OS random source failed: no key can be made safely.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot generate an API key: the operating system's random source failed ({0}); try again, and check /dev/urandom (or getrandom) is available"
)]
pub struct KeyGenError(String);

impl NewApiKey {
    /// A fresh key from the OS random source (refuses to make a weak one).
    pub fn generate() -> Result<NewApiKey, KeyGenError> {
        use base64::Engine as _;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| KeyGenError(e.to_string()))?;
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).map_err(|e| KeyGenError(e.to_string()))?;
        let key = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let key_id = format!("key_{}", hex(&id));
        let hash = hash_key(&key);
        Ok(NewApiKey { key_id, key, hash })
    }
}

/// The stored form of a key: lowercase hex SHA-256 of its text.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Admin API keys. Implemented for both backends.
pub trait KeyStore: Send + Sync {
    /// Stores a key's hash for the workspace.
    fn create_api_key<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        key_id: &'a str,
        key_hash: &'a str,
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;

    /// The key with this hash, if it exists and is not revoked (the one
    /// lookup not scoped by workspace: it says which workspace the key is of).
    fn api_key_by_hash<'a>(&'a self, key_hash: &'a str) -> StoreFuture<'a, Option<ApiKeyRow>>;

    /// The workspace's keys, revoked ones included, oldest first.
    fn api_keys<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<ApiKeyRow>>;

    /// Revokes a key of the workspace. `false` when the workspace has no
    /// such key or it was revoked already.
    fn revoke_api_key<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        key_id: &'a str,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;
}

/// $1 key id, $2 ws, $3 hash, $4 now.
const INSERT_KEY: &str = "\
INSERT INTO api_keys (key_id, workspace, key_hash, created_at, revoked_at)
VALUES ($1, $2, $3, $4, NULL)";

/// $1 hash.
const KEY_BY_HASH: &str = "\
SELECT key_id, workspace, created_at, revoked_at FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL";

/// $1 ws.
const KEYS_OF_WORKSPACE: &str = "\
SELECT key_id, workspace, created_at, revoked_at FROM api_keys
WHERE workspace = $1 ORDER BY created_at, key_id";

/// $1 ws, $2 key id, $3 now.
const REVOKE_KEY: &str = "\
UPDATE api_keys SET revoked_at = $3
WHERE workspace = $1 AND key_id = $2 AND revoked_at IS NULL";

#[derive(sqlx::FromRow)]
pub(crate) struct KeyDbRow {
    key_id: String,
    workspace: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl KeyDbRow {
    fn into_row(self) -> ApiKeyRow {
        ApiKeyRow {
            key_id: self.key_id,
            workspace: WorkspaceId(self.workspace),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// Implements [`KeyStore`] for a backend: `$read` is the pool reads use,
/// `$write` the pool (SQLite: the single writer connection) writes use.
macro_rules! impl_key_store {
    ($ty:ty, $read:ident, $write:ident) => {
        impl $crate::store::keys::KeyStore for $ty {
            fn create_api_key<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                key_id: &'a str,
                key_hash: &'a str,
                now: UnixMillis,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(INSERT_KEY)
                        .bind(key_id)
                        .bind(ws.as_str())
                        .bind(key_hash)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("store API key"))?;
                    Ok(())
                })
            }

            fn api_key_by_hash<'a>(
                &'a self,
                key_hash: &'a str,
            ) -> StoreFuture<'a, Option<ApiKeyRow>> {
                Box::pin(async move {
                    let row: Option<KeyDbRow> = sqlx::query_as(KEY_BY_HASH)
                        .bind(key_hash)
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(read_err("api_keys", "look up API key"))?;
                    Ok(row.map(KeyDbRow::into_row))
                })
            }

            fn api_keys<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<ApiKeyRow>> {
                Box::pin(async move {
                    let rows: Vec<KeyDbRow> = sqlx::query_as(KEYS_OF_WORKSPACE)
                        .bind(ws.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(read_err("api_keys", "list API keys"))?;
                    Ok(rows.into_iter().map(KeyDbRow::into_row).collect())
                })
            }

            fn revoke_api_key<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                key_id: &'a str,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(REVOKE_KEY)
                        .bind(ws.as_str())
                        .bind(key_id)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("revoke API key"))?;
                    Ok(done.rows_affected() == 1)
                })
            }
        }
    };
}

mod imp {
    use super::*;
    impl_key_store!(crate::store::sqlite::SqliteStore, pool, writer);
    impl_key_store!(crate::store::postgres::PgStore, pool, pool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = NewApiKey::generate().expect("random");
        let b = NewApiKey::generate().expect("random");
        assert!(a.key.starts_with(KEY_PREFIX));
        // 32 bytes in unpadded base64url: 43 characters.
        assert_eq!(a.key.len(), KEY_PREFIX.len() + 43);
        assert!(
            a.key[KEY_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a.key, b.key);
        assert_ne!(a.key_id, b.key_id);
        assert_eq!(a.hash, hash_key(&a.key));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.key));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
