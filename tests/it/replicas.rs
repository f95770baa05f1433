//! Several processes on one store (issue 7, deliverables 4 and 5), over
//! real `enrichd` processes:
//!
//! * SQLite is single-process: a second `enrichd run` on the same file
//!   exits non-zero at once, naming the file, the holder's pid and what to
//!   do, while the first keeps serving; other commands (`migrate`) still
//!   work next to it; once the first stops (SIGTERM or SIGKILL) the lock
//!   file it leaves behind blocks nobody.
//! * PostgreSQL migrations are safe when replicas start at once: several
//!   `enrichd migrate` processes, several independent pools, and two
//!   `enrichd run` replicas on one fresh schema all succeed and leave each
//!   migration applied exactly once; a failed migration does not leave the
//!   migration lock held.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use enrichd::store::{self, lockfile};
use sqlx::{Connection, PgConnection};

use crate::support::{free_port, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_enrichd");

/// A config with one workspace, the given store and (for `run`) a listen port.
fn write_config(dir: &Path, name: &str, store_url: &str, port: u16) -> PathBuf {
    let path = dir.join(name);
    let toml = format!(
        "[storage]\nurl = \"{store_url}\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
         shutdown_grace_secs = 2\n\n[[workspaces]]\nid = \"acme\"\n"
    );
    std::fs::write(&path, toml).expect("write config");
    path
}

/// `enrichd run` as its own process, stderr to a file; SIGKILLed when dropped.
struct Run {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Run {
    fn start(config: &Path, log: PathBuf) -> Run {
        let file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start enrichd run");
        Run {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until this process serves on `port`: its own log says it
    /// started (so the answer is not another test's daemon on a recycled
    /// port) and `/healthz` answers 200. `Err(logs)` if it exits first.
    async fn wait_up(&mut self, port: u16) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited ({status}):\n{}", self.logs()));
            }
            if self.logs().contains("enrichd run started")
                && let Some((200, _)) = http_get(port, "/healthz").await
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("enrichd run did not come up:\n{}", self.logs());
    }

    /// `enrichd run` on `store_url`, serving on a fresh port (another one
    /// if a parallel test took it first): the process, its config, its port.
    async fn serve(dir: &Path, name: &str, store_url: &str) -> (Run, PathBuf, u16) {
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let config = write_config(dir, &format!("{name}-{attempt}.toml"), store_url, port);
            let mut run = Run::start(&config, dir.join(format!("{name}-{attempt}.log")));
            match run.wait_up(port).await {
                Ok(()) => return (run, config, port),
                Err(logs) if logs.contains("cannot listen on") => last = logs,
                Err(logs) => panic!("enrichd run ({name}) {logs}"),
            }
        }
        panic!("enrichd run ({name}) found no free port:\n{last}");
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the exit.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal}");
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("enrichd run did not stop on SIG{signal}:\n{}", self.logs());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `enrichd <args>` to completion (at most `within`): status, stderr, time taken.
async fn enrichd(config: &Path, args: &[&str], within: Duration) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(
        within,
        tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("enrichd {args:?} did not finish within {within:?}"))
    .expect("start enrichd");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_one_sqlite_file_is_refused_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data").join("enrichd.db");
    let url = format!("sqlite://{}", db.display());

    let (mut first, config, port) = Run::serve(dir.path(), "first", &url).await;
    let db = db.canonicalize().expect("database file");
    let lock = lockfile::lock_path(&db);
    let holder = std::fs::read_to_string(&lock).expect("lock file");
    assert_eq!(
        holder.trim(),
        first.pid().to_string(),
        "the lock file names its holder"
    );

    // The same config again: refused at once, before binding the port or
    // touching the database.
    let (ok, stderr, took) = enrichd(&config, &["run"], Duration::from_secs(20)).await;
    assert!(!ok, "a second `enrichd run` must fail:\n{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "refused in {took:?}, not at once"
    );
    for what in [
        "another `enrichd run`",
        &format!("pid {}", first.pid()),
        &db.display().to_string(),
        &lock.display().to_string(),
        "Stop that process",
        "[storage] url",
        "PostgreSQL",
    ] {
        assert!(stderr.contains(what), "stderr lacks `{what}`:\n{stderr}");
    }

    // The first is untouched and still serves.
    assert_eq!(
        http_get(port, "/healthz").await.map(|(s, _)| s),
        Some(200),
        "{}",
        first.logs()
    );
    // Other commands take no lock: SQLite serialises their writes.
    let (ok, out, _) = enrichd(&config, &["migrate"], Duration::from_secs(60)).await;
    assert!(ok, "`enrichd migrate` next to a running daemon:\n{out}");
    assert_eq!(http_get(port, "/healthz").await.map(|(s, _)| s), Some(200));
    assert!(
        !first.logs().contains("\"ERROR\""),
        "the first daemon logged an error:\n{}",
        first.logs()
    );

    // Stopped cleanly: the lock file stays behind and blocks nobody.
    let status = first.stop("TERM");
    assert!(status.success(), "{status}:\n{}", first.logs());
    assert!(lock.exists(), "the lock file is left in place");
    let (mut second, _, _) = Run::serve(dir.path(), "second", &url).await;
    let holder = std::fs::read_to_string(&lock).expect("lock file");
    assert_eq!(holder.trim(), second.pid().to_string());

    // Killed outright: the OS drops the lock with the process.
    second.stop("KILL");
    let (mut third, _, _) = Run::serve(dir.path(), "third", &url).await;
    let status = third.stop("TERM");
    assert!(status.success(), "{status}:\n{}", third.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_sqlite_takes_no_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut one, _, _) = Run::serve(dir.path(), "one", "sqlite::memory:").await;
    let (mut two, _, _) = Run::serve(dir.path(), "two", "sqlite::memory:").await;
    assert!(one.stop("TERM").success(), "{}", one.logs());
    assert!(two.stop("TERM").success(), "{}", two.logs());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no lock file for memory: {leftovers:?}"
    );
}

// ------------------------------------------------------------- PostgreSQL

/// A fresh, empty (unmigrated) schema on the test server, dropped at the end.
struct Schema {
    base: String,
    name: String,
    /// The server URL with the schema as `search_path`.
    url: String,
}

impl Schema {
    /// `None` when PostgreSQL is unreachable and `ENRICHD_SKIP_PG=1`.
    async fn fresh(tag: &str) -> Option<Schema> {
        let base = std::env::var("ENRICHD_TEST_PG_URL")
            .unwrap_or_else(|_| crate::db::DEFAULT_PG_URL.to_string());
        let conn = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&base))
            .await
            .map_err(|_| "timed out after 10 s".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut admin = match conn {
            Ok(c) => c,
            Err(why) => {
                let skip = matches!(
                    std::env::var("ENRICHD_SKIP_PG").as_deref(),
                    Ok("1" | "true" | "yes")
                );
                assert!(
                    skip,
                    "PostgreSQL at {base} is unreachable: {why} (set ENRICHD_SKIP_PG=1 to skip)"
                );
                eprintln!("SKIPPED: PostgreSQL at {base} is unreachable ({why})");
                return None;
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("r_{tag}_{}_{nanos}", std::process::id());
        // Letters, digits and `_` only: safe to splice.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .expect("create schema");
        let _ = admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Schema { base, name, url })
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connect")
    }

    /// (version, rows, all successful) per version in `_sqlx_migrations`.
    async fn applied(&self) -> Vec<(i64, i64, bool)> {
        let mut c = self.conn().await;
        let rows = sqlx::query_as(
            "SELECT version, COUNT(*), BOOL_AND(success) FROM _sqlx_migrations \
             GROUP BY version ORDER BY version",
        )
        .fetch_all(&mut c)
        .await
        .expect("read _sqlx_migrations");
        let _ = c.close().await;
        rows
    }

    /// Migrated exactly once, completely: every shipped migration has one
    /// successful row, nothing is pending, the tables are there.
    async fn assert_migrated_once(&self) {
        let applied = self.applied().await;
        let shipped = shipped_versions();
        let versions: Vec<i64> = applied.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, shipped, "applied versions: {applied:?}");
        assert!(
            applied.iter().all(|(_, n, ok)| *n == 1 && *ok),
            "each version once, successful: {applied:?}"
        );
        let store = store::open(&self.url).await.expect("open");
        let pending = store.pending_migrations().await.expect("pending");
        assert!(pending.is_empty(), "pending: {pending:?}");
        let mut c = self.conn().await;
        for table in ["leads", "ledger", "jobs"] {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_one(&mut c)
            .await
            .expect("information_schema");
            assert_eq!(n, 1, "table {table} in {}", self.name);
        }
        let _ = c.close().await;
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.base.clone(), self.name.clone());
        // Best effort, on a thread with its own runtime (drop is synchronous).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut c) = PgConnection::connect(&url).await else {
                    return;
                };
                let _ = sqlx::query("SET lock_timeout = '5s'").execute(&mut c).await;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .execute(&mut c)
                .await;
                let _ = c.close().await;
            });
        })
        .join();
    }
}

/// The versions of `migrations/postgres/NNNN_*.sql`.
fn shipped_versions() -> Vec<i64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut v: Vec<i64> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    assert!(!v.is_empty(), "no migrations in {}", dir.display());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_migrate_processes_started_together_all_succeed_and_migrate_once() {
    const PROCESSES: usize = 6;
    let Some(schema) = Schema::fresh("mig").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "config.toml", &schema.url, free_port());
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..PROCESSES {
        let config = config.clone();
        all.spawn(async move { enrichd(&config, &["migrate"], Duration::from_secs(120)).await });
    }
    let mut done = 0;
    while let Some(r) = all.join_next().await {
        let (ok, out, _) = r.expect("join");
        assert!(ok, "a concurrent `enrichd migrate` failed:\n{out}");
        assert!(out.contains("migrations applied"), "{out}");
        done += 1;
    }
    assert_eq!(done, PROCESSES);
    schema.assert_migrated_once().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_independent_pools_migrating_at_once_all_succeed() {
    const POOLS: usize = 5;
    let Some(schema) = Schema::fresh("pools").await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..POOLS {
        stores.push(store::open(&schema.url).await.expect("open"));
    }
    let mut all = tokio::task::JoinSet::new();
    for s in stores {
        all.spawn(async move { s.migrate().await.map(|()| s) });
    }
    while let Some(r) = all.join_next().await {
        if let Err(e) = r.expect("join") {
            panic!("a concurrent migrate failed: {e}");
        }
    }
    schema.assert_migrated_once().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_run_replicas_take_no_lock_and_migrate_at_start() {
    let Some(schema) = Schema::fresh("run").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (d1, d2) = (dir.path().to_path_buf(), dir.path().to_path_buf());
    let (u1, u2) = (schema.url.clone(), schema.url.clone());
    // Started together: both migrate the empty schema at once.
    let one = tokio::spawn(async move { Run::serve(&d1, "one", &u1).await.0 });
    let two = tokio::spawn(async move { Run::serve(&d2, "two", &u2).await.0 });
    let (mut one, mut two) = (one.await.expect("one"), two.await.expect("two"));
    schema.assert_migrated_once().await;
    assert!(one.stop("TERM").success(), "{}", one.logs());
    assert!(two.stop("TERM").success(), "{}", two.logs());
}

/// sqlx's migration lock is a session lock that a failed migration does not
/// release: the store migrates on a connection it then closes, so a failure
/// in one store does not leave every later migration on the database
/// waiting (the failed store's pool is still alive here).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_failed_migration_leaves_no_lock_behind() {
    let Some(broken) = Schema::fresh("broken").await else {
        return;
    };
    let Some(fresh) = Schema::fresh("after").await else {
        return;
    };
    let mut c = broken.conn().await;
    // The first migration creates `leads`: a table already there fails it.
    sqlx::query("CREATE TABLE leads (x int)")
        .execute(&mut c)
        .await
        .expect("create conflicting table");
    let _ = c.close().await;
    let failing = store::open(&broken.url).await.expect("open");
    let err = failing.migrate().await.expect_err("migration must fail");
    assert!(err.to_string().contains("migration"), "{err}");

    let other = store::open(&fresh.url).await.expect("open");
    tokio::time::timeout(Duration::from_secs(30), other.migrate())
        .await
        .expect("a later migration must not wait on a lock left by the failed one")
        .expect("migrate");
    fresh.assert_migrated_once().await;
    drop(failing);
}
