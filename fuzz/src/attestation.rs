//! The `attestation` target: `Attestation::verify` on arbitrary bytes. Input:
//! device key (32), change hash (32), signature (64), then the bytes of an
//! automerge sync message.

use automerge::ChangeHash;
use duet_model::{Attestation, DeviceId};
use duet_sync::proto::verify;
use duet_sync::proto::wire::{Message, SyncMessage};

use super::fixtures::{Input, own_frame};

/// `Attestation::verify` on arbitrary bytes.
///
/// Input: device key (32), change hash (32), signature (64), then the bytes
/// of an automerge sync message. Checks: `verify` agrees with
/// `check_signatures`; a valid signature stops verifying when the hash
/// changes; the attestation survives the wire round trip; the key's text
/// forms round-trip.
pub fn attestation(data: &[u8]) {
    let mut input = Input(data);
    let (Some(key), Some(hash), Some(signature)) =
        (input.array::<32>(), input.array::<32>(), input.array::<64>())
    else {
        return;
    };
    let Some(device) = DeviceId::from_bytes(&key) else {
        return;
    };
    assert_eq!(device.to_string().parse::<DeviceId>().ok(), Some(device));
    assert_eq!(DeviceId::from_actor(&device.actor()), Some(device));
    let _ = (device.fingerprint(), device.short(), format!("{device:?}"));
    let a = Attestation {
        device,
        hash: ChangeHash(hash),
        signature,
    };
    let ok = a.verify();
    assert_eq!(verify::check_signatures(&[a]).is_ok(), ok);
    if ok {
        let mut other = a;
        other.hash.0[0] ^= 1;
        assert!(!other.verify(), "a signature verified for another hash");
    }
    let m = Message::Sync(SyncMessage {
        message: input.rest().to_vec(),
        attestations: vec![a],
    });
    let bytes = m.encode().expect("a sync message encodes");
    assert_eq!(Message::decode(&own_frame(&bytes)), Ok(m));
}
