//! A fresh, migrated store per test, on either backend.
//!
//! * SQLite: a file in a temporary directory (in a sub-directory that does
//!   not exist yet, so `open` has to create it).
//! * PostgreSQL: a fresh schema `t_<pid>_<n>_<nanos>` on `ENRICHD_TEST_PG_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/test`), selected through the
//!   connection's `search_path`; dropped when the [`TestDb`] is dropped. When
//!   the server is unreachable the test fails, unless `ENRICHD_SKIP_PG=1`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use enrichd::store::{self, Store};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, PgConnection};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A direct connection to the test database, for what the `Store` trait
/// cannot do (e.g. writing a corrupt row).
enum Raw {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub backend: &'static str,
    /// The URL `store` was opened with (PostgreSQL: with the test schema).
    pub url: String,
    raw: Raw,
    /// PostgreSQL: (server URL, schema) to drop at the end.
    pg_schema: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Runs raw SQL (one statement, no parameters) against the test database.
    pub async fn execute(&self, sql: &'static str) {
        let result = match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Raw::Pg(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        };
        if let Err(e) = result {
            panic!("raw SQL failed on {}: {e}\n{sql}", self.backend);
        }
    }
}

/// A migrated SQLite store in a fresh temporary directory, opened through
/// `store::open` with a `sqlite://` URL.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-yet").join("there").join("enrichd.db");
    let url = format!("sqlite://{}", file.display());
    let store = store::open(&url).await.expect("open sqlite store");
    store.migrate().await.expect("migrate sqlite");
    assert!(file.exists(), "open must create {}", file.display());
    let raw = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str(&url)
                .expect("sqlite url")
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("raw sqlite connection");
    TestDb {
        store,
        backend: "sqlite",
        url: url.clone(),
        raw: Raw::Sqlite(raw),
        pg_schema: None,
        _dir: Some(dir),
    }
}

fn pg_url() -> String {
    std::env::var("ENRICHD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

fn skip_pg() -> bool {
    matches!(
        std::env::var("ENRICHD_SKIP_PG").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

/// A migrated PostgreSQL store in a fresh schema, or `None` when PostgreSQL
/// is unreachable and `ENRICHD_SKIP_PG=1` (the test is then skipped).
pub async fn pg() -> Option<TestDb> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let base = pg_url();
    let admin = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&base)).await;
    let mut admin = match admin {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return unreachable_pg(&base, &e.to_string()),
        Err(_) => return unreachable_pg(&base, "timed out after 10 s"),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    // The schema name is made of digits and `t_` only: safe to splice.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    let _ = admin.close().await;

    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = store::open(&url).await.expect("open postgres store");
    store.migrate().await.expect("migrate postgres");
    let raw = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            PgConnectOptions::from_str(&base)
                .expect("postgres url")
                .options([("search_path", schema.as_str())]),
        )
        .await
        .expect("raw postgres connection");
    Some(TestDb {
        store,
        backend: "postgres",
        url: url.clone(),
        raw: Raw::Pg(raw),
        pg_schema: Some((base, schema)),
        _dir: None,
    })
}

fn unreachable_pg(url: &str, why: &str) -> Option<TestDb> {
    if skip_pg() {
        eprintln!("SKIPPED: PostgreSQL at {url} is unreachable ({why}) and ENRICHD_SKIP_PG=1");
        return None;
    }
    panic!(
        "PostgreSQL at {url} is unreachable: {why}.\n\
         The PostgreSQL store tests need a server: point ENRICHD_TEST_PG_URL at one \
         (e.g. ENRICHD_TEST_PG_URL=postgres://user:pass@host:5432/db; the user must be \
         allowed to create schemas), or set ENRICHD_SKIP_PG=1 to skip them."
    );
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((url, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop is synchronous: do the cleanup on a thread with its own runtime.
        // Best effort: a leftover `t_*` schema is harmless.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut conn) = PgConnection::connect(&url).await else {
                    return;
                };
                let _ = sqlx::query("SET lock_timeout = '5s'")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await;
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}
