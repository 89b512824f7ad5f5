//! What this device keeps about other devices: where to reach them, the
//! automerge sync state of each (so a reconnect sends only what is new), and the
//! newest attestation of every device's changes.

use automerge::ChangeHash;
use duet_model::{Attestation, DeviceId};
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// A device this one dials, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The device.
    pub device: DeviceId,
    /// Its last known address (`host:port`).
    pub address: String,
}

impl Store {
    /// Records an attestation for change `seq` of its device, if newer than the
    /// one kept. Runs inside a write.
    pub(crate) fn put_attestation(&self, a: &Attestation, seq: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO attestations (device, hash, seq, signature) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device) DO UPDATE SET hash = excluded.hash, seq = excluded.seq,
                     signature = excluded.signature
                 WHERE excluded.seq > attestations.seq",
                params![
                    a.device.as_bytes().as_slice(),
                    a.hash.0.as_slice(),
                    seq as i64,
                    a.signature.as_slice()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest attestation of every device whose changes this home holds.
    pub fn attestations(&self) -> Result<Vec<Attestation>, StoreError> {
        self.attestations_in("SELECT device, hash, signature FROM attestations")
    }

    /// The attestations a query selects (as `device, hash, signature`).
    pub(crate) fn attestations_in(&self, sql: &str) -> Result<Vec<Attestation>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (device, hash, sig) = row.map_err(|e| self.err(e))?;
            out.push(attestation_from_row(&self.path, &device, &hash, &sig)?);
        }
        Ok(out)
    }

    /// The saved automerge sync state for `peer`.
    pub fn sync_state(&self, peer: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT state FROM sync_states WHERE device = ?1",
                [peer.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Saves the automerge sync state for `peer`.
    pub fn set_sync_state(&mut self, peer: &DeviceId, state: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sync_states (device, state) VALUES (?1, ?2)
                 ON CONFLICT (device) DO UPDATE SET state = excluded.state",
                params![peer.as_bytes().as_slice(), state],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remembers where `device` can be reached.
    pub fn set_peer_address(&mut self, device: &DeviceId, address: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO peers (device, address) VALUES (?1, ?2)
                 ON CONFLICT (device) DO UPDATE SET address = excluded.address",
                params![device.as_bytes().as_slice(), address],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every device this home knows an address for.
    pub fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT device, address FROM peers ORDER BY address")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (device, address) = row.map_err(|e| self.err(e))?;
            if let Some(device) = DeviceId::from_bytes(&device) {
                out.push(Peer { device, address });
            }
        }
        Ok(out)
    }
}

/// An attestation from its stored columns.
pub(crate) fn attestation_from_row(
    path: &std::path::Path,
    device: &[u8],
    hash: &[u8],
    signature: &[u8],
) -> Result<Attestation, StoreError> {
    match (
        DeviceId::from_bytes(device),
        <[u8; 32]>::try_from(hash),
        <[u8; 64]>::try_from(signature),
    ) {
        (Some(device), Ok(hash), Ok(signature)) => Ok(Attestation {
            device,
            hash: ChangeHash(hash),
            signature,
        }),
        _ => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: "a stored attestation is malformed".into(),
        }),
    }
}
