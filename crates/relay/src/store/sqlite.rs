//! The default store: one SQLite database in the relay's data folder.
//!
//! WAL with `synchronous = FULL`, so a bundle the relay answered `Posted` for
//! survives a crash or power cut; the folder is made owner-only (`0700`) and
//! the database `0600` (SQLite's `-wal` and `-shm` files copy its mode). The
//! schema version is `PRAGMA user_version`; a newer one is refused.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duet_model::DeviceId;
use duet_sync::proto::relay::{MAX_FETCH_ITEMS, SignedAccess, SpaceTag};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{Fetched, Registered, Registrant, RelayStore, StoreError, delivered_upto};

/// The database's file name inside the data folder.
pub(crate) const DB_FILE: &str = "relay.db";

/// The schema this build writes.
const SCHEMA: i64 = 2;

pub(super) const SCHEMA_V1: &str = "
CREATE TABLE spaces (
    tag BLOB PRIMARY KEY NOT NULL,   -- the 16-byte space tag
    access BLOB NOT NULL,            -- the signed access list (SignedAccess::to_bytes)
    last_seq INTEGER NOT NULL        -- the last sequence number given out
);
CREATE TABLE bundles (
    id INTEGER PRIMARY KEY,
    space BLOB NOT NULL,
    seq INTEGER NOT NULL,
    poster BLOB NOT NULL,            -- the posting device's key
    posted_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    bytes BLOB NOT NULL,             -- last, so reading the columns before it skips its pages
    UNIQUE (space, seq)
);
CREATE INDEX bundles_by_age ON bundles (posted_ms);
CREATE TABLE acks (
    space BLOB NOT NULL,
    device BLOB NOT NULL,
    upto INTEGER NOT NULL,
    PRIMARY KEY (space, device)
) WITHOUT ROWID;
";

/// Version 2: who registered each space (for the per-device and
/// per-address limits) and the bytes kept over all spaces (for the storage
/// cap), kept by triggers so no write path can miss it. Spaces registered
/// before it count for no device or address.
const SCHEMA_V2: &str = "
ALTER TABLE spaces ADD COLUMN registrar BLOB;  -- the registering device's key
ALTER TABLE spaces ADD COLUMN source BLOB;     -- its network source (16 bytes, see Source)
CREATE INDEX spaces_by_registrar ON spaces (registrar);
CREATE INDEX spaces_by_source ON spaces (source);
CREATE TABLE usage (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    bytes INTEGER NOT NULL           -- bundles' sizes and access lists' lengths, over all spaces
);
INSERT INTO usage (one, bytes) VALUES (1,
    (SELECT coalesce(sum(size), 0) FROM bundles) + (SELECT coalesce(sum(length(access)), 0) FROM spaces));
CREATE TRIGGER usage_bundle_in AFTER INSERT ON bundles
    BEGIN UPDATE usage SET bytes = bytes + NEW.size; END;
CREATE TRIGGER usage_bundle_out AFTER DELETE ON bundles
    BEGIN UPDATE usage SET bytes = bytes - OLD.size; END;
CREATE TRIGGER usage_space_in AFTER INSERT ON spaces
    BEGIN UPDATE usage SET bytes = bytes + length(NEW.access); END;
CREATE TRIGGER usage_space_set AFTER UPDATE OF access ON spaces
    BEGIN UPDATE usage SET bytes = bytes + length(NEW.access) - length(OLD.access); END;
";

/// How long a write waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`RelayStore`] in a SQLite database.
#[derive(Debug)]
pub struct SqliteRelayStore {
    conn: Connection,
    path: PathBuf,
}

/// Makes `dir` if it is missing, owner-only.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    Ok(())
}

fn int(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Overflow)
}

fn uint(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Damaged(format!("negative number {n}")))
}

fn device(bytes: &[u8]) -> Result<DeviceId, StoreError> {
    DeviceId::from_bytes(bytes).ok_or_else(|| StoreError::Damaged("a device key".into()))
}

impl SqliteRelayStore {
    /// Opens (or creates) the store in the folder `dir`.
    pub fn open(dir: &Path) -> Result<SqliteRelayStore, StoreError> {
        private_dir(dir)?;
        let path = dir.join(DB_FILE);
        // Made here, owner-only, before SQLite sees it.
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(sqlite)?;
        let found = (|| -> rusqlite::Result<i64> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(%mode, "could not switch the relay's database to WAL mode");
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if found == 0 {
                tx.execute_batch(SCHEMA_V1)?;
            }
            if found < 2 {
                tx.execute_batch(SCHEMA_V2)?;
                tx.pragma_update(None, "user_version", SCHEMA)?;
            }
            tx.commit()?;
            Ok(found)
        })()
        .map_err(sqlite)?;
        if found > SCHEMA {
            return Err(StoreError::Newer {
                path,
                found,
                supported: SCHEMA,
            });
        }
        Ok(SqliteRelayStore { conn, path })
    }

    /// Names the database file in a SQLite error.
    fn named<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        r.map_err(|e| match e {
            StoreError::Sqlite { source, .. } => StoreError::Sqlite {
                path: self.path.clone(),
                source,
            },
            other => other,
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Inside the store's helpers, which have no path at hand; the store's
    /// methods fill it in.
    fn from(source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: PathBuf::new(),
            source,
        }
    }
}

fn decode_access(bytes: &[u8]) -> Result<SignedAccess, StoreError> {
    SignedAccess::from_bytes(bytes).map_err(|e| StoreError::Damaged(e.to_string()))
}

fn stored_access(conn: &Connection, tag: &[u8]) -> Result<Option<SignedAccess>, StoreError> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT access FROM spaces WHERE tag = ?1", [tag], |r| r.get(0))
        .optional()?;
    stored.map(|b| decode_access(&b)).transpose()
}

impl RelayStore for SqliteRelayStore {
    fn access(&mut self, space: &SpaceTag) -> Result<Option<SignedAccess>, StoreError> {
        let r = stored_access(&self.conn, &space.0);
        self.named(r)
    }

    fn set_access(
        &mut self,
        access: &SignedAccess,
        replaces: Option<u64>,
        by: &Registrant,
    ) -> Result<bool, StoreError> {
        let r = (|| {
            let bytes = access
                .to_bytes()
                .map_err(|e| StoreError::Damaged(e.to_string()))?;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tag = &access.space.0[..];
            let current = stored_access(&tx, tag)?.map(|a| a.serial);
            if current != replaces {
                return Ok(false);
            }
            match current {
                None => tx.execute(
                    "INSERT INTO spaces (tag, access, last_seq, registrar, source) VALUES (?1, ?2, 0, ?3, ?4)",
                    params![tag, bytes, &by.device.as_bytes()[..], &by.source.0[..]],
                )?,
                Some(_) => tx.execute(
                    "UPDATE spaces SET access = ?2 WHERE tag = ?1",
                    params![tag, bytes],
                )?,
            };
            tx.commit()?;
            Ok(true)
        })();
        self.named(r)
    }

    fn registered(&mut self, by: &Registrant) -> Result<Registered, StoreError> {
        let r = (|| {
            let count = |column: &str, key: &[u8]| -> Result<u64, StoreError> {
                let sql = format!("SELECT count(*) FROM spaces WHERE {column} = ?1");
                uint(self.conn.query_row(&sql, [key], |r| r.get(0))?)
            };
            Ok(Registered {
                by_device: count("registrar", &by.device.as_bytes()[..])?,
                from_source: count("source", &by.source.0[..])?,
            })
        })();
        self.named(r)
    }

    fn total_usage(&mut self) -> Result<u64, StoreError> {
        let r = self
            .conn
            .query_row("SELECT bytes FROM usage", [], |r| r.get::<_, i64>(0))
            .map_err(StoreError::from)
            .and_then(uint);
        self.named(r)
    }

    fn append(
        &mut self,
        space: &SpaceTag,
        poster: &DeviceId,
        bundle: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let r = (|| {
            let (now, size) = (int(now_ms)?, int(bundle.len() as u64)?);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let seq: Option<i64> = tx
                .query_row(
                    "UPDATE spaces SET last_seq = last_seq + 1 WHERE tag = ?1 RETURNING last_seq",
                    [&space.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(seq) = seq else {
                return Err(StoreError::UnknownSpace);
            };
            tx.execute(
                "INSERT INTO bundles (space, seq, poster, posted_ms, size, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&space.0[..], seq, &poster.as_bytes()[..], now, size, bundle],
            )?;
            tx.commit()?;
            uint(seq)
        })();
        self.named(r)
    }

    fn fetch(
        &mut self,
        space: &SpaceTag,
        after: u64,
        not_from: &DeviceId,
        max_bytes: usize,
    ) -> Result<Fetched, StoreError> {
        let r = (|| {
            let mut out = Fetched::default();
            // Sequence numbers are stored as i64: none is after a larger one.
            let Ok(after) = i64::try_from(after) else {
                return Ok(out);
            };
            let mut q = self.conn.prepare_cached(
                "SELECT seq, size, bytes FROM bundles
                 WHERE space = ?1 AND seq > ?2 AND poster <> ?3 ORDER BY seq",
            )?;
            let mut rows = q.query(params![&space.0[..], after, &not_from.as_bytes()[..]])?;
            let mut total = 0usize;
            while let Some(row) = rows.next()? {
                let seq = uint(row.get(0)?)?;
                let size = usize::try_from(row.get::<_, i64>(1)?).map_err(|_| StoreError::Overflow)?;
                let fits = total.saturating_add(size) <= max_bytes;
                if !out.items.is_empty() && (!fits || out.items.len() >= MAX_FETCH_ITEMS) {
                    out.more = true;
                    break;
                }
                total = total.saturating_add(size);
                // The bundle's pages are read only for the bundles handed out.
                out.items.push((seq, row.get(2)?));
            }
            Ok(out)
        })();
        self.named(r)
    }

    fn ack(&mut self, space: &SpaceTag, device: &DeviceId, upto: u64) -> Result<(), StoreError> {
        // Larger than any stored number: clamped below anyway.
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let r = self
            .conn
            .execute(
                "INSERT INTO acks (space, device, upto)
                 SELECT tag, ?2, min(?3, last_seq) FROM spaces WHERE tag = ?1
                 ON CONFLICT (space, device) DO UPDATE SET upto = max(upto, excluded.upto)",
                params![&space.0[..], &device.as_bytes()[..], upto],
            )
            .map_err(StoreError::from)
            .and_then(|changed| {
                if changed == 0 {
                    Err(StoreError::UnknownSpace)
                } else {
                    Ok(())
                }
            });
        self.named(r)
    }

    fn usage(&mut self, space: &SpaceTag) -> Result<u64, StoreError> {
        let r = self
            .conn
            .query_row(
                "SELECT coalesce(sum(size), 0) FROM bundles WHERE space = ?1",
                [&space.0[..]],
                |r| r.get::<_, i64>(0),
            )
            .map_err(StoreError::from)
            .and_then(uint);
        self.named(r)
    }

    fn expire(
        &mut self,
        space: Option<&SpaceTag>,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<usize, StoreError> {
        let r = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut deleted = 0;
            if let Some(cutoff) = now_ms.checked_sub(retention_ms) {
                let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
                deleted += match space {
                    Some(s) => tx.execute(
                        "DELETE FROM bundles WHERE space = ?1 AND posted_ms <= ?2",
                        params![&s.0[..], cutoff],
                    )?,
                    None => tx.execute("DELETE FROM bundles WHERE posted_ms <= ?1", [cutoff])?,
                };
            }
            let spaces: Vec<Vec<u8>> = match space {
                Some(s) => vec![s.0.to_vec()],
                None => {
                    let mut q = tx.prepare_cached("SELECT DISTINCT space FROM bundles")?;
                    q.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
                }
            };
            for s in spaces {
                deleted += expire_delivered(&tx, &s)?;
            }
            tx.commit()?;
            Ok(deleted)
        })();
        self.named(r)
    }
}

/// Deletes the delivered bundles of one space, inside `tx`.
fn expire_delivered(tx: &rusqlite::Transaction<'_>, space: &[u8]) -> Result<usize, StoreError> {
    let Some(access) = stored_access(tx, space)? else {
        return Ok(0);
    };
    let mut acks = HashMap::new();
    {
        let mut q = tx.prepare_cached("SELECT device, upto FROM acks WHERE space = ?1")?;
        let rows = q.query_map([space], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (d, upto) = row?;
            acks.insert(device(&d)?, uint(upto)?);
        }
    }
    let posters: Vec<Vec<u8>> = {
        let mut q = tx.prepare_cached("SELECT DISTINCT poster FROM bundles WHERE space = ?1")?;
        q.query_map([space], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut deleted = 0;
    for poster in posters {
        let who = device(&poster)?;
        if let Some(upto) = delivered_upto(&access.devices, &who, |d| acks.get(d).copied().unwrap_or(0)) {
            deleted += tx.execute(
                "DELETE FROM bundles WHERE space = ?1 AND poster = ?2 AND seq <= ?3",
                params![space, poster, int(upto)?],
            )?;
        }
    }
    Ok(deleted)
}
