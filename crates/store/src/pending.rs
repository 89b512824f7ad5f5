//! Changes that arrived in a bundle (a file or the relay) but cannot be placed
//! yet: their dependencies, or a signature by their author that reaches them,
//! are still to come. A sync session keeps such changes in memory for its
//! lifetime; bundles arrive one at a time, maybe days apart and out of order,
//! so their waiting changes are kept here until a later bundle brings what they
//! need. They are not part of the document, never sent on, and dropped if they
//! no longer parse.

use automerge::Change;
use duet_model::Attestation;
use rusqlite::params;

use crate::changes::now_ms;
use crate::{Store, StoreError};

/// At most this many bytes of changes wait. Honest bundles that arrive out of
/// order need a fraction of it; the bound keeps a stream of orphans (from a
/// damaged or hostile bundle) from growing the store without end.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// What waits: changes and the verified attestations that came with them.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// The changes, as received.
    pub changes: Vec<Change>,
    /// Verified attestations kept for changes still to be placed.
    pub attestations: Vec<Attestation>,
}

impl Store {
    /// The changes and attestations waiting to be placed.
    pub fn pending(&self) -> Result<Pending, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM pending_changes ORDER BY received_at, hash")
            .map_err(|e| self.err(e))?;
        let raw = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        // They parsed when they arrived; automerge panics on some malformed
        // bytes, and a damaged row only loses a change a bundle can bring again.
        let changes = raw
            .into_iter()
            .filter_map(|bytes| {
                std::panic::catch_unwind(|| Change::try_from(bytes.as_slice()).ok())
                    .ok()
                    .flatten()
            })
            .collect();
        let attestations =
            self.attestations_in("SELECT device, hash, signature FROM pending_attestations")?;
        Ok(Pending {
            changes,
            attestations,
        })
    }

    /// Replaces what waits. Runs inside a write, with the changes it places.
    pub(crate) fn replace_pending(&self, pending: &Pending) -> Result<(), StoreError> {
        let bytes: usize = pending.changes.iter().map(|c| c.raw_bytes().len()).sum();
        if bytes > MAX_PENDING_BYTES {
            return Err(StoreError::TooMuchWaiting { bytes });
        }
        let now = now_ms();
        self.conn
            .execute_batch("DELETE FROM pending_changes; DELETE FROM pending_attestations;")
            .map_err(|e| self.err(e))?;
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO pending_changes (hash, bytes, received_at) VALUES (?1, ?2, ?3)",
            )
            .map_err(|e| self.err(e))?;
        for change in &pending.changes {
            insert
                .execute(params![change.hash().0.as_slice(), change.raw_bytes(), now])
                .map_err(|e| self.err(e))?;
        }
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO pending_attestations (device, hash, signature) VALUES (?1, ?2, ?3)",
            )
            .map_err(|e| self.err(e))?;
        for a in &pending.attestations {
            insert
                .execute(params![
                    a.device.as_bytes().as_slice(),
                    a.hash.0.as_slice(),
                    a.signature.as_slice()
                ])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
