//! The `bundle_open` target: a relay bundle opened and imported. Input: a mode
//! byte (`0` a sealed bundle file, `1` the plaintext inside the seal), then
//! the bytes.

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash, ReadDoc};
use duet_model::Attestation;
use duet_sync::proto::bundle::{self, BundleBody};
use duet_sync::proto::keyring::Keyring;

use super::fixtures::{FOUNDER, PARTNER, SPACE_ID, T0, device, home, secret, space_key};

/// The first byte picks what the rest is. `0`: a bundle file for the home,
/// opened by the partner's device holding [`space_key`]. `1`: the plaintext
/// inside a bundle's seal (which mutations of a whole file almost never get
/// past, the seal being authenticated). A body that decodes is imported into
/// [`home`] with nothing waiting. Properties: opening and decoding never
/// panic; an opened bundle names the home's space; importing either fails
/// (the document is then discarded, as the store does) or leaves no change
/// with missing dependencies in the document.
pub fn bundle_open(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        let mut ring = Keyring::default();
        ring.insert(space_key());
        let _ = bundle::header_space(data);
        let Ok(opened) = bundle::open(data, SPACE_ID, &ring, &secret(PARTNER)) else {
            return;
        };
        opened.body
    } else {
        // The plaintext inside the seal, signed as the partner's device
        // would sign it (a body naming another sender is refused as
        // unsigned).
        let plaintext = bundle::signed_plaintext(BUNDLE_AAD, data, &secret(PARTNER));
        let Ok(body) = bundle::decode_body(BUNDLE_AAD, &plaintext, SPACE_ID) else {
            return;
        };
        body
    };
    let opened = bundle::Opened {
        body,
        key: space_key(),
    };
    assert_eq!(opened.body.space_id, SPACE_ID);
    let mut doc = home();
    let mut waiting = HashMap::new();
    let mut verified = Vec::new();
    if bundle::import(
        &mut doc,
        &opened.body,
        device(FOUNDER),
        &mut waiting,
        &mut verified,
    )
    .is_ok()
    {
        assert!(doc.get_missing_deps(&[]).is_empty());
    }
}

/// The bytes before the ciphertext that the plaintext mode of
/// [`bundle_open`] signs its bodies under (any will do: the signature covers
/// them).
const BUNDLE_AAD: &[u8] = b"DUETBNDL\x02";

/// A bundle of `doc`'s changes after `after`, sealed with [`space_key`] by
/// `sender`, with envelopes for devices 1 and 2.
pub(crate) fn sealed_bundle(
    doc: &Automerge,
    after: &[ChangeHash],
    sender: u8,
    attestations: Vec<Attestation>,
) -> Vec<u8> {
    use rand_chacha::rand_core::SeedableRng;
    let body = BundleBody {
        space_id: SPACE_ID.into(),
        sender: device(sender),
        created_ms: T0 as u64,
        automerge: if after.is_empty() {
            doc.save()
        } else {
            doc.save_after(after)
        },
        attestations,
    };
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    bundle::seal(
        &body,
        &secret(sender),
        &space_key(),
        &[device(FOUNDER), device(PARTNER)],
        &mut rng,
    )
    .expect("seal")
}
