//! The in-memory store: for tests, and for a relay run without a data folder
//! (everything is lost when it stops).

use std::collections::{BTreeMap, HashMap};

use duet_model::DeviceId;
use duet_sync::proto::relay::{MAX_FETCH_ITEMS, SignedAccess, SpaceTag};

use super::{Fetched, RelayStore, StoreError, delivered_upto};

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
}

/// A [`RelayStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryRelayStore {
    spaces: HashMap<SpaceTag, Space>,
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
    fn expire(&mut self, now_ms: u64, retention_ms: u64) -> usize {
        let before = self.bundles.len();
        let cutoff = now_ms.checked_sub(retention_ms);
        let (listed, acks) = (&self.access.devices, &self.acks);
        self.bundles.retain(|seq, kept| {
            let old = cutoff.is_some_and(|c| kept.posted_ms <= c);
            let delivered = delivered_upto(listed, &kept.poster, |d| acks.get(d).copied().unwrap_or(0))
                .is_some_and(|upto| *seq <= upto);
            !(old || delivered)
        });
        before - self.bundles.len()
    }
}

impl RelayStore for MemoryRelayStore {
    fn access(&mut self, space: &SpaceTag) -> Result<Option<SignedAccess>, StoreError> {
        Ok(self.spaces.get(space).map(|s| s.access.clone()))
    }

    fn set_access(&mut self, access: &SignedAccess, replaces: Option<u64>) -> Result<bool, StoreError> {
        let current = self.spaces.get(&access.space).map(|s| s.access.serial);
        if current != replaces {
            return Ok(false);
        }
        match self.spaces.get_mut(&access.space) {
            Some(s) => s.access = access.clone(),
            None => {
                self.spaces.insert(
                    access.space,
                    Space {
                        access: access.clone(),
                        last_seq: 0,
                        bundles: BTreeMap::new(),
                        acks: HashMap::new(),
                    },
                );
            }
        }
        Ok(true)
    }

    fn append(
        &mut self,
        space: &SpaceTag,
        poster: &DeviceId,
        bundle: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let s = self.space(space)?;
        let seq = s.last_seq.checked_add(1).ok_or(StoreError::Overflow)?;
        s.last_seq = seq;
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
        Ok(match space {
            Some(tag) => self
                .spaces
                .get_mut(tag)
                .map(|s| s.expire(now_ms, retention_ms))
                .unwrap_or(0),
            None => self
                .spaces
                .values_mut()
                .map(|s| s.expire(now_ms, retention_ms))
                .sum(),
        })
    }
}
