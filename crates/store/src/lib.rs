//! duet's local store: one SQLite file per home.
//!
//! # What it holds
//! - the **change log**: every automerge change of the shared document, appended
//!   as it is made or received, never rewritten;
//! - **snapshots**: the compacted document as of some change, written every
//!   [`COMPACT_EVERY`] changes so that opening a home loads one snapshot and a
//!   short tail of changes;
//! - the **device key** (the file is created owner-only);
//! - **private data** (journal, review date), which never enters the document.
//!
//! # Decisions
//! - *One writer at a time, any number of processes.* Every edit runs inside a
//!   `BEGIN IMMEDIATE` transaction, after catching the in-memory document up with
//!   changes other processes appended. So twenty `duet` processes editing at once
//!   queue on SQLite's lock (WAL mode, a generous busy timeout) and each edit
//!   builds on all earlier ones: no "database is locked", no lost edit, and the
//!   device's automerge actor never forks its own history.
//! - *An acknowledged write is durable.* `synchronous = FULL`: a command reports
//!   success only after its transaction is on disk.
//! - *The log is the truth.* A damaged snapshot is rebuilt from the log. An
//!   entry of the log is one change, or a whole saved document that a new
//!   device received at its first sync and keeps as it came (see
//!   [`Write::document`]).
//!
//! This crate knows automerge's byte formats but nothing of the couple model's
//! meaning, and nothing of the network.

mod changes;
mod error;
mod peers;
mod pending;
mod private;
mod relays;
mod schema;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use automerge::Automerge;
use duet_model::{DeviceId, DeviceSecret};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use changes::{COMPACT_EVERY, COMPACT_TAIL_SHARE, LogEntry, Stats, Write};
pub use error::StoreError;
pub use peers::Peer;
pub use pending::{MAX_PENDING_BYTES, Pending};
pub use private::JournalEntry;
pub use relays::RelayCursor;
pub use schema::STORE_VERSION;

/// The database's file name inside a home folder.
pub const DB_FILE: &str = "duet.db";

/// How long a process waits for another to release the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An open home store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// This device's key, to sign its own changes as they are stored.
    device: DeviceSecret,
    /// The document as of change `seq` of the log, kept between operations so a
    /// long-running process only reads what is new.
    cache: Option<changes::Cached>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a new store starts with.
pub struct NewStore<'a> {
    /// This device's secret key.
    pub device: &'a DeviceSecret,
    /// This device's name.
    pub device_name: &'a str,
    /// Facts about the home (seat, space id) kept in the `meta` table.
    pub meta: &'a [(&'a str, &'a str)],
    /// The time, in milliseconds since the epoch.
    pub now_ms: i64,
}

impl Store {
    /// Creates a home in `dir` (made if missing, owner-only), with the first
    /// document changes made by `init` on an empty document whose actor is the
    /// device.
    pub fn create<E: From<StoreError>>(
        dir: &Path,
        new: &NewStore<'_>,
        init: impl FnOnce(&mut Automerge) -> Result<(), E>,
    ) -> Result<Store, E> {
        let path = dir.join(DB_FILE);
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io)?;
            // A folder we make holds only duet's files: keep it owner-only.
            restrict(dir, 0o700).map_err(io)?;
        }
        // Create the file ourselves, owner-only, so that SQLite (and its -wal and
        // -shm files, which copy the database's mode) never exposes the key.
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists(dir.to_path_buf()).into());
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.clone(),
                    source: e,
                }
                .into());
            }
        }
        let result = Store::create_in(&path, new, init);
        if result.is_err() {
            // Leave no half-made home behind.
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        result
    }

    fn create_in<E: From<StoreError>>(
        path: &Path,
        new: &NewStore<'_>,
        init: impl FnOnce(&mut Automerge) -> Result<(), E>,
    ) -> Result<Store, E> {
        let mut store = Store {
            conn: connect(path)?,
            path: path.to_path_buf(),
            device: DeviceSecret::from_bytes(&new.device.to_bytes()),
            cache: None,
        };
        let device = new.device.device_id();
        store
            .conn
            .execute(
                "INSERT INTO device (id, secret, public, name, created_at) VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    new.device.to_bytes().as_slice(),
                    device.as_bytes().as_slice(),
                    new.device_name,
                    new.now_ms
                ],
            )
            .map_err(|e| store.err(e))?;
        for (k, v) in new.meta {
            store.meta_set(k, v)?;
        }
        store.cache = Some(changes::Cached::empty(device));
        store.write(init)?;
        Ok(store)
    }

    /// Opens the home in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NoHome(dir.to_path_buf()));
        }
        let conn = connect(&path)?;
        // A home must have its device key; a database without one is not a home.
        let device = read_device(&conn, &path)?;
        Ok(Store {
            conn,
            path,
            device,
            cache: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, e)
    }

    fn damaged(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// This device's secret key.
    pub fn device_secret(&self) -> Result<DeviceSecret, StoreError> {
        read_device(&self.conn, &self.path)
    }

    /// This device's id.
    pub fn device_id(&self) -> Result<DeviceId, StoreError> {
        Ok(self.device.device_id())
    }

    /// This device's name.
    pub fn device_name(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT name FROM device WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Empties the shared document, for a device that joins another space at
    /// pairing: the change log, snapshots, attestations, sync states, waiting
    /// changes and relay positions go; the
    /// device key and private data stay. `meta` replaces the facts given.
    pub fn reset_space(&mut self, meta: &[(&str, &str)]) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "BEGIN IMMEDIATE;
                 DELETE FROM changes; DELETE FROM snapshots;
                 DELETE FROM attestations; DELETE FROM sync_states;
                 DELETE FROM pending_changes; DELETE FROM pending_attestations;
                 DELETE FROM relays; DELETE FROM meta WHERE key = 'founder';",
            )
            .map_err(|e| self.err(e))?;
        let mut result = Ok(());
        for (k, v) in meta {
            result = result.and_then(|()| self.meta_set(k, v));
        }
        match result.and_then(|()| self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))) {
            Ok(()) => {
                self.cache = Some(changes::Cached::empty(self.device.device_id()));
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.cache = None;
                Err(e)
            }
        }
    }

    /// A number that changes whenever another process commits to this database
    /// (SQLite's `data_version`): cheap to poll for edits made elsewhere.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// A fact about the home from the `meta` table.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records a fact about the home.
    pub fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Opens the database, sets it up, and brings its schema up to date.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
    let setup = |conn: &mut Connection| -> rusqlite::Result<schema::Migration> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Small pages for a new store (ignored for an existing one): an edit
        // touches about four pages, and WAL writes whole pages, so 1 KiB pages
        // write a quarter of what the default 4 KiB do.
        conn.pragma_update(None, "page_size", 1024)?;
        // Reading the schema is the first access: a file that is not a
        // database fails here, with a clear error.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "could not switch the database to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Up to 16 MiB of page cache (SQLite's default is 2 MiB), used only
        // as a write needs it: a sync that brings a long history change by
        // change (two devices that each wrote much apart) stores it in one
        // transaction, and with the default cache it spills pages midway
        // (69,537 change rows, 11 MB: 0.6 s, 0.4 s with this cache). A new
        // device's first sync is one entry (see `Write::document`).
        conn.pragma_update(None, "cache_size", -16384)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Deleted rows are overwritten with zeros, not left in free pages:
        // a journal entry or review date that is removed must not stay
        // readable in the file (see `Store::scrub` for the WAL's copy).
        conn.pragma_update(None, "secure_delete", true)?;
        schema::migrate(conn)
    };
    match setup(&mut conn).map_err(|e| StoreError::sqlite(path, e))? {
        schema::Migration::Newer(found) => {
            return Err(StoreError::NewerStore {
                path: path.to_path_buf(),
                found,
                supported: STORE_VERSION,
            });
        }
        schema::Migration::Ready => {}
    }
    Ok(conn)
}

/// Reads and checks the device key.
fn read_device(conn: &Connection, path: &Path) -> Result<DeviceSecret, StoreError> {
    let damaged = |detail: &str| StoreError::Damaged {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row("SELECT secret, public FROM device WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(|e| StoreError::sqlite(path, e))?;
    let (secret, public) = row.ok_or_else(|| damaged("it has no device key"))?;
    let secret = zeroize::Zeroizing::new(secret);
    let key = DeviceSecret::from_slice(&secret).ok_or_else(|| damaged("the device key is malformed"))?;
    if key.device_id().as_bytes().as_slice() != public.as_slice() {
        return Err(damaged("the device key does not match its public half"));
    }
    Ok(key)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
