//! The in-memory store: for tests, and for a relay run without a data folder
//! (everything is lost when it stops).

use std::collections::{BTreeMap, HashMap};

use duet_model::DeviceId;
use duet_sync::proto::relay::{MAX_FETCH_ITEMS, SignedAccess, SpaceTag};

use super::{Fetched, Registered, Registrant, RelayStore, StoreError, delivered_upto};

/// A bundle and what the relay knows of it.
#[derive(Debug)]
struct Kept {
    poster: DeviceId,
    posted_ms: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Space {
    access: SignedAccess,
    last_seq: u64,
    bundles: BTreeMap<u64, Kept>,
    acks: HashMap<DeviceId, u64>,
    registrant: Registrant,
}

/// A [`RelayStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryRelayStore {
    spaces: HashMap<SpaceTag, Space>,
    /// Bytes of bundles and access lists over all spaces.
    used: u64,
}

/// An access list's stored size, as the SQLite store counts it.
fn list_size(access: &SignedAccess) -> u64 {
    access.to_bytes().map_or(0, |b| b.len() as u64)
}

impl MemoryRelayStore {
    /// An empty store.
    pub fn new() -> MemoryRelayStore {
        MemoryRelayStore::default()
    }

    fn space(&mut self, space: &SpaceTag) -> Result<&mut Space, StoreError> {
        self.spaces.get_mut(space).ok_or(StoreError::UnknownSpace)
    }
}

impl Space {
    /// Deletes what has expired; returns how many bundles and their bytes.
    fn expire(&mut self, now_ms: u64, retention_ms: u64) -> (usize, u64) {
        let before = self.bundles.len();
        let mut bytes = 0u64;
        let cutoff = now_ms.checked_sub(retention_ms);
        let (listed, acks) = (&self.access.devices, &self.acks);
        self.bundles.retain(|seq, kept| {
            let old = cutoff.is_some_and(|c| kept.posted_ms <= c);
            let delivered = delivered_upto(listed, &kept.poster, |d| acks.get(d).copied().unwrap_or(0))
                .is_some_and(|upto| *seq <= upto);
            let gone = old || delivered;
            if gone {
                bytes += kept.bytes.len() as u64;
            }
            !gone
        });
        (before - self.bundles.len(), bytes)
    }
}

impl RelayStore for MemoryRelayStore {
    fn access(&mut self, space: &SpaceTag) -> Result<Option<SignedAccess>, StoreError> {
        Ok(self.spaces.get(space).map(|s| s.access.clone()))
    }

    fn set_access(
        &mut self,
        access: &SignedAccess,
        replaces: Option<u64>,
        by: &Registrant,
    ) -> Result<bool, StoreError> {
        let current = self.spaces.get(&access.space).map(|s| s.access.serial);
        if current != replaces {
            return Ok(false);
        }
        let size = list_size(access);
        match self.spaces.get_mut(&access.space) {
            Some(s) => {
                self.used = self
                    .used
                    .saturating_sub(list_size(&s.access))
                    .saturating_add(size);
                s.access = access.clone();
            }
            None => {
                self.used = self.used.saturating_add(size);
                self.spaces.insert(
                    access.space,
                    Space {
                        access: access.clone(),
                        last_seq: 0,
                        bundles: BTreeMap::new(),
                        acks: HashMap::new(),
                        registrant: *by,
                    },
                );
            }
        }
        Ok(true)
    }

    fn registered(&mut self, by: &Registrant) -> Result<Registered, StoreError> {
        let mut r = Registered::default();
        for s in self.spaces.values() {
            r.by_device += u64::from(s.registrant.device == by.device);
            r.from_source += u64::from(s.registrant.source == by.source);
        }
        Ok(r)
    }

    fn total_usage(&mut self) -> Result<u64, StoreError> {
        Ok(self.used)
    }

    fn append(
        &mut self,
        space: &SpaceTag,
        poster: &DeviceId,
        bundle: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let s = self.spaces.get_mut(space).ok_or(StoreError::UnknownSpace)?;
        let seq = s.last_seq.checked_add(1).ok_or(StoreError::Overflow)?;
        s.last_seq = seq;
        self.used = self.used.saturating_add(bundle.len() as u64);
        s.bundles.insert(
            seq,
            Kept {
                poster: *poster,
                posted_ms: now_ms,
                bytes: bundle.to_vec(),
            },
        );
        Ok(seq)
    }

    fn fetch(
        &mut self,
        space: &SpaceTag,
        after: u64,
        not_from: &DeviceId,
        max_bytes: usize,
    ) -> Result<Fetched, StoreError> {
        let Some(s) = self.spaces.get(space) else {
            return Ok(Fetched::default());
        };
        let mut out = Fetched::default();
        let Some(start) = after.checked_add(1) else {
            return Ok(out);
        };
        let mut total = 0usize;
        for (seq, kept) in s.bundles.range(start..).filter(|(_, k)| k.poster != *not_from) {
            let fits = total.saturating_add(kept.bytes.len()) <= max_bytes;
            if !out.items.is_empty() && (!fits || out.items.len() >= MAX_FETCH_ITEMS) {
                out.more = true;
                break;
            }
            total = total.saturating_add(kept.bytes.len());
            out.items.push((*seq, kept.bytes.clone()));
        }
        Ok(out)
    }

    fn ack(&mut self, space: &SpaceTag, device: &DeviceId, upto: u64) -> Result<(), StoreError> {
        let s = self.space(space)?;
        let upto = upto.min(s.last_seq);
        let a = s.acks.entry(*device).or_insert(0);
        *a = (*a).max(upto);
        Ok(())
    }

    fn usage(&mut self, space: &SpaceTag) -> Result<u64, StoreError> {
        Ok(self
            .spaces
            .get(space)
            .map(|s| s.bundles.values().map(|k| k.bytes.len() as u64).sum())
            .unwrap_or(0))
    }

    fn expire(
        &mut self,
        space: Option<&SpaceTag>,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<usize, StoreError> {
        let (count, bytes) = match space {
            Some(tag) => self
                .spaces
                .get_mut(tag)
                .map(|s| s.expire(now_ms, retention_ms))
                .unwrap_or((0, 0)),
            None => self
                .spaces
                .values_mut()
                .map(|s| s.expire(now_ms, retention_ms))
                .fold((0, 0), |(c, b), (c2, b2)| (c + c2, b + b2)),
        };
        self.used = self.used.saturating_sub(bytes);
        Ok(count)
    }
}
