//! Where this device stands with each relay it uses.

use automerge::ChangeHash;
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// This device's position at one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayCursor {
    /// The relay's sequence number of the last bundle fetched from it.
    pub fetched: u64,
    /// Heads whose whole history the relay already holds for the couple's
    /// other devices (what this device posted, and what it fetched): the next
    /// bundle to post starts after them.
    pub has: Vec<ChangeHash>,
}

impl Store {
    /// This device's position at the relay `address` (the default for a
    /// relay it never used).
    pub fn relay_cursor(&self, address: &str) -> Result<RelayCursor, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT fetched, has_heads FROM relays WHERE address = ?1",
                [address],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((fetched, heads)) = row else {
            return Ok(RelayCursor::default());
        };
        if heads.len() % 32 != 0 {
            return Err(StoreError::Damaged {
                path: self.path.clone(),
                detail: "a relay position is malformed".into(),
            });
        }
        let has = heads
            .chunks_exact(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(ChangeHash))
            .collect();
        Ok(RelayCursor {
            fetched: u64::try_from(fetched).unwrap_or(0),
            has,
        })
    }

    /// Saves this device's position at the relay `address`.
    pub fn set_relay_cursor(&mut self, address: &str, cursor: &RelayCursor) -> Result<(), StoreError> {
        let heads: Vec<u8> = cursor.has.iter().flat_map(|h| h.0).collect();
        self.conn
            .execute(
                "INSERT INTO relays (address, fetched, has_heads) VALUES (?1, ?2, ?3)
                 ON CONFLICT (address) DO UPDATE SET fetched = excluded.fetched,
                     has_heads = excluded.has_heads",
                params![address, i64::try_from(cursor.fetched).unwrap_or(i64::MAX), heads],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
