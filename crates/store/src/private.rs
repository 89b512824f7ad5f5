//! Private data: the journal and personal values such as a review date. These
//! live only in this device's store; nothing here is ever written into the shared
//! document or sent to another device.

use crate::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

/// A journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its number on this device.
    pub id: i64,
    /// When it was written, in milliseconds since the epoch.
    pub written_at: i64,
    /// What it says.
    pub text: String,
}

impl Store {
    /// Adds a journal entry; returns its number.
    pub fn journal_add(&mut self, text: &str, now_ms: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO journal (written_at, text) VALUES (?1, ?2)",
                params![now_ms, text],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Every journal entry, oldest first.
    pub fn journal(&self) -> Result<Vec<JournalEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, written_at, text FROM journal ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(JournalEntry {
                    id: r.get(0)?,
                    written_at: r.get(1)?,
                    text: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Deletes journal entry `id`, its text overwritten on disk; returns
    /// whether there was one.
    pub fn journal_remove(&mut self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM journal WHERE id = ?1", [id])
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.scrub()?;
        }
        Ok(n > 0)
    }

    /// Removes the old copies of deleted private rows from the write-ahead log.
    ///
    /// `secure_delete` (set on every connection) zeroes a deleted row in the
    /// page that held it, but the WAL still holds the page as it was written
    /// before, until the log is rewritten from its start. A checkpoint that
    /// truncates the log ends those copies once every page is in the
    /// database file (where the deletion zeroed it). A reader in another
    /// process can hold the checkpoint back: then the copies stay until the
    /// next checkpoint, which SQLite runs on its own as the log grows.
    fn scrub(&self) -> Result<(), StoreError> {
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        if busy != 0 {
            tracing::debug!("another reader held back the checkpoint that removes deleted private rows");
        }
        Ok(())
    }

    /// A private value (such as `review_date`).
    pub fn private_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM private WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sets a private value, or clears it with `None`; the old value is
    /// overwritten on disk.
    pub fn private_set(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO private (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, v],
            ),
            None => self.conn.execute("DELETE FROM private WHERE key = ?1", [key]),
        }
        .map_err(|e| self.err(e))?;
        // A replaced value is as private as a deleted one.
        self.scrub()
    }
}
