//! Leases: one replica at a time owns a named piece of work (a CRM
//! connection's pull, watermark and write-back: `crm:<workspace>:<crm>`,
//! see `core::lease::crm_lease_name`), and a stale owner's late writes are
//! refused by the lease's fencing token.
//!
//! * **Acquire** is one upsert (`INSERT … ON CONFLICT (name) DO UPDATE …
//!   WHERE … RETURNING`): it takes a free or expired lease (the token grows
//!   by one), renews a live lease already held by the same holder (the
//!   token stays), and returns nothing when someone else holds a live
//!   lease. No row lock outlives the statement's short transaction.
//! * **Heartbeat** extends a live lease only if (holder, token) still match;
//!   `false` means the lease is lost and the holder must stop.
//! * **Release** makes the lease free at once (`expires_at = 0`) if it is
//!   still ours; the row stays, so the token never goes back.
//! * **Fenced writes** (`save_sync_state_fenced`, `record_writes_fenced`)
//!   check in their own transaction that the lease (name, holder, token) is
//!   still live at `now` before writing, and otherwise change nothing and
//!   return [`StoreError::Fenced`]. On PostgreSQL the check reads the lease
//!   row `FOR SHARE`, so a takeover (which updates that row) waits until the
//!   fenced write commits: a write is either before the takeover or refused.
//!   On SQLite every write transaction holds the database's write lock
//!   (`BEGIN IMMEDIATE`), which orders them the same way.
//!
//! Times are the caller's (`now` from its `Clock`), never the database's:
//! replicas need synchronised clocks, and the ttl must exceed the worst
//! clock skew plus the heartbeat interval (`core::lease::check_timing`).
//!
//! Every statement is the same text on SQLite and PostgreSQL except the
//! fence check (`FOR SHARE` exists only on PostgreSQL), so one macro
//! implements [`LeaseStore`] for both (like `store::crm` and `store::keys`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::crm::{SyncState, WriteOutcome, Written, record_writes_in, sync_state_query};
use super::{StoreError, StoreFuture};
use crate::core::lead::WorkspaceId;
use crate::core::lease::expiry;
use crate::core::value::UnixMillis;

/// A lease as its holder keeps it: what heartbeats, releases and fenced
/// writes are checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    /// Replica id (unique per process).
    pub holder: String,
    /// The fencing token: grows with every new ownership of `name`.
    pub token: i64,
    /// The lease lapses at this time (unix ms) unless renewed.
    pub expires_at: UnixMillis,
}

/// A stored lease, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub token: i64,
    /// 0 for a released lease.
    pub expires_at: UnixMillis,
    /// Start of the current ownership.
    pub acquired_at: UnixMillis,
    /// Last acquire, heartbeat or release.
    pub heartbeat_at: UnixMillis,
}

impl LeaseRow {
    /// Whether the lease is held (live) at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        crate::core::lease::is_live(self.expires_at, now)
    }
}

/// Why a fenced write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceReason {
    /// No lease of that name was ever taken.
    Missing,
    /// Another ownership began since: a newer token (possibly another holder).
    TakenOver { holder: String, token: i64 },
    /// Same token, but the lease expired or was released (`expires_at = 0`).
    Expired {
        expires_at: UnixMillis,
        now: UnixMillis,
    },
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceReason::Missing => f.write_str("no such lease exists"),
            FenceReason::TakenOver { holder, token } => {
                write!(f, "it is now held by `{holder}` with token {token}")
            }
            FenceReason::Expired { expires_at: 0, .. } => f.write_str("it was released"),
            FenceReason::Expired { expires_at, now } => {
                write!(f, "it expired at {expires_at} (now {now})")
            }
        }
    }
}

pub trait LeaseStore: Send + Sync {
    /// Takes `name` for `holder` until `now + ttl` if it is free or expired
    /// (a new ownership: the token grows by one), or renews it if `holder`
    /// already holds it live (token unchanged). `None` when another holder
    /// has it live. One statement.
    fn acquire_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> StoreFuture<'a, Option<Lease>>;

    /// Extends `lease` to `now + ttl` if it is still live and ours with the
    /// same token. `false`: the lease is lost (expired, taken over or
    /// released); stop the work it guards and acquire it again.
    fn heartbeat_lease<'a>(
        &'a self,
        lease: &'a Lease,
        ttl: Duration,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;

    /// Frees `lease` at once if it is still live and ours with the same
    /// token (`false` otherwise: nothing changes). The token counter stays,
    /// so the next ownership gets a larger token.
    fn release_lease<'a>(&'a self, lease: &'a Lease, now: UnixMillis) -> StoreFuture<'a, bool>;

    /// Every stored lease whose name starts with `prefix` (`""` for all),
    /// by name, live or not.
    fn leases<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<LeaseRow>>;

    /// `CrmStore::save_sync_state`, only under `lease`: in the same
    /// transaction, checks the lease is live at `now` with this holder and
    /// token; otherwise writes nothing and returns [`StoreError::Fenced`].
    fn save_sync_state_fenced<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        object: &'a str,
        state: &'a SyncState,
        lease: &'a Lease,
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;

    /// `CrmStore::record_writes`, only under `lease` (checked as in
    /// [`LeaseStore::save_sync_state_fenced`], also when there is nothing to
    /// record).
    fn record_writes_fenced<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        written: &'a [Written],
        outcomes: &'a [WriteOutcome],
        lease: &'a Lease,
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;
}

/// Take, renew or refuse. $1 name, $2 holder, $3 now, $4 expires_at.
/// The `SET` expressions read the row as it was: a renewal is the same
/// holder on a live lease; anything else that passes the `WHERE` (an
/// expired or released lease) is a new ownership with the next token.
const ACQUIRE: &str = "\
INSERT INTO leases (name, holder, token, expires_at, acquired_at, heartbeat_at)
VALUES ($1, $2, 1, $4, $3, $3)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $3
                 THEN leases.token ELSE leases.token + 1 END,
    acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $3
                       THEN leases.acquired_at ELSE excluded.acquired_at END,
    holder = excluded.holder,
    expires_at = excluded.expires_at,
    heartbeat_at = excluded.heartbeat_at
WHERE leases.expires_at <= $3 OR leases.holder = excluded.holder
RETURNING name, holder, token, expires_at, acquired_at, heartbeat_at";

/// $1 name, $2 holder, $3 token, $4 now, $5 new expires_at.
const HEARTBEAT: &str = "\
UPDATE leases SET expires_at = $5, heartbeat_at = $4
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > $4";

/// $1 name, $2 holder, $3 token, $4 now.
const RELEASE: &str = "\
UPDATE leases SET expires_at = 0, heartbeat_at = $4
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > $4";

/// $1 prefix.
const LIST: &str = "\
SELECT name, holder, token, expires_at, acquired_at, heartbeat_at FROM leases
WHERE substr(name, 1, length($1)) = $1 ORDER BY name";

/// $1 name.
const ONE: &str = "\
SELECT name, holder, token, expires_at, acquired_at, heartbeat_at FROM leases WHERE name = $1";

/// The fence: a row when (name, holder, token) is live at $4.
/// $1 name, $2 holder, $3 token, $4 now.
const FENCE_SQLITE: &str = "\
SELECT token FROM leases
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > $4";
/// PostgreSQL: the row stays share-locked until the write commits, so a
/// takeover (an update of the row) waits for it.
const FENCE_PG: &str = "\
SELECT token FROM leases
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > $4
FOR SHARE";

// The fenced writes run `store::crm`'s own statements after the fence
// (`tests/it/leases.rs` checks fenced and unfenced writes store alike).

#[derive(sqlx::FromRow)]
pub(crate) struct LeaseDbRow {
    name: String,
    holder: String,
    token: i64,
    expires_at: i64,
    acquired_at: i64,
    heartbeat_at: i64,
}

impl LeaseDbRow {
    fn into_row(self) -> LeaseRow {
        LeaseRow {
            name: self.name,
            holder: self.holder,
            token: self.token,
            expires_at: self.expires_at,
            acquired_at: self.acquired_at,
            heartbeat_at: self.heartbeat_at,
        }
    }

    fn into_lease(self) -> Lease {
        Lease {
            name: self.name,
            holder: self.holder,
            token: self.token,
            expires_at: self.expires_at,
        }
    }
}

/// The refusal of a fenced write under `lease` at `now`, given the lease's
/// row as it is now.
fn fenced(lease: &Lease, now: UnixMillis, current: Option<LeaseDbRow>) -> StoreError {
    let why = match current {
        None => FenceReason::Missing,
        Some(row) if row.token != lease.token || row.holder != lease.holder => {
            FenceReason::TakenOver {
                holder: row.holder,
                token: row.token,
            }
        }
        Some(row) => FenceReason::Expired {
            expires_at: row.expires_at,
            now,
        },
    };
    StoreError::Fenced {
        name: lease.name.clone(),
        holder: lease.holder.clone(),
        token: lease.token,
        why,
    }
}

/// Implements [`LeaseStore`] for a backend: `$write` is the pool (or single
/// writer connection) writes use, `$read` the pool reads use, `$db` the
/// sqlx database, `$begin` the statement that starts a write transaction
/// and `$fence` the backend's fence check.
macro_rules! impl_lease_store {
    ($ty:ty, $db:ty, $read:ident, $write:ident, $begin:expr, $fence:expr) => {
        /// Checks the fence inside `tx`; on refusal, says why (the caller
        /// then drops `tx`: nothing is written).
        async fn check_fence(
            tx: &mut sqlx::Transaction<'static, $db>,
            lease: &Lease,
            now: UnixMillis,
        ) -> Result<(), StoreError> {
            let held: Option<(i64,)> = sqlx::query_as($fence)
                .bind(lease.name.as_str())
                .bind(lease.holder.as_str())
                .bind(lease.token)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::db("check lease"))?;
            if held.is_some() {
                return Ok(());
            }
            let current: Option<LeaseDbRow> = sqlx::query_as(ONE)
                .bind(lease.name.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::db("check lease"))?;
            Err(fenced(lease, now, current))
        }

        impl $crate::store::lease::LeaseStore for $ty {
            fn acquire_lease<'a>(
                &'a self,
                name: &'a str,
                holder: &'a str,
                ttl: Duration,
                now: UnixMillis,
            ) -> StoreFuture<'a, Option<Lease>> {
                Box::pin(async move {
                    let row: Option<LeaseDbRow> = sqlx::query_as(ACQUIRE)
                        .bind(name)
                        .bind(holder)
                        .bind(now)
                        .bind(expiry(now, ttl))
                        .fetch_optional(&self.$write)
                        .await
                        .map_err(StoreError::db("acquire lease"))?;
                    Ok(row.map(LeaseDbRow::into_lease))
                })
            }

            fn heartbeat_lease<'a>(
                &'a self,
                lease: &'a Lease,
                ttl: Duration,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(HEARTBEAT)
                        .bind(lease.name.as_str())
                        .bind(lease.holder.as_str())
                        .bind(lease.token)
                        .bind(now)
                        .bind(expiry(now, ttl))
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("heartbeat lease"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release_lease<'a>(
                &'a self,
                lease: &'a Lease,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(RELEASE)
                        .bind(lease.name.as_str())
                        .bind(lease.holder.as_str())
                        .bind(lease.token)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("release lease"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn leases<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<LeaseRow>> {
                Box::pin(async move {
                    let rows: Vec<LeaseDbRow> = sqlx::query_as(LIST)
                        .bind(prefix)
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("list leases"))?;
                    Ok(rows.into_iter().map(LeaseDbRow::into_row).collect())
                })
            }

            fn save_sync_state_fenced<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                object: &'a str,
                state: &'a SyncState,
                lease: &'a Lease,
                now: UnixMillis,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self
                        .$write
                        .begin_with($begin)
                        .await
                        .map_err(StoreError::db("save sync state"))?;
                    check_fence(&mut tx, lease, now).await?;
                    sync_state_query!(ws, crm, object, state)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("save sync state"))?;
                    tx.commit()
                        .await
                        .map_err(StoreError::db("save sync state"))?;
                    Ok(())
                })
            }

            fn record_writes_fenced<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                written: &'a [Written],
                outcomes: &'a [WriteOutcome],
                lease: &'a Lease,
                now: UnixMillis,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self
                        .$write
                        .begin_with($begin)
                        .await
                        .map_err(StoreError::db("record writes"))?;
                    check_fence(&mut tx, lease, now).await?;
                    record_writes_in!(tx, ws, written, outcomes, now);
                    tx.commit().await.map_err(StoreError::db("record writes"))?;
                    Ok(())
                })
            }
        }
    };
}

mod sqlite_imp {
    use super::*;
    // `BEGIN IMMEDIATE`: the write lock from the first statement (see
    // `store::sqlite`), which also orders the fence check before any other
    // process's takeover.
    impl_lease_store!(
        crate::store::sqlite::SqliteStore,
        sqlx::Sqlite,
        pool,
        writer,
        "BEGIN IMMEDIATE",
        FENCE_SQLITE
    );
}

mod pg_imp {
    use super::*;
    impl_lease_store!(
        crate::store::postgres::PgStore,
        sqlx::Postgres,
        pool,
        pool,
        "BEGIN",
        FENCE_PG
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            name: "crm:acme:hubspot".into(),
            holder: "replica-a".into(),
            token: 3,
            expires_at: 10_000,
        }
    }

    fn row(holder: &str, token: i64, expires_at: i64) -> LeaseDbRow {
        LeaseDbRow {
            name: "crm:acme:hubspot".into(),
            holder: holder.into(),
            token,
            expires_at,
            acquired_at: 1,
            heartbeat_at: 2,
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            (None, FenceReason::Missing, "no such lease exists"),
            (
                Some(row("replica-b", 4, 40_000)),
                FenceReason::TakenOver {
                    holder: "replica-b".into(),
                    token: 4,
                },
                "now held by `replica-b` with token 4",
            ),
            (
                Some(row("replica-a", 3, 10_000)),
                FenceReason::Expired {
                    expires_at: 10_000,
                    now: 12_000,
                },
                "expired at 10000 (now 12000)",
            ),
            (
                Some(row("replica-a", 3, 0)),
                FenceReason::Expired {
                    expires_at: 0,
                    now: 12_000,
                },
                "it was released",
            ),
        ];
        for (current, want, text) in cases {
            let err = fenced(&lease(), 12_000, current);
            let msg = err.to_string();
            match err {
                StoreError::Fenced {
                    name,
                    holder,
                    token,
                    why,
                } => {
                    assert_eq!(name, "crm:acme:hubspot");
                    assert_eq!(holder, "replica-a");
                    assert_eq!(token, 3);
                    assert_eq!(why, want);
                }
                other => panic!("not a fencing error: {other}"),
            }
            assert!(msg.contains(text), "{msg}");
            assert!(msg.contains("crm:acme:hubspot"), "{msg}");
            assert!(msg.contains("nothing was written"), "{msg}");
        }
    }

    #[test]
    fn live_rows() {
        let r = row("a", 1, 100).into_row();
        assert!(r.is_live(99));
        assert!(!r.is_live(100));
    }
}
