//! One `enrichd run` per SQLite file.
//!
//! SQLite is the single-process store: several daemons on one file would
//! each sync the same CRM connections and work the same job queue with
//! nothing sharing their rate limits. So `enrichd run` takes an exclusive
//! OS advisory lock (`File::try_lock`: `flock` on Unix, `LockFileEx` on
//! Windows) on `<database>.lock` next to the database before it opens the
//! store, writes its pid into that file, and holds the lock for its whole
//! life. A second `enrichd run` on the same file fails at once with
//! [`LockError::Held`], naming the file, the holder's pid and what to do.
//!
//! The lock belongs to the open file, so the OS releases it when the
//! process ends, however it ends (SIGKILL included): a lock file left
//! behind blocks nobody, and it is never deleted (deleting it would let a
//! third process lock a new file while a second still holds the old one).
//! The other commands (`sync --once`, `bulk`, `demo`, `enrich`, ...) take no
//! lock: they are short-lived, SQLite itself serialises their writes with
//! the daemon's (one writer, busy timeout), and an operator may well run
//! them next to a daemon. In-memory databases need no lock.
//!
//! The lock is advisory: a file system without working locks (some network
//! file systems) fails with [`LockError::Io`] rather than running unguarded.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: another `enrichd run` on this file.
    #[error(
        "another `enrichd run`{} holds the SQLite database {} (lock file {}): SQLite serves one \
         `enrichd run` at a time. Stop that process first, or, to run several replicas, set \
         `[storage] url` to one PostgreSQL database for all of them (postgres://user@host/db)",
        holder(*pid),
        db.display(),
        lock.display()
    )]
    Held {
        db: PathBuf,
        lock: PathBuf,
        /// The holder's pid as it wrote it into the lock file, when readable.
        pid: Option<u32>,
    },
    /// The lock file could not be created, locked or written.
    #[error(
        "cannot take the single-process lock of the SQLite database {} ({op} {}): {source}. \
         Check that the directory is writable by this user and that its file system supports \
         file locks (a local disk, not a network share)",
        db.display(),
        lock.display()
    )]
    Io {
        db: PathBuf,
        lock: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// The exclusive lock on a SQLite database's lock file, held until dropped
/// (or the process ends).
#[derive(Debug)]
pub struct ProcessLock {
    /// The lock lives with this open file.
    _file: File,
    path: PathBuf,
}

impl ProcessLock {
    /// Locks `<db>.lock` for this process, creating it (and the database's
    /// directory) if missing, and writes this process's pid into it. Never
    /// waits: a lock held elsewhere is [`LockError::Held`] at once.
    pub fn acquire(db: &Path) -> Result<ProcessLock, LockError> {
        let db = canonical(db);
        let lock = lock_path(&db);
        let io = |op: &'static str| {
            let (db, lock) = (db.clone(), lock.clone());
            move |source| LockError::Io {
                db,
                lock,
                op,
                source,
            }
        };
        if let Some(dir) = lock.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        }
        // Not truncated on open: that would erase the holder's pid.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_pid(&mut file);
                return Err(LockError::Held { db, lock, pid });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        file.set_len(0).map_err(io("write"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("write"))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write"))?;
        file.flush().map_err(io("write"))?;
        Ok(ProcessLock {
            _file: file,
            path: lock,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<db>.lock`, next to the database.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The database path with symbolic links and `..` resolved where they
/// exist, so two spellings of one file share one lock file. The file may
/// not exist yet (first start): then its directory is resolved, or the
/// path is kept as given when that does not exist either.
fn canonical(db: &Path) -> PathBuf {
    if let Ok(p) = db.canonicalize() {
        return p;
    }
    match (db.parent(), db.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| db.to_path_buf()),
        _ => db.to_path_buf(),
    }
}

/// The pid a holder wrote, if the file holds one (it may be empty for a
/// moment after the holder locked it).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_is_next_to_the_database() {
        assert_eq!(
            lock_path(Path::new("/var/lib/enrichd/enrichd.db")),
            PathBuf::from("/var/lib/enrichd/enrichd.db.lock")
        );
        assert_eq!(lock_path(Path::new("x.db")), PathBuf::from("x.db.lock"));
    }

    #[test]
    fn sqlite_urls_name_their_file_and_memory_has_none() {
        use crate::store::sqlite::database_file;
        for url in [
            "sqlite::memory:",
            "sqlite://file:x?mode=memory&cache=shared",
        ] {
            assert!(matches!(database_file(url), Ok(None)), "{url}");
        }
        let file = database_file("sqlite:///var/lib/enrichd/enrichd.db?mode=rwc");
        assert_eq!(
            file.ok().flatten(),
            Some(PathBuf::from("/var/lib/enrichd/enrichd.db"))
        );
        let file = database_file("sqlite://data/enrichd.db");
        assert_eq!(file.ok().flatten(), Some(PathBuf::from("data/enrichd.db")));
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("enrichd.db");
        let first = ProcessLock::acquire(&db).expect("first lock");
        assert!(first.path().ends_with("enrichd.db.lock"));
        let written = std::fs::read_to_string(first.path()).expect("lock file");
        assert_eq!(written.trim(), std::process::id().to_string());

        // A second open file description, as another process would have.
        let err = ProcessLock::acquire(&db).expect_err("second lock must fail");
        let LockError::Held { pid, .. } = &err else {
            panic!("expected Held, got {err:?}");
        };
        assert_eq!(*pid, Some(std::process::id()));
        let msg = err.to_string();
        assert!(msg.contains("another `enrichd run`"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("enrichd.db"), "{msg}");
        assert!(msg.contains("[storage] url"), "{msg}");
        assert!(msg.contains("PostgreSQL"), "{msg}");

        // The refused attempt did not erase the holder's pid.
        let still = std::fs::read_to_string(first.path()).expect("lock file");
        assert_eq!(still.trim(), std::process::id().to_string());

        drop(first);
        let again = ProcessLock::acquire(&db).expect("lock after release");
        drop(again);
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("enrichd.db");
        std::fs::write(lock_path(&db), "999999\nleft over\n").expect("stale file");
        let lock = ProcessLock::acquire(&db).expect("stale file is not a lock");
        let written = std::fs::read_to_string(lock.path()).expect("lock file");
        assert_eq!(written, format!("{}\n", std::process::id()));
    }

    #[test]
    fn the_directory_is_created_and_other_spellings_share_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a").join("b").join("enrichd.db");
        let _held = ProcessLock::acquire(&db).expect("lock creates the directory");
        let other = dir
            .path()
            .join("a")
            .join("b")
            .join("..")
            .join("b")
            .join("enrichd.db");
        assert!(matches!(
            ProcessLock::acquire(&other),
            Err(LockError::Held { .. })
        ));
    }

    #[test]
    fn an_empty_lock_file_gives_no_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("enrichd.db");
        let lock = lock_path(&db);
        let holder = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .expect("open");
        holder.try_lock().expect("lock");
        match ProcessLock::acquire(&db) {
            Err(LockError::Held { pid: None, .. }) => {}
            other => panic!("expected Held without a pid, got {other:?}"),
        }
        let msg = ProcessLock::acquire(&db).expect_err("held").to_string();
        assert!(msg.starts_with("another `enrichd run` holds"), "{msg}");
    }
}
