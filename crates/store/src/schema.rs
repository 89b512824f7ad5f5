//! The SQLite schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Each migration is a batch of SQL run in one transaction together with the
//! version bump, so a crash mid-migration leaves the previous version intact.

use rusqlite::Connection;

/// The store version this build writes.
pub const STORE_VERSION: i64 = 4;

/// Migrations: entry `i` takes the store from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first layout.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- This device's key pair. One row.
    CREATE TABLE device (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        secret     BLOB NOT NULL,
        public     BLOB NOT NULL,
        name       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;

    -- Every automerge change of the shared document, in the order applied. The
    -- log is the truth: snapshots only speed up loading and can be rebuilt.
    CREATE TABLE changes (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        hash      BLOB NOT NULL UNIQUE,
        actor     BLOB NOT NULL,
        bytes     BLOB NOT NULL,
        stored_at INTEGER NOT NULL
    ) STRICT;

    -- The compacted document as of change `upto_seq`.
    CREATE TABLE snapshots (
        id         INTEGER PRIMARY KEY,
        upto_seq   INTEGER NOT NULL,
        bytes      BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;

    -- Private data: never part of the shared document, never sent anywhere.
    CREATE TABLE journal (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        written_at INTEGER NOT NULL,
        text       TEXT NOT NULL
    ) STRICT;

    CREATE TABLE private (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    ",
    // 1 -> 2: sync. The newest attestation (signature over its latest change) of
    // every device, the automerge sync state per peer, and peers' addresses.
    "
    CREATE TABLE attestations (
        device    BLOB PRIMARY KEY,
        hash      BLOB NOT NULL,
        seq       INTEGER NOT NULL,
        signature BLOB NOT NULL
    ) STRICT;

    CREATE TABLE sync_states (
        device BLOB PRIMARY KEY,
        state  BLOB NOT NULL
    ) STRICT;

    CREATE TABLE peers (
        device  BLOB PRIMARY KEY,
        address TEXT NOT NULL
    ) STRICT;
    ",
    // 2 -> 3: relays and bundles. Changes from bundles (files, the relay) that wait for their
    // dependencies or for a signature that reaches them, and the verified
    // attestations that came with them. Not part of the document until placed.
    "
    CREATE TABLE pending_changes (
        hash        BLOB PRIMARY KEY,
        bytes       BLOB NOT NULL,
        received_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE pending_attestations (
        device    BLOB NOT NULL,
        hash      BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (device, hash)
    ) STRICT;

    -- Where this device stands with each relay: the last bundle fetched, and
    -- heads whose history the relay already holds (posted or fetched).
    CREATE TABLE relays (
        address   TEXT PRIMARY KEY,
        fetched   INTEGER NOT NULL,
        has_heads BLOB NOT NULL
    ) STRICT;
    ",
    // 3 -> 4: an entry of the log may hold a whole saved document (how a new
    // device's first sync keeps the history it received: one entry, not one
    // per change). `count` is how many changes an entry holds; such an entry
    // takes the log's positions up to its `seq`, its `hash` is the SHA-256 of
    // its bytes and its `actor` is empty. Automerge's chunk header tells the
    // two kinds apart.
    "
    ALTER TABLE changes ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ",
];

/// Outcome of checking the schema.
pub(crate) enum Migration {
    /// Nothing to do or done.
    Ready,
    /// The store is newer than this build.
    Newer(i64),
}

/// Brings the schema up to [`STORE_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migration> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > STORE_VERSION {
        return Ok(Migration::Newer(found));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > from as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(Migration::Ready)
}
