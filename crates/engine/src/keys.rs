//! The space key: what seals bundles (files and the relay's mailbox) so that
//! only the couple's devices can read them.
//!
//! Keys travel only as envelopes sealed to one device's key, kept in the
//! shared document (`duet_model::keys`), so every sync distributes them and an
//! envelope is harmless wherever it goes. This module decides when keys are
//! made: the first at `init` (or, for a home made before keys existed, the
//! first time one is needed), a new generation at every revocation, and
//! envelopes for any active member that lacks one (a device added while
//! another device rotated the key).

use automerge::Automerge;
use crypto_box::aead::OsRng;
use duet_model::{DeviceId, DeviceSecret, Editor, Membership, ModelError, Seat};
use duet_sync::proto::keyring::{self, Keyring, SpaceKey};

use crate::error::Result;
use crate::home::{Home, now_ms};

/// Makes a key of the next generation with an envelope for every active
/// member (grown from `founder`, the founding device this home pinned), as
/// one change of `doc`.
pub(crate) fn add_key(
    doc: &mut Automerge,
    ring: &mut Keyring,
    seat: Seat,
    founder: DeviceId,
) -> Result<(), ModelError> {
    let key = SpaceKey::generate(ring.next_generation(), &mut OsRng);
    let active = Membership::pinned(&*doc, founder).active();
    let envelopes: Vec<(DeviceId, Vec<u8>)> = active
        .iter()
        .map(|d| (*d, key.envelope_for(d, &mut OsRng)))
        .collect();
    Editor::new(doc, seat, now_ms()).add_space_key(&key.id().to_string(), key.generation(), &envelopes)?;
    ring.insert(key);
    Ok(())
}

/// The first key of a new space, with an envelope for its founding device,
/// to record in the founding change.
pub(crate) fn first_key(founder: &DeviceId) -> duet_model::keys::KeyEntry {
    let key = SpaceKey::generate(1, &mut OsRng);
    duet_model::keys::KeyEntry {
        id: key.id().to_string(),
        generation: key.generation(),
        envelopes: vec![(*founder, key.envelope_for(founder, &mut OsRng))],
    }
}

/// Gives every active member (grown from the pinned `founder`) an envelope
/// for every key this device holds, making the first key if there is none.
/// Nothing is written for a device that is not an active member itself.
/// Returns whether `doc` changed.
pub(crate) fn ensure(
    doc: &mut Automerge,
    me: &DeviceSecret,
    seat: Seat,
    founder: DeviceId,
) -> Result<bool, ModelError> {
    let active = Membership::pinned(&*doc, founder).active();
    if !active.contains(&me.device_id()) {
        return Ok(false);
    }
    let mut ring = Keyring::from_document(doc, me);
    let mut changed = false;
    if ring.is_empty() {
        add_key(doc, &mut ring, seat, founder)?;
        changed = true;
    }
    for (id, envelopes) in keyring::missing_envelopes(doc, &ring, &active, &mut OsRng) {
        if !envelopes.is_empty() {
            Editor::new(doc, seat, now_ms()).add_envelopes(&id.to_string(), &envelopes)?;
            changed = true;
        }
    }
    Ok(changed)
}

impl Home {
    /// The space keys this device holds (opened from their envelopes).
    pub fn keyring(&mut self) -> Result<Keyring> {
        let me = self.store_mut().device_secret()?;
        self.read(|doc| Keyring::from_document(doc, &me))
    }

    /// Makes sure the space has a key and every active member holds each key
    /// this device holds, then returns this device's keys. Call before sealing.
    pub fn ensure_space_keys(&mut self) -> Result<Keyring> {
        let Some(founder) = self.pinned_founder()? else {
            // Still joining: no space to key yet.
            return self.keyring();
        };
        let me = self.store_mut().device_secret()?;
        let seat = self.seat();
        let changed = self
            .store_mut()
            .write(|doc| -> Result<bool> { Ok(ensure(doc, &me, seat, founder)?) })?;
        if changed {
            self.notify_changed();
        }
        self.keyring()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;

    fn home(dir: &std::path::Path) -> Home {
        Home::init(
            dir,
            &InitOptions {
                name: "Sam".into(),
                device_name: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_new_home_holds_one_key_and_ensuring_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = home(dir.path());
        let ring = h.keyring().unwrap();
        assert_eq!(ring.iter().count(), 1);
        assert_eq!(ring.sealing_key().map(|k| k.generation()), Some(1));
        let heads = h.read(|d| d.get_heads()).unwrap();
        let again = h.ensure_space_keys().unwrap();
        assert_eq!(
            again.sealing_key().map(|k| k.id()),
            ring.sealing_key().map(|k| k.id())
        );
        assert_eq!(h.read(|d| d.get_heads()).unwrap(), heads, "nothing to write");
    }
}
